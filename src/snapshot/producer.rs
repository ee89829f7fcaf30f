//! The streaming producer: pinned files → tar → optional compression → SHA-256 → sink,
//! in one pass with bounded memory (a 1 MiB read buffer per open file, the sink's buffer).

use std::collections::BTreeMap;
use std::io;

use std::sync::Arc;

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio_tar::Builder;

use super::codec::Encoder;
use super::format::{self, Manifest, ManifestCollection, ManifestFile, SnapshotKind};
use crate::collection::{PinnedCollection, CONFIG_FILE, DATA_DIR};
use crate::io::progress::Progress;
use crate::repository::hashing::HashingWriter;
use crate::snapshot::codec::Compression;

/// What the producer wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Produced {
    /// Hex SHA-256 of every byte written to the sink.
    pub sha256: String,
    /// Bytes written to the sink.
    pub size: u64,
}

/// Bytes read from a pinned file at a time.
const CHUNK: u64 = 1 << 20;

/// Reads `len` bytes at `offset` into `buf` (reused, so chunks cost no allocation or
/// zeroing) on the blocking pool.
async fn read_chunk(
    file: Arc<std::fs::File>,
    mut buf: Vec<u8>,
    offset: u64,
    len: u64,
) -> io::Result<Vec<u8>> {
    tokio::task::spawn_blocking(move || {
        buf.resize(len as usize, 0);
        // Positional reads: an early end of file (the file shrank) is an error, never a
        // short entry that would desynchronize the archive from its headers.
        std::os::unix::fs::FileExt::read_exact_at(&*file, &mut buf, offset)?;
        Ok(buf)
    })
    .await
    .map_err(io::Error::other)?
}

/// Streams exactly `len` bytes of `file` into `out` in 1 MiB chunks, the next chunk read
/// while the current one is written (two buffers, swapped), then pads to the 512-byte
/// block; returns the CRC-32.
async fn copy_exact<W: AsyncWrite + Unpin>(
    file: std::fs::File,
    len: u64,
    out: &mut W,
) -> io::Result<u32> {
    let file = Arc::new(file);
    let mut crc = crc32fast::Hasher::new();
    let mut offset = 0;
    let mut spare = Vec::new();
    let mut next = (len > 0)
        .then(|| tokio::spawn(read_chunk(Arc::clone(&file), Vec::new(), 0, CHUNK.min(len))));
    while let Some(pending) = next.take() {
        let buf = pending.await.map_err(io::Error::other)??;
        offset += buf.len() as u64;
        if offset < len {
            next = Some(tokio::spawn(read_chunk(
                Arc::clone(&file),
                std::mem::take(&mut spare),
                offset,
                CHUNK.min(len - offset),
            )));
        }
        crc.update(&buf);
        out.write_all(&buf).await?;
        spare = buf;
    }
    let pad = (512 - len % 512) % 512;
    out.write_all(&[0u8; 512][..pad as usize]).await?;
    Ok(crc.finalize())
}

use crate::repository::layout::file_header as header;

/// Builds the manifest of an archive from pinned collections.
pub fn manifest(
    kind: SnapshotKind,
    collections: &[PinnedCollection],
    aliases: BTreeMap<String, String>,
) -> Manifest {
    let collections = collections
        .iter()
        .map(|c| {
            let dir = match kind {
                SnapshotKind::Collection => String::new(),
                SnapshotKind::Full => format::full_collection_dir(&c.name),
            };
            let mut files = vec![ManifestFile {
                path: format::join(&dir, CONFIG_FILE),
                size: c.config_json.len() as u64,
            }];
            files.extend(c.files.iter().map(|f| ManifestFile {
                path: format::join(&dir, &format!("{DATA_DIR}/{}", f.name)),
                size: f.len,
            }));
            ManifestCollection {
                name: c.name.clone(),
                dir,
                files,
            }
        })
        .collect();
    Manifest {
        format: format::FORMAT_NAME.into(),
        format_version: format::FORMAT_VERSION,
        kind,
        created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        producer: format!("snapstream {}", env!("CARGO_PKG_VERSION")),
        collections,
        aliases,
    }
}

/// The size of the uncompressed archive, exact when every path fits a plain tar header;
/// used as the S3 size hint.
pub fn estimated_size(m: &Manifest) -> u64 {
    let entry = |size: u64| 512 + size.div_ceil(512) * 512;
    let meta = 2 * entry(64 << 10);
    m.files().map(|f| entry(f.size) + 1024).sum::<u64>() + meta + 1024
}

/// `value` as pretty JSON.
fn pretty<T: serde::Serialize>(value: &T) -> crate::error::Result<String> {
    serde_json::to_string_pretty(value)
        .map_err(|e| crate::error::Error::internal("failed to serialize manifest", e))
}

