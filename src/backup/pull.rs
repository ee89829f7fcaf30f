//! Pulling one shard from the peer that holds it into the repository: Qdrant's shard
//! archive is read as it streams, each file is cut into pieces of its own (so a file that
//! did not change costs nothing, whatever moved before it in the archive), and a tar that
//! Qdrant recovers is described by a manifest that is hashed on the way.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use serde_json::Value;
use tokio::io::AsyncReadExt;
use tokio_tar::{Archive, EntryType};

use crate::error::{Error, Result};
use crate::io::progress::Progress;
use crate::qdrant_api::Server;
use crate::repository::backups::BackupSession;
use crate::repository::hashing::Mark;
use crate::repository::manifest::{valid_sparse, Manifest};
use crate::repository::writer::{ManifestBuilder, Place, StreamedFile};

/// Files up to this size that are UTF-8 (JSON, version files) are kept in the manifest
/// itself, not as pieces of their own.
const INLINE_MAX: u64 = 4096;

/// Qdrant's name for the manifest it puts in each segment of a partial archive.
const SEGMENT_MANIFEST: &str = "segment_manifest.json";
/// Largest segment manifest read (it lists a segment's files and their versions).
const SEGMENT_MANIFEST_MAX: u64 = 16 << 20;

/// One shard as pulled.
#[derive(Debug)]
pub(crate) struct Pulled {
    /// The manifest of the shard archive (not yet committed).
    pub manifest: Manifest,
    /// Bytes received from Qdrant.
    pub pulled_bytes: u64,
    /// Bytes of new pieces stored.
    pub stored_bytes: u64,
    /// Qdrant's snapshot manifest of the archive, when known: a later pull from the same
    /// replica asks only for what changed since.
    pub qdrant: Option<Value>,
    /// The tar's digest state before each entry and its end: a rebuilt archive that
    /// starts with the same entries is not hashed again.
    pub marks: Vec<Mark>,
}

/// What streaming an archive into a builder saw.
#[derive(Debug, Default)]
pub(crate) struct Streamed {
    /// Bytes received.
    pub received: u64,
    /// The paths of the entries added.
    pub paths: HashSet<String>,
    /// The segment manifests of a partial archive, by segment id (not added as entries:
    /// Qdrant refuses a shard archive that holds them).
    pub segments: BTreeMap<String, Value>,
}

/// Streams shard `shard` of `collection` from `server` into pieces; the chunks of
/// `previous` (the last backup's archive of the shard) are not stored again.
pub(crate) async fn pull_shard(
    server: &Server,
    (collection, shard): (&str, u32),
    session: &BackupSession,
    previous: Option<&Manifest>,
    created_at: DateTime<Utc>,
    progress: Option<Progress>,
) -> Result<Pulled> {
    // The file versions as of before the archive: a later partial pull then sends at
    // least every file changed after the archive was taken. Without them (a Qdrant that
    // does not answer), the next pull is a whole one again.
    let qdrant = match server.partial_manifest(collection, shard).await {
        Ok(m) => Some(m),
        Err(e) => {
            tracing::warn!(collection, shard, error = %e, "no partial snapshot manifest; the next backup pulls this shard whole");
            None
        }
    };
    let index = async {
        match previous {
            Some(m) => session.chunk_index(m).await,
            None => Default::default(),
        }
    };
    let (resp, index) = tokio::join!(server.shard_snapshot(collection, shard), index);
    let resp = resp.map_err(Error::Upstream)?;
    let mut builder = session.builder(None, created_at, index);
    let source = (server, collection, shard);
    let place = lasting_at(Place::Now);
    let streamed = stream_archive(source, resp, &mut builder, place, progress).await?;
    let written = builder.finish(None).await?;
    Ok(Pulled {
        manifest: written.manifest,
        pulled_bytes: streamed.received,
        stored_bytes: written.uploaded_bytes,
        qdrant,
        marks: written.marks,
    })
}

