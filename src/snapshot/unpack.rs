//! The streaming unpacker: byte chunks → SHA-256 → decompression (detected) → tar → staging.
//!
//! Nothing is trusted: the manifest must come first and is validated before any file is
//! written; every later entry must be a regular file the manifest lists, once, with the
//! listed size; paths come only from the manifest's allowlist, so nothing can land outside
//! the staging directory; the CRC trailer must match; nothing may follow it. The caller
//! verifies the whole-stream SHA-256 before anything is installed.

use std::collections::{HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio_tar::Archive;
use tokio_util::io::StreamReader;

use super::codec;
use super::format::{self, Manifest, ManifestFile, SnapshotKind};
use crate::collection::loader::{Preloaded, StreamLoader};
use crate::collection::CONFIG_FILE;
use crate::error::{Error, Result};
use crate::io::bulk_file::{BulkFile, Reservation};
use crate::io::progress::Progress;
use crate::repository::hashing::HashingStream;

/// Bytes tolerated after the end of the archive (tar padding to a record boundary).
const MAX_TRAILING: u64 = 1 << 20;

/// The result of a successful unpack.
#[derive(Debug)]
pub struct Unpacked {
    /// What the archive held.
    pub contents: Contents,
    /// Hex SHA-256 of the whole input stream.
    pub sha256: String,
    /// Bytes of the input stream.
    pub size: u64,
}

/// An archive's contents, by format.
#[derive(Debug)]
pub enum Contents {
    /// Our format: the validated manifest, and each collection's points, loaded while its
    /// segments streamed past.
    Ours(Manifest, Vec<(String, Preloaded)>),
    /// A collection snapshot written by Qdrant, staged for conversion.
    Qdrant(super::qdrant::Staged),
    /// A full-storage snapshot written by Qdrant, staged for conversion.
    QdrantFull(super::qdrant::StagedFull),
}

fn bad(msg: impl Into<String>) -> Error {
    Error::bad_input(format!("invalid snapshot: {}", msg.into()))
}

fn read_err(e: io::Error) -> Error {
    // The tar reader's message is not passed on: it can quote file contents.
    let what = match e.kind() {
        io::ErrorKind::UnexpectedEof => "the archive ends early: truncated download or upload",
        io::ErrorKind::InvalidData | io::ErrorKind::Other => {
            "not a tar archive, or a corrupted one (a snapshot is a tar, optionally gzip or zstd)"
        }
        _ => "the archive could not be read",
    };
    Error::bad_input(format!("invalid snapshot: {what}"))
}

fn write_err(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |e| {
        Error::internal(
            format!("failed to write `{}` while unpacking", path.display()),
            e,
        )
    }
}

async fn read_small<R: AsyncRead + Unpin>(mut r: R, size: u64, what: &str) -> Result<Vec<u8>> {
    if size > format::MAX_META_SIZE {
        return Err(bad(format!("{what} is {size} bytes, more than the limit")));
    }
    let mut buf = Vec::with_capacity(size as usize);
    (&mut r)
        .take(size)
        .read_to_end(&mut buf)
        .await
        .map_err(read_err)?;
    if buf.len() as u64 != size {
        return Err(bad(format!("{what} is truncated")));
    }
    Ok(buf)
}

async fn drain<R: AsyncRead + Unpin>(r: R, what: &str) -> Result<()> {
    let n = tokio::io::copy(&mut r.take(MAX_TRAILING + 1), &mut tokio::io::sink())
        .await
        .map_err(read_err)?;
    if n > MAX_TRAILING {
        return Err(bad(format!("unexpected data after the end of the {what}")));
    }
    Ok(())
}

/// Unpacks `source` into `staging` (which must exist and be empty).
///
/// # Errors
/// `BadInput` for anything wrong with the archive; `Internal` for local write failures.
/// On error, `staging` may hold partial files: the caller removes it.
pub async fn unpack<S>(
    source: S,
    staging: &Path,
    expected: Option<SnapshotKind>,
    progress: Option<Progress>,
) -> Result<Unpacked>
where
    S: Stream<Item = io::Result<Bytes>> + Unpin + Send,
{
    let mut hashed = HashingStream::new(source, progress);
    // Enough leading bytes to tell the compression, whatever the source's chunking.
    let mut head = BytesMut::new();
    while head.len() < codec::MAGIC_LEN {
        match hashed.next().await {
            Some(chunk) => head.extend_from_slice(&chunk.map_err(read_err)?),
            None => break,
        }
    }
    if head.is_empty() {
        return Err(bad("the snapshot is empty"));
    }
    let compression = codec::detect(&head);
    let contents = {
        // Reads borrow the chunks in place: no buffer between the source and the archive.
        let first = futures::stream::iter([Ok(head.freeze())]);
        let mut raw = StreamReader::new(first.chain(&mut hashed));
        let unpacked = {
            let decoded = codec::decoder(&mut raw, compression);
            let mut archive = Archive::new(decoded);
            let unpacked = unpack_entries(&mut archive, staging, expected).await?;
            let decoded = archive
                .into_inner()
                .map_err(|_| Error::internal("archive still borrowed", io::Error::other("busy")))?;
            drain(decoded, "archive").await?;
            unpacked
        };
        drain(&mut raw, "compressed stream").await?;
        unpacked
    };
    let (sha256, size) = hashed
        .finish()
        .await
        .map_err(|e| Error::internal("hashing failed", e))?;
    Ok(Unpacked {
        contents,
        sha256,
        size,
    })
}

async fn unpack_entries<R: AsyncRead + Unpin + Send>(
    archive: &mut Archive<R>,
    staging: &Path,
    expected: Option<SnapshotKind>,
) -> Result<Contents> {
    let mut entries = archive.entries().map_err(read_err)?;
    let mut first = entries
        .next()
        .await
        .ok_or_else(|| bad("the archive has no entries"))?
        .map_err(read_err)?;
    let first_path = first.path_bytes().map_err(read_err)?.into_owned();
    if first_path != format::MANIFEST.as_bytes() {
        // Qdrant's own snapshots are told apart by their layout, not their name.
        use super::qdrant::{extract, extract_full, looks_like, looks_like_full};
        let path = std::str::from_utf8(&first_path).unwrap_or_default();
        let full = expected == Some(SnapshotKind::Full);
        // `config.json` starts both kinds: the kind asked for decides.
        let (ours, other) = if full {
            (looks_like_full(path), looks_like(path))
        } else {
            (looks_like(path), looks_like_full(path))
        };
        if ours && full {
            let staged = extract_full(first, &mut entries, staging).await?;
            return Ok(Contents::QdrantFull(staged));
        }
        if ours {
            let staged = extract(first, &mut entries, staging).await?;
            return Ok(Contents::Qdrant(staged));
        }
        return Err(bad(match (other, full) {
            (true, true) => {
                "this is a Qdrant collection snapshot; recover it into a collection".to_string()
            }
            (true, false) => {
                "this is a Qdrant full-storage snapshot; recover it with --storage-snapshot"
                    .to_string()
            }
            _ => format!("the first entry must be {}", format::MANIFEST),
        }));
    }
    if !first.header().entry_type().is_file() {
        return Err(bad(format!("the first entry must be {}", format::MANIFEST)));
    }
    let size = first.effective_size();
    let raw = read_small(&mut first, size, format::MANIFEST).await?;
    let manifest: Manifest = serde_json::from_slice(&raw)
        .map_err(|e| bad(format!("{} is not valid: {e}", format::MANIFEST)))?;
    manifest.validate(expected)?;

    // Entries must come in exactly the manifest's order: config first, then segments in
    // WAL order, so each collection's points load as its bytes stream past.
    let order: Vec<(usize, &ManifestFile, bool)> = manifest
        .collections
        .iter()
        .enumerate()
        .flat_map(|(ci, c)| {
            c.files
                .iter()
                .map(move |f| (ci, f, f.path == format::join(&c.dir, CONFIG_FILE)))
        })
        .collect();
    let listed: HashSet<&str> = order.iter().map(|(_, f, _)| f.path.as_str()).collect();
    let mut loaders: Vec<Option<StreamLoader>> =
        manifest.collections.iter().map(|_| None).collect();
    let mut crcs: HashMap<String, u32> = HashMap::new();
    let mut created_dirs: HashSet<PathBuf> = HashSet::new();
    let mut next = 0;
    loop {
        let mut entry = match entries.next().await {
            None => {
                return Err(bad(format!(
                    "the archive is truncated: {} is missing",
                    format::CHECKSUMS
                )))
            }
            Some(e) => e.map_err(read_err)?,
        };
        let kind = entry.header().entry_type();
        let size = entry.effective_size();
        let path_bytes = entry.path_bytes().map_err(read_err)?.into_owned();
        let path = String::from_utf8(path_bytes).map_err(|_| bad("an entry path is not UTF-8"))?;
        if !kind.is_file() {
            return Err(bad(format!(
                "entry `{path}` is a {kind:?}; only regular files are allowed"
            )));
        }
        if path == format::CHECKSUMS {
            if next != order.len() {
                return Err(bad(
                    "the archive does not hold every file its manifest lists",
                ));
            }
            let text = read_small(&mut entry, size, format::CHECKSUMS).await?;
            let text = String::from_utf8(text).map_err(|_| bad("snapshot.crc32 is not UTF-8"))?;
            let claimed = format::parse_checksums(&text)?;
            if claimed.len() != crcs.len() {
                return Err(bad(
                    "snapshot.crc32 does not list exactly the archive's files",
                ));
            }
            for (path, crc) in &crcs {
                if claimed.get(path) != Some(crc) {
                    return Err(bad(format!("`{path}` is corrupted (CRC-32 mismatch)")));
                }
            }
            break;
        }
        let Some(&(ci, file, is_config)) = order.get(next).filter(|(_, f, _)| f.path == path)
        else {
            return Err(bad(if crcs.contains_key(&path) {
                format!("entry `{path}` appears twice")
            } else if listed.contains(path.as_str()) {
                format!("entry `{path}` is out of the manifest's order")
            } else {
                format!("entry `{path}` is not listed in the manifest")
            }));
        };
        next += 1;
        if size != file.size {
            return Err(bad(format!(
                "entry `{path}` is {size} bytes but the manifest says {}",
                file.size
            )));
        }
        // The manifest allowlist guarantees `path` is relative with only normal segments.
        let dest = staging.join(&path);
        if let Some(parent) = dest.parent() {
            if created_dirs.insert(parent.to_path_buf()) {
                tokio::fs::create_dir_all(parent)
                    .await
                    .map_err(write_err(parent))?;
            }
        }
        let name = &manifest.collections[ci].name;
        let crc = if is_config {
            if size > format::MAX_META_SIZE {
                return Err(bad(format!(
                    "`{path}` is {size} bytes, more than the limit"
                )));
            }
            let mut config = Vec::with_capacity(size as usize);
            let crc = copy_entry(&mut entry, &dest, size, &mut |b: &[u8]| {
                config.extend_from_slice(b);
                Ok(())
            })
            .await?;
            let data_bytes: u64 = manifest.collections[ci]
                .files
                .iter()
                .skip(1)
                .map(|f| f.size)
                .sum();
            let loader = StreamLoader::new(&config, data_bytes)
                .map_err(|e| bad(format!("collection `{name}`: {e}")))?;
            loaders[ci] = Some(loader);
            crc
        } else {
            let loader = loaders[ci]
                .as_mut()
                .ok_or_else(|| bad("a segment comes before its config.json"))?;
            loader.begin_file();
            let crc = copy_entry(&mut entry, &dest, size, &mut |b: &[u8]| loader.feed(b)).await;
            let crc = crc.map_err(|e| match e {
                Error::BadInput(m) => Error::BadInput(format!("{m} (collection `{name}`)")),
                other => other,
            })?;
            loader
                .end_file()
                .map_err(|e| bad(format!("`{path}`: {e}")))?;
            crc
        };
        crcs.insert(path, crc);
    }
    if let Some(extra) = entries.next().await {
        let what = extra.ok().and_then(|e| {
            e.path_bytes()
                .ok()
                .map(|p| String::from_utf8_lossy(&p).into_owned())
        });
        return Err(bad(format!(
            "unexpected entry after {}: {}",
            format::CHECKSUMS,
            what.unwrap_or_default()
        )));
    }
    let loaded = manifest
        .collections
        .iter()
        .zip(loaders)
        .filter_map(|(c, l)| Some((c.name.clone(), l?.finish())))
        .collect();
    Ok(Contents::Ours(manifest, loaded))
}

/// Copies exactly `size` bytes of an entry into `dest` (fsynced), passing each chunk to
/// `feed`; returns the CRC-32.
async fn copy_entry<R: AsyncRead + Unpin>(
    entry: &mut R,
    dest: &Path,
    size: u64,
    feed: &mut (dyn FnMut(&[u8]) -> std::result::Result<(), String> + Send),
) -> Result<u32> {
    // `size` comes from the archive, not yet verified: reserved only ahead of the bytes.
    let mut out = BulkFile::create(dest, Reservation::Ahead(size))
        .await
        .map_err(write_err(dest))?;
    let mut crc = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = entry.read(&mut buf[..want]).await.map_err(read_err)?;
        if n == 0 {
            return Err(bad("the archive is truncated inside a file"));
        }
        crc.update(&buf[..n]);
        feed(&buf[..n]).map_err(bad)?;
        out.write_all(&buf[..n]).await.map_err(write_err(dest))?;
        left -= n as u64;
    }
    out.finish().await.map_err(write_err(dest))?;
    Ok(crc.finalize())
}
