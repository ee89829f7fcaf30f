//! The streaming unpacker: byte chunks → SHA-256 → decompression (detected) → tar → staging.
//!
//! Nothing is trusted: the manifest (version 2: the opening) must come first and is
//! validated before any file is written; every later entry must be a regular file the
//! manifest lists, once, with the listed size (version 2: a file the same rules allow, in
//! order, and the manifest after the files must list exactly those); paths come only from
//! the allowlist, so nothing can land outside the staging directory; the CRC trailer must
//! match; nothing may follow it. The caller verifies the whole-stream SHA-256 before
//! anything is installed.

use std::collections::{HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio_tar::{Archive, Entries, Entry};
use tokio_util::io::StreamReader;

use super::codec;
use super::format::{self, FileOrder, Manifest, ManifestFile, Opening, SnapshotKind};
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
    // Bytes that storage could not give back are a storage fault, not a bad archive.
    if let Some(d) = crate::repository::damage::find(&e) {
        return d.to_error();
    }
    if crate::backend::diagnosis::find(&e).is_some() {
        return crate::backend::diagnosis::storage_error("failed to read the snapshot", e);
    }
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
        let path = std::str::from_utf8(&first_path)
            .unwrap_or_default()
            .to_string();
        return unpack_qdrant(&path, first, &mut entries, staging, expected).await;
    }
    let (manifest, open) = read_manifest(&mut first, expected).await?;
    let mut files = Files::new(manifest, open, staging, expected);
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
            files.check_trailer(&mut entry, size).await?;
            break;
        }
        if path == format::CONTENTS {
            files.check_contents(&mut entry, size).await?;
            continue;
        }
        files.unpack_file(&mut entry, path, size).await?;
    }
    reject_more(&mut entries).await?;
    let (manifest, loaded) = files.finish();
    Ok(Contents::Ours(manifest, loaded))
}

/// Stages a snapshot Qdrant wrote, told apart from ours by its layout, not its name: its
/// first entry is `first_path`.
async fn unpack_qdrant<R: AsyncRead + Unpin + Send>(
    first_path: &str,
    first: Entry<Archive<R>>,
    entries: &mut Entries<R>,
    staging: &Path,
    expected: Option<SnapshotKind>,
) -> Result<Contents> {
    use super::qdrant::{extract, extract_full, looks_like, looks_like_full};
    let full = expected == Some(SnapshotKind::Full);
    // `config.json` starts both kinds: the kind asked for decides.
    let (asked, other) = if full {
        (looks_like_full(first_path), looks_like(first_path))
    } else {
        (looks_like(first_path), looks_like_full(first_path))
    };
    match (asked, other, full) {
        (true, _, true) => Ok(Contents::QdrantFull(
            extract_full(first, entries, staging).await?,
        )),
        (true, _, false) => Ok(Contents::Qdrant(extract(first, entries, staging).await?)),
        (false, true, true) => Err(bad(
            "this is a Qdrant collection snapshot; recover it into a collection",
        )),
        (false, true, false) => Err(bad(
            "this is a Qdrant full-storage snapshot; recover it with --storage-snapshot",
        )),
        (false, false, _) => Err(bad(format!("the first entry must be {}", format::MANIFEST))),
    }
}

/// Reads and validates our first entry: a version 1 manifest, or a version 2 [`Opening`]
/// (then the manifest returned lists each collection with no files yet, and `true`).
async fn read_manifest<R: AsyncRead + Unpin + Send>(
    first: &mut Entry<Archive<R>>,
    expected: Option<SnapshotKind>,
) -> Result<(Manifest, bool)> {
    #[derive(serde::Deserialize)]
    struct Version {
        format_version: u32,
    }
    if !first.header().entry_type().is_file() {
        return Err(bad(format!("the first entry must be {}", format::MANIFEST)));
    }
    let size = first.effective_size();
    let raw = read_small(first, size, format::MANIFEST).await?;
    let invalid = |e: serde_json::Error| bad(format!("{} is not valid: {e}", format::MANIFEST));
    let version: Version = serde_json::from_slice(&raw).map_err(invalid)?;
    if version.format_version == format::LISTED_LAST_VERSION {
        let opening: Opening = serde_json::from_slice(&raw).map_err(invalid)?;
        return Ok((opening.validate(expected)?, true));
    }
    // Any other version than 1 is refused by `validate` (2 was taken above).
    let manifest: Manifest = serde_json::from_slice(&raw).map_err(invalid)?;
    manifest.validate(expected)?;
    Ok((manifest, false))
}

/// Fails if anything follows the CRC trailer.
async fn reject_more<R: AsyncRead + Unpin + Send>(entries: &mut Entries<R>) -> Result<()> {
    let Some(extra) = entries.next().await else {
        return Ok(());
    };
    let what = extra.ok().and_then(|e| {
        e.path_bytes()
            .ok()
            .map(|p| String::from_utf8_lossy(&p).into_owned())
    });
    Err(bad(format!(
        "unexpected entry after {}: {}",
        format::CHECKSUMS,
        what.unwrap_or_default()
    )))
}