/// Where a file of a shard archive goes: files that last ([`lasting`]) at `first`, the
/// rest last of all.
pub(crate) fn lasting_at(first: Place) -> impl Fn(&str) -> Place {
    move |path| if lasting(path) { first } else { Place::Late }
}

/// Whether a file of a shard archive is one Qdrant writes once and never changes while
/// its segment lives (an HNSW index, an optimized segment's vectors, an immutable id
/// mapping). Such files go first in the archives this crate builds, so that the next
/// backup, which keeps them, resumes the tar's hash after them instead of reading them
/// back; a wrong guess costs only that reading.
pub(crate) fn lasting(path: &str) -> bool {
    let Some(rest) = path.strip_prefix("segments/") else {
        return false;
    };
    let Some((_, file)) = rest.split_once("/files/") else {
        return false;
    };
    let name = file.rsplit('/').next().unwrap_or(file);
    file.starts_with("vector_index") || name == "matrix.dat" || name == "id_tracker.mappings"
}

/// Adds every entry of the archive in `resp` to `builder`, each file cut in pieces of its
/// own; segment manifests are read aside.
pub(crate) async fn stream_archive(
    (server, collection, shard): (&Server, &str, u32),
    resp: reqwest::Response,
    builder: &mut ManifestBuilder,
    place: impl Fn(&str) -> Place,
    progress: Option<Progress>,
) -> Result<Streamed> {
    let received = Arc::new(AtomicU64::new(0));
    let reader = counted_body(resp, Arc::clone(&received), progress);
    let mut archive = Archive::new(reader);
    let broken = |e| broken(server, collection, shard, e);
    let mut entries = archive.entries().map_err(broken)?;
    let mut out = Streamed::default();
    while let Some(mut entry) = entries.try_next().await.map_err(broken)? {
        let path = entry
            .path()
            .map_err(broken)?
            .to_string_lossy()
            .trim_end_matches('/')
            .to_string();
        if let Some(segment) = segment_manifest_of(&path) {
            let m = read_segment_manifest(&mut entry, segment).await;
            out.segments.insert(segment.to_string(), m.map_err(broken)?);
            continue;
        }
        let sparse = match entry.header().entry_type() {
            EntryType::Directory => {
                builder.add_dir(path.clone(), place(&path)).await?;
                out.paths.insert(path);
                continue;
            }
            EntryType::Regular | EntryType::Continuous => Vec::new(),
            EntryType::GNUSparse => sparse_regions(entry.header()),
            other => {
                return Err(Error::Upstream(format!(
                    "shard {shard} of `{collection}` from {}: entry `{path}` is a {other:?}, \
                     which a shard archive does not hold",
                    server.base()
                )))
            }
        };
        // Sparse members read back whole (holes as zeros), at their real size.
        let len = entry.effective_size();
        let file = StreamedFile {
            path: path.clone(),
            len,
            inline: len <= INLINE_MAX,
            sparse: complete_sparse(sparse, len),
        };
        let at = place(&file.path);
        builder.add_reader(file, &mut entry, at).await?;
        out.paths.insert(path);
    }
    out.received = received.load(Ordering::Relaxed);
    Ok(out)
}

/// The segment id of `segments/{id}/files/segment_manifest.json`.
fn segment_manifest_of(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("segments/")?;
    let (segment, file) = rest.split_once('/')?;
    (file == format!("files/{SEGMENT_MANIFEST}") && !segment.is_empty()).then_some(segment)
}

/// A segment manifest, checked to name `segment`.
async fn read_segment_manifest<R: tokio::io::AsyncRead + Unpin>(
    entry: &mut R,
    segment: &str,
) -> std::io::Result<Value> {
    let mut text = Vec::new();
    entry
        .take(SEGMENT_MANIFEST_MAX + 1)
        .read_to_end(&mut text)
        .await?;
    if text.len() as u64 > SEGMENT_MANIFEST_MAX {
        return Err(std::io::Error::other(format!(
            "the manifest of segment {segment} is larger than {SEGMENT_MANIFEST_MAX} bytes"
        )));
    }
    let m: Value = serde_json::from_slice(&text).map_err(std::io::Error::other)?;
    if m["segment_id"].as_str() != Some(segment) || !m["file_versions"].is_object() {
        return Err(std::io::Error::other(format!(
            "the manifest of segment {segment} does not describe it"
        )));
    }
    Ok(m)
}