/// The archive of an incremental snapshot, described for the repository: format version 2
/// (see [`format::Opening`]), so that the next snapshot's tar begins with the same bytes up
/// to the first file that changed. The opening, the configs and the manifest as text, the
/// pinned files as they are, the CRC trailer made from the CRCs the repository computes;
/// every header dated 0, so that a header depends only on the entry's path and size.
pub fn archive(
    manifest: &Manifest,
    collections: Vec<PinnedCollection>,
) -> crate::error::Result<crate::repository::Archive> {
    use crate::error::Error;
    use crate::repository::{Archive, ArchiveEntry, Source};
    let created_at = chrono::DateTime::parse_from_rfc3339(&manifest.created_at)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|e| Error::internal("invalid manifest time", e))?;
    let contents = Manifest {
        format_version: format::LISTED_LAST_VERSION,
        ..manifest.clone()
    };
    let text = |path: &str, text: String| ArchiveEntry {
        path: path.to_string(),
        source: Source::Text(text),
    };
    let mut entries = vec![text(
        format::MANIFEST,
        pretty(&format::Opening::of(&contents))?,
    )];
    for (pinned, listed) in collections.into_iter().zip(&contents.collections) {
        let mut listed_files = listed.files.iter();
        let config = listed_files.next().ok_or_else(|| {
            Error::internal("manifest lists no config", io::Error::other("empty"))
        })?;
        let config_json = String::from_utf8(pinned.config_json)
            .map_err(|e| Error::internal("non-UTF-8 config", e))?;
        entries.push(text(&config.path, config_json));
        for (file, listed) in pinned.files.into_iter().zip(listed_files) {
            entries.push(ArchiveEntry {
                path: listed.path.clone(),
                source: Source::File {
                    file: file.file,
                    len: file.len,
                    sealed: file.sealed,
                },
            });
        }
    }
    entries.push(text(format::CONTENTS, pretty(&contents)?));
    Ok(Archive {
        entries,
        // The collections' files, between the opening and the manifest.
        trailer: Box::new(|crcs| {
            let files = crcs
                .get(1..crcs.len().saturating_sub(1))
                .unwrap_or_default();
            (
                format::CHECKSUMS.to_string(),
                format::format_checksums(files),
            )
        }),
        created_at,
        mtime: 0,
    })
}

/// Streams the archive of `collections` into `out`, returning `out` and the archive's digest.
///
/// `out` is not committed or shut down: the caller decides, so an error can still abort it.
pub async fn write_archive<W: AsyncWrite + Unpin + Send>(
    out: W,
    manifest: &Manifest,
    collections: Vec<PinnedCollection>,
    compression: Compression,
    progress: Option<Progress>,
) -> io::Result<(W, Produced)> {
    let mtime = chrono::Utc::now().timestamp().max(0) as u64;
    let mut tar =
        Builder::new_non_terminated(Encoder::new(HashingWriter::new(out, progress), compression));
    let manifest_json = serde_json::to_vec_pretty(manifest).map_err(io::Error::other)?;
    tar.append_data(
        &mut header(manifest_json.len() as u64, mtime),
        format::MANIFEST,
        &manifest_json[..],
    )
    .await?;

    let mut crcs = Vec::new();
    for (pinned, listed) in collections.into_iter().zip(&manifest.collections) {
        let mut listed_files = listed.files.iter();
        let config = listed_files
            .next()
            .ok_or_else(|| io::Error::other("manifest lists no config"))?;
        tar.append_data(
            &mut header(config.size, mtime),
            &config.path,
            &pinned.config_json[..],
        )
        .await?;
        crcs.push((config.path.clone(), crc32fast::hash(&pinned.config_json)));
        for (file, listed) in pinned.files.into_iter().zip(listed_files) {
            // The builder writes the header (and a GNU long-name entry when needed) from the
            // pinned size; the data follows, exactly that many bytes.
            tar.append_data(
                &mut header(file.len, mtime),
                &listed.path,
                tokio::io::empty(),
            )
            .await?;
            let crc = copy_exact(file.file, file.len, tar.get_mut()).await?;
            crcs.push((listed.path.clone(), crc));
        }
    }
    let trailer = format::format_checksums(&crcs);
    tar.append_data(
        &mut header(trailer.len() as u64, mtime),
        format::CHECKSUMS,
        trailer.as_bytes(),
    )
    .await?;
    tar.finish().await?;
    let mut encoder = tar.into_inner().await?;
    // Completes the compressed frame; the sinks' shutdown only flushes, never commits.
    encoder.shutdown().await?;
    let (out, sha256, size) = encoder.into_inner().finish().await?;
    Ok((out, Produced { sha256, size }))
}