/// One file as it is being staged.
#[derive(Clone, Copy)]
struct Staged<'a> {
    /// Where it is staged.
    dest: &'a Path,
    /// Its path in the archive.
    path: &'a str,
    /// The index of its collection in the manifest.
    ci: usize,
    /// Its size.
    size: u64,
}

/// A version 2 archive's files, checked as they come: the manifest follows them.
#[derive(Debug, Default)]
struct Open {
    /// The collection whose files are streaming.
    current: Option<usize>,
    /// Where its files stand.
    order: FileOrder,
    /// Files and bytes so far, within the limits.
    count: usize,
    total: u64,
    /// The manifest after the files has been read and matched.
    listed: bool,
    /// What the archive expects to be (checked again on the manifest).
    expected: Option<SnapshotKind>,
}

/// The files of our archive as they stream past. Version 1: checked against the manifest,
/// in exactly its order (config first, then segments in WAL order, so each collection's
/// points load as its bytes stream past), each with its listed size. Version 2: each
/// checked by the same rules as it comes and gathered, then matched against the manifest
/// that follows them. Each CRC is kept for the trailer.
struct Files<'s> {
    /// Version 1: the manifest read first. Version 2: the files gathered so far.
    manifest: Manifest,
    open: Option<Open>,
    staging: &'s Path,
    /// Version 1: `(collection, file)` indices in archive order, and the next one.
    order: Vec<(usize, usize)>,
    next: usize,
    loaders: Vec<Option<StreamLoader>>,
    crcs: HashMap<String, u32>,
    created_dirs: HashSet<PathBuf>,
}

impl<'s> Files<'s> {
    fn new(
        manifest: Manifest,
        open: bool,
        staging: &'s Path,
        expected: Option<SnapshotKind>,
    ) -> Self {
        let order = manifest
            .collections
            .iter()
            .enumerate()
            .flat_map(|(ci, c)| (0..c.files.len()).map(move |fi| (ci, fi)))
            .collect();
        Files {
            loaders: manifest.collections.iter().map(|_| None).collect(),
            open: open.then(|| Open {
                expected,
                ..Open::default()
            }),
            order,
            manifest,
            staging,
            next: 0,
            crcs: HashMap::new(),
            created_dirs: HashSet::new(),
        }
    }

    /// The collection `path` belongs to and whether it is its `config.json`: the
    /// manifest's next file (version 1), or the next file the rules allow (version 2).
    fn expect(&mut self, path: &str, size: u64) -> Result<(usize, bool)> {
        if self.open.is_some() {
            return self.expect_open(path, size);
        }
        let listed = self
            .order
            .get(self.next)
            .map(|&(ci, fi)| (ci, &self.manifest.collections[ci].files[fi]))
            .filter(|(_, f)| f.path == path);
        let Some((ci, file)) = listed else {
            return Err(bad(if self.crcs.contains_key(path) {
                format!("entry `{path}` appears twice")
            } else if self.manifest.files().any(|f| f.path == path) {
                format!("entry `{path}` is out of the manifest's order")
            } else {
                format!("entry `{path}` is not listed in the manifest")
            }));
        };
        if size != file.size {
            return Err(bad(format!(
                "entry `{path}` is {size} bytes but the manifest says {}",
                file.size
            )));
        }
        let is_config = self.order[self.next].1 == 0;
        self.next += 1;
        Ok((ci, is_config))
    }

    /// Version 2: `path` must be the current collection's next file or the next
    /// collection's `config.json`, within the limits; it is gathered into the manifest.
    fn expect_open(&mut self, path: &str, size: u64) -> Result<(usize, bool)> {
        let Some(open) = self.open.as_mut() else {
            return Err(bad("not a version 2 archive"));
        };
        if open.listed {
            return Err(bad(format!("entry `{path}` follows {}", format::CONTENTS)));
        }
        let next = open.current.map_or(0, |c| c + 1);
        let starts_next = self
            .manifest
            .collections
            .get(next)
            .is_some_and(|c| path == format::join(&c.dir, CONFIG_FILE));
        if starts_next {
            open.current = Some(next);
            open.order = FileOrder::default();
        }
        let ci = open
            .current
            .ok_or_else(|| bad(format!("entry `{path}` comes before any config.json")))?;
        let c = &mut self.manifest.collections[ci];
        open.order.next(&c.dir, path, size)?;
        open.count += 1;
        open.total = open.total.saturating_add(size);
        if open.count > format::MAX_FILES || open.total > format::MAX_TOTAL_SIZE {
            return Err(bad("the archive holds more than the limits allow"));
        }
        c.files.push(ManifestFile {
            path: path.to_string(),
            size,
        });
        Ok((ci, starts_next))
    }