/// The response's body as a reader, each byte counted in `received` and `progress`.
fn counted_body(
    resp: reqwest::Response,
    received: Arc<AtomicU64>,
    progress: Option<Progress>,
) -> impl tokio::io::AsyncRead + Unpin {
    let body = resp
        .bytes_stream()
        .inspect_ok(move |b| {
            received.fetch_add(b.len() as u64, Ordering::Relaxed);
            if let Some(p) = &progress {
                p.add(b.len() as u64);
            }
        })
        .map_err(std::io::Error::other);
    tokio_util::io::StreamReader::new(body)
}

/// The data regions of a GNU sparse member as its header lists them, when they all fit in
/// the header (Qdrant writes one region and the end); none (store it whole) otherwise.
fn sparse_regions(header: &tokio_tar::Header) -> Vec<[u64; 2]> {
    let Some(gnu) = header.as_gnu() else {
        return Vec::new();
    };
    if gnu.is_extended() {
        return Vec::new();
    }
    gnu.sparse
        .iter()
        .filter(|r| !r.is_empty())
        .map(|r| Some([r.offset().ok()?, r.length().ok()?]))
        .collect::<Option<Vec<_>>>()
        .unwrap_or_default()
}

/// Regions that describe a file of `len` bytes to a tar reader: ending exactly at `len`
/// (a zero-length region marks a trailing hole); none (store it whole) when they cannot.
fn complete_sparse(mut regions: Vec<[u64; 2]>, len: u64) -> Vec<[u64; 2]> {
    let end = regions.last().map_or(0, |[off, n]| off + n);
    if !regions.is_empty() && end < len {
        regions.push([len, 0]);
    }
    if valid_sparse(&regions, len) {
        regions
    } else {
        Vec::new()
    }
}

/// An archive that could not be read as it came: the peer, the shard and why.
fn broken(server: &Server, collection: &str, shard: u32, e: std::io::Error) -> Error {
    Error::Upstream(format!(
        "shard {shard} of `{collection}` from {}: the archive could not be read: {e}",
        server.base()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lasting_files_are_indexes_optimized_vectors_and_id_mappings() {
        for p in [
            "segments/a/files/vector_index/links_compressed.bin",
            "segments/a/files/vector_index-image/graph.bin",
            "segments/a/files/vector_storage/matrix.dat",
            "segments/a/files/id_tracker.mappings",
        ] {
            assert!(lasting(p), "{p}");
        }
        for p in [
            "segments/a/files/vector_storage/vectors/chunk_0.mmap",
            "segments/a/files/payload_storage/page_0.dat",
            "segments/a/files/segment.json",
            "wal/closed-1",
            "matrix.dat",
        ] {
            assert!(!lasting(p), "{p}");
        }
    }

    #[test]
    fn sparse_maps_end_at_the_file_size_or_are_dropped() {
        assert_eq!(
            complete_sparse(vec![[0, 16384], [1 << 20, 0]], 1 << 20),
            vec![[0, 16384], [1 << 20, 0]]
        );
        assert_eq!(
            complete_sparse(vec![[0, 512]], 4096),
            vec![[0, 512], [4096, 0]]
        );
        assert!(complete_sparse(vec![[0, 100], [200, 10]], 4096).is_empty());
        assert!(
            complete_sparse(vec![[0, 512], [1024, 512], [2048, 512], [3072, 512]], 8192).is_empty()
        );
        assert!(complete_sparse(Vec::new(), 10).is_empty());
    }
}