    /// Version 2: the manifest after the files must list exactly the files that came.
    async fn check_contents<E: AsyncRead + Unpin>(
        &mut self,
        entry: &mut E,
        size: u64,
    ) -> Result<()> {
        let Some(open) = self.open.as_mut().filter(|o| !o.listed) else {
            return Err(bad(format!("unexpected entry `{}`", format::CONTENTS)));
        };
        let raw = read_small(entry, size, format::CONTENTS).await?;
        let listed: Manifest = serde_json::from_slice(&raw)
            .map_err(|e| bad(format!("{} is not valid: {e}", format::CONTENTS)))?;
        if listed.format_version != format::LISTED_LAST_VERSION {
            return Err(bad(format!(
                "{} is not a version 2 manifest",
                format::CONTENTS
            )));
        }
        listed.validate(open.expected)?;
        if listed.kind != self.manifest.kind || listed.collections != self.manifest.collections {
            return Err(bad(format!(
                "{} does not list exactly the archive's files",
                format::CONTENTS
            )));
        }
        open.listed = true;
        self.manifest = listed;
        Ok(())
    }

    /// Writes the next file, `path` of `size` bytes, into staging, loading its points.
    async fn unpack_file<E: AsyncRead + Unpin>(
        &mut self,
        entry: &mut E,
        path: String,
        size: u64,
    ) -> Result<()> {
        let (ci, is_config) = self.expect(&path, size)?;
        // The allowlist guarantees `path` is relative with only normal segments.
        let dest = self.staging.join(&path);
        if let Some(parent) = dest.parent() {
            if self.created_dirs.insert(parent.to_path_buf()) {
                tokio::fs::create_dir_all(parent)
                    .await
                    .map_err(write_err(parent))?;
            }
        }
        let file = Staged {
            dest: &dest,
            path: &path,
            ci,
            size,
        };
        let crc = if is_config {
            self.unpack_config(entry, file).await?
        } else {
            self.unpack_segment(entry, file).await?
        };
        self.crcs.insert(path, crc);
        Ok(())
    }

    /// A collection's `config.json`: staged, and the start of its points' loader.
    async fn unpack_config<E: AsyncRead + Unpin>(
        &mut self,
        entry: &mut E,
        file: Staged<'_>,
    ) -> Result<u32> {
        if file.size > format::MAX_META_SIZE {
            return Err(bad(format!(
                "`{}` is {} bytes, more than the limit",
                file.path, file.size
            )));
        }
        let mut config = Vec::with_capacity(file.size as usize);
        let crc = copy_entry(entry, file.dest, file.size, &mut |b: &[u8]| {
            config.extend_from_slice(b);
            Ok(())
        })
        .await?;
        let collection = &self.manifest.collections[file.ci];
        let data_bytes: u64 = collection.files.iter().skip(1).map(|f| f.size).sum();
        let loader = StreamLoader::new(&config, data_bytes)
            .map_err(|e| bad(format!("collection `{}`: {e}", collection.name)))?;
        self.loaders[file.ci] = Some(loader);
        Ok(crc)
    }

    /// A segment: staged, its records checked and loaded as they pass.
    async fn unpack_segment<E: AsyncRead + Unpin>(
        &mut self,
        entry: &mut E,
        file: Staged<'_>,
    ) -> Result<u32> {
        let name = &self.manifest.collections[file.ci].name;
        let loader = self.loaders[file.ci]
            .as_mut()
            .ok_or_else(|| bad("a segment comes before its config.json"))?;
        loader.begin_file();
        let crc = copy_entry(entry, file.dest, file.size, &mut |b: &[u8]| loader.feed(b))
            .await
            .map_err(|e| match e {
                Error::BadInput(m) => Error::BadInput(format!("{m} (collection `{name}`)")),
                other => other,
            })?;
        loader
            .end_file()
            .map_err(|e| bad(format!("`{}`: {e}", file.path)))?;
        Ok(crc)
    }

    /// Checks the CRC trailer against every file that came before it.
    async fn check_trailer<E: AsyncRead + Unpin>(&self, entry: &mut E, size: u64) -> Result<()> {
        let complete = match &self.open {
            None => self.next == self.order.len(),
            Some(open) => open.listed,
        };
        if !complete {
            return Err(bad(
                "the archive does not hold every file its manifest lists",
            ));
        }
        let text = read_small(entry, size, format::CHECKSUMS).await?;
        let text = String::from_utf8(text).map_err(|_| bad("snapshot.crc32 is not UTF-8"))?;
        let claimed = format::parse_checksums(&text)?;
        if claimed.len() != self.crcs.len() {
            return Err(bad(
                "snapshot.crc32 does not list exactly the archive's files",
            ));
        }
        for (path, crc) in &self.crcs {
            if claimed.get(path) != Some(crc) {
                return Err(bad(format!("`{path}` is corrupted (CRC-32 mismatch)")));
            }
        }
        Ok(())
    }

    /// The manifest, and each collection's points, loaded while its segments streamed past.
    fn finish(self) -> (Manifest, Vec<(String, Preloaded)>) {
        let loaded = self
            .manifest
            .collections
            .iter()
            .zip(self.loaders)
            .filter_map(|(c, l)| Some((c.name.clone(), l?.finish())))
            .collect();
        (self.manifest, loaded)
    }
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
