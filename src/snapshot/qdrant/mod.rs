//! Recovery of collection snapshots written by Qdrant 1.19 (see `docs/qdrant-format.md`).
//!
//! The archive is recognised by its content (`config.json`, `version.info`, shard
//! directories with `segments/{uuid}.tar`), never by its name. Its outer tar and each nested
//! segment tar are streamed: only the files snapstream reads are written, under the staging
//! directory, after their paths are checked; everything else (HNSW graphs, quantized copies,
//! payload index data, the WAL) is checked and skipped. The staged segments are then read
//! point by point into a new collection in our own format, which the caller installs
//! atomically like any recovered collection.

pub mod replay;
pub(crate) mod segment;
pub mod wal;

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

use futures::StreamExt;
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio_tar::{Archive, Entries, Entry};

use crate::collection::config::CollectionConfig;
use crate::collection::types::PointId;
use crate::collection::{Collection, PointInput, PointsChange};
use crate::error::{Error, Result};

/// Most entries read from the outer archive and from each segment.
const MAX_ENTRIES: usize = 100_000;
/// Largest file written from an archive (a vector chunk or a payload page).
const MAX_FILE: u64 = 4 << 30;
/// Largest metadata file read into memory.
const MAX_META: u64 = 1 << 20;

fn bad(msg: impl Into<String>) -> Error {
    Error::bad_input(format!("invalid Qdrant snapshot: {}", msg.into()))
}

/// Whether an archive whose first entry is `path` is in Qdrant's layout.
pub(crate) fn looks_like(path: &str) -> bool {
    matches!(
        path,
        "config.json" | "version.info" | "payload_index.json" | "shard_key_mapping.json"
    ) || path
        .split_once('/')
        .is_some_and(|(shard, rest)| shard.parse::<u32>().is_ok() && !rest.is_empty())
}

/// Whether a full-storage archive whose first entry is `path` is Qdrant's: its entries are
/// `config.json` and one `{collection}-{peer}-{time}.snapshot` per collection.
pub(crate) fn looks_like_full(path: &str) -> bool {
    path == "config.json" || (path.ends_with(".snapshot") && !path.contains('/'))
}

/// What was staged from a Qdrant full-storage archive.
#[derive(Debug)]
pub struct StagedFull {
    /// Each collection's name and staged snapshot.
    pub collections: Vec<(String, Staged)>,
    /// Alias → collection.
    pub aliases: std::collections::BTreeMap<String, String>,
}

/// Stages a Qdrant full-storage archive: each nested collection snapshot is streamed and
/// staged like a collection snapshot, under its own directory.
pub(crate) async fn extract_full<R: AsyncRead + Unpin + Send>(
    first: Entry<Archive<R>>,
    entries: &mut Entries<R>,
    staging: &Path,
) -> Result<StagedFull> {
    let mut by_file: Vec<(String, Staged)> = Vec::new();
    let mut config: Option<Value> = None;
    let mut next = Some(first);
    let mut count = 0;
    loop {
        let mut e = match next.take() {
            Some(e) => e,
            None => match entries.next().await {
                Some(e) => e.map_err(|_| bad("the archive is truncated or corrupted"))?,
                None => break,
            },
        };
        count += 1;
        if count > MAX_ENTRIES {
            return Err(bad("the archive has too many entries"));
        }
        let path = entry_path(&e)?;
        checked(&path)?;
        if !is_data(&e) {
            return Err(bad(format!("entry `{path}` is not a regular file")));
        }
        if path == "config.json" {
            config = Some(read_meta(&mut e, "config.json").await?);
        } else if looks_like_full(&path) {
            let dir = staging.join("collections").join(by_file.len().to_string());
            let staged = stage_nested(&mut e, &path, &dir).await?;
            by_file.push((path, staged));
        }
    }
    pair_with_names(
        config.ok_or_else(|| bad("config.json is missing"))?,
        by_file,
    )
}

/// Stages the collection snapshot nested at entry `path` of a full-storage archive.
async fn stage_nested<R: AsyncRead + Unpin + Send>(
    e: &mut Entry<Archive<R>>,
    path: &str,
    dir: &Path,
) -> Result<Staged> {
    let mut nested = Archive::new(e);
    let mut inner = nested
        .entries()
        .map_err(|_| bad(format!("`{path}` is not a tar archive")))?;
    let head = inner
        .next()
        .await
        .ok_or_else(|| bad(format!("`{path}` is empty")))?
        .map_err(|_| bad(format!("`{path}` is truncated or corrupted")))?;
    if !looks_like(&entry_path(&head)?) {
        return Err(bad(format!("`{path}` is not a Qdrant collection snapshot")));
    }
    Box::pin(extract(head, &mut inner, dir)).await
}

/// Names the staged collections (keyed by their file in the archive) as the full
/// snapshot's `config.json` maps them, and reads its aliases.
fn pair_with_names(config: Value, mut by_file: Vec<(String, Staged)>) -> Result<StagedFull> {
    let mapping = config["collections_mapping"]
        .as_object()
        .ok_or_else(|| bad("config.json has no collections_mapping"))?;
    let mut collections = Vec::new();
    for (name, file) in mapping {
        let file = file.as_str().unwrap_or_default();
        let i = by_file.iter().position(|(f, _)| f == file).ok_or_else(|| {
            bad(format!(
                "the snapshot of collection `{name}` ({file}) is missing"
            ))
        })?;
        collections.push((name.clone(), by_file.swap_remove(i).1));
    }
    let aliases = config["collections_aliases"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(a, c)| Some((a.clone(), c.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default();
    Ok(StagedFull {
        collections,
        aliases,
    })
}

/// What was staged from a Qdrant archive.
#[derive(Debug)]
pub struct Staged {
    /// The collection's `config.json`.
    config: Value,
    /// `payload_index.json`, if present.
    payload_index: Option<Value>,
    /// Each segment's `snapshot/files` directory, in archive order.
    segments: Vec<PathBuf>,
    /// Where the shard's WAL files were staged (absent when it had none).
    wal: PathBuf,
}

/// Checks an archive path: relative, with normal components only.
fn checked(path: &str) -> Result<PathBuf> {
    let p = Path::new(path);
    if path.is_empty()
        || path.contains('\\')
        || !p.components().all(|c| matches!(c, Component::Normal(_)))
    {
        return Err(bad(format!("entry `{path}` is not a plain relative path")));
    }
    Ok(p.to_path_buf())
}

fn entry_path<R: AsyncRead + Unpin>(e: &Entry<R>) -> Result<String> {
    let raw = e
        .path_bytes()
        .map_err(|_| bad("an entry has an unreadable path"))?
        .into_owned();
    String::from_utf8(raw).map_err(|_| bad("an entry path is not UTF-8"))
}

fn is_data<R: AsyncRead + Unpin>(e: &Entry<R>) -> bool {
    let t = e.header().entry_type();
    t.is_file() || t.is_gnu_sparse()
}

async fn read_meta<R: AsyncRead + Unpin>(e: &mut Entry<R>, what: &str) -> Result<Value> {
    let mut raw = Vec::new();
    (&mut *e)
        .take(MAX_META + 1)
        .read_to_end(&mut raw)
        .await
        .map_err(|_| bad(format!("{what} cannot be read")))?;
    if raw.len() as u64 > MAX_META {
        return Err(bad(format!("{what} is larger than the limit")));
    }
    serde_json::from_slice(&raw).map_err(|e| bad(format!("{what} is not valid JSON: {e}")))
}

async fn write_file<R: AsyncRead + Unpin>(e: &mut Entry<R>, dest: &Path) -> Result<()> {
    // A sparse entry may claim any size in a few bytes: refused before a byte is read.
    if e.header()
        .raw_file_size()
        .map_or(true, |size| size > MAX_FILE)
    {
        return Err(bad("a file in the archive is larger than the limit"));
    }
    if let Some(parent) = dest.parent() {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|err| Error::internal("failed to create a staging directory", err))?;
    }
    let mut out = tokio::fs::File::create(dest)
        .await
        .map_err(|err| Error::internal("failed to create a staged file", err))?;
    // Qdrant preallocates its files (32 MiB vector chunks and payload pages, mostly zeros,
    // stored as sparse tar entries): zero blocks become holes instead of writes.
    let mut buf = vec![0u8; 1 << 16];
    let (mut total, mut hole) = (0u64, false);
    loop {
        let n = e
            .read(&mut buf)
            .await
            .map_err(|_| bad("an entry is truncated or unreadable"))?;
        if n == 0 {
            break;
        }
        total += n as u64;
        if total > MAX_FILE {
            return Err(bad("a file in the archive is larger than the limit"));
        }
        if buf[..n].iter().all(|&b| b == 0) {
            out.seek(std::io::SeekFrom::Current(n as i64))
                .await
                .map_err(|err| Error::internal("failed to write a staged file", err))?;
            hole = true;
        } else {
            out.write_all(&buf[..n])
                .await
                .map_err(|err| Error::internal("failed to write a staged file", err))?;
            hole = false;
        }
    }
    if hole {
        out.set_len(total)
            .await
            .map_err(|err| Error::internal("failed to write a staged file", err))?;
    }
    Ok(())
}

/// Files of a segment that recovery reads; everything else is skipped.
fn wanted_in_segment(rel: &str) -> bool {
    let name = rel.rsplit('/').next().unwrap_or(rel);
    let top = rel.split('/').next().unwrap_or(rel);
    match top {
        "segment.json"
        | "mutable_id_tracker.mappings"
        | "mutable_id_tracker.versions"
        | "id_tracker.mappings"
        | "id_tracker.versions"
        | "id_tracker.deleted" => true,
        // Staged only so that the serverless tracker is refused by name.
        "id_tracker.i2e" => true,
        "payload_storage" => {
            matches!(name, "config.json" | "tracker.dat")
                || (name.starts_with("page_") && name.ends_with(".dat"))
        }
        t if t == "vector_storage" || t.starts_with("vector_storage-") => {
            let depth = rel.split('/').count();
            (depth == 2 && matches!(name, "matrix.dat" | "deleted.dat"))
                || rel
                    .split('/')
                    .nth(1)
                    .is_some_and(|d| d == "vectors" || d == "deleted")
                    && (matches!(
                        name,
                        "config.json" | "status.dat" | "flags_a.dat" | "flags_b.dat"
                    ) || (name.starts_with("chunk_") && name.ends_with(".mmap")))
        }
        _ => false,
    }
}

async fn extract_segment<R: AsyncRead + Unpin + Send>(
    entry: &mut Entry<R>,
    dest: &Path,
) -> Result<()> {
    let mut archive = Archive::new(entry);
    let mut entries = archive
        .entries()
        .map_err(|_| bad("a segment is not a tar archive"))?;
    let mut count = 0;
    while let Some(e) = entries.next().await {
        let mut e = e.map_err(|_| bad("a segment archive is truncated or corrupted"))?;
        count += 1;
        if count > MAX_ENTRIES {
            return Err(bad("a segment has too many entries"));
        }
        let path = entry_path(&e)?;
        let kind = e.header().entry_type();
        if kind.is_dir() {
            checked(path.trim_end_matches('/'))?;
            continue;
        }
        if !is_data(&e) {
            return Err(bad(format!(
                "segment entry `{path}` is a {kind:?}; only files are allowed"
            )));
        }
        checked(&path)?;
        let Some(rel) = path.strip_prefix("snapshot/files/") else {
            return Err(bad(format!(
                "segment entry `{path}` is outside snapshot/files/"
            )));
        };
        if wanted_in_segment(rel) {
            write_file(&mut e, &dest.join(checked(rel)?)).await?;
        }
    }
    Ok(())
}

async fn stage_entry<R: AsyncRead + Unpin + Send>(
    mut e: Entry<Archive<R>>,
    staging: &Path,
    staged: &mut Staged,
    config: &mut Option<Value>,
) -> Result<()> {
    let path = entry_path(&e)?;
    let kind = e.header().entry_type();
    if kind.is_dir() {
        checked(path.trim_end_matches('/'))?;
        return Ok(());
    }
    if !is_data(&e) {
        return Err(bad(format!(
            "entry `{path}` is a {kind:?}; only files are allowed"
        )));
    }
    checked(&path)?;
    match path.as_str() {
        "config.json" => *config = Some(read_meta(&mut e, "config.json").await?),
        "payload_index.json" => {
            staged.payload_index = Some(read_meta(&mut e, "payload_index.json").await?)
        }
        _ => {
            let (shard, rest) = path.split_once('/').unwrap_or(("", path.as_str()));
            if !shard.is_empty() && shard != "0" {
                return Err(bad(format!(
                    "shard {shard} is present: collections with more than one shard (or custom sharding) are not supported"
                )));
            }
            if let Some(file) = rest.strip_prefix("segments/") {
                if file.ends_with(".tar") && !file.contains('/') {
                    let dir = staging
                        .join("segments")
                        .join(staged.segments.len().to_string());
                    extract_segment(&mut e, &dir).await?;
                    staged.segments.push(dir);
                }
            }
            if let Some(file) = rest.strip_prefix("wal/") {
                if wal::wanted(file) {
                    write_file(&mut e, &staged.wal.join(file)).await?;
                }
            }
            // Shard metadata and anything else: checked above, skipped.
        }
    }
    Ok(())
}

/// Stages a Qdrant archive whose first entry was `first` and whose rest is `entries`.
pub(crate) async fn extract<R: AsyncRead + Unpin + Send>(
    first: Entry<Archive<R>>,
    entries: &mut Entries<R>,
    staging: &Path,
) -> Result<Staged> {
    let mut staged = Staged {
        config: Value::Null,
        payload_index: None,
        segments: Vec::new(),
        wal: staging.join("wal"),
    };
    let mut config = None;
    stage_entry(first, staging, &mut staged, &mut config).await?;
    let mut count = 1;
    while let Some(e) = entries.next().await {
        let e = e.map_err(|_| bad("the archive is truncated or corrupted"))?;
        count += 1;
        if count > MAX_ENTRIES {
            return Err(bad("the archive has too many entries"));
        }
        stage_entry(e, staging, &mut staged, &mut config).await?;
    }
    staged.config = config.ok_or_else(|| bad("config.json is missing"))?;
    Ok(staged)
}

/// Our configuration for a Qdrant collection's `config.json`.
fn collection_config(staged: &Staged) -> Result<CollectionConfig> {
    let q = &staged.config;
    let params = &q["params"];
    if params["sparse_vectors"]
        .as_object()
        .is_some_and(|m| !m.is_empty())
    {
        return Err(bad(
            "the collection has sparse vectors, which snapstream does not hold",
        ));
    }
    if params["shard_number"].as_u64().unwrap_or(1) > 1 || params["sharding_method"] == "custom" {
        return Err(bad(
            "collections with more than one shard or custom sharding are not supported",
        ));
    }
    let mut schema = serde_json::Map::new();
    if let Some(s) = staged
        .payload_index
        .as_ref()
        .and_then(|p| p["schema"].as_object())
    {
        schema = s.clone();
    }
    let ours = json!({
        "vectors": params["vectors"],
        "on_disk_payload": params["on_disk_payload"],
        "hnsw_config": q["hnsw_config"],
        "optimizers_config": q["optimizer_config"],
        "wal_config": q["wal_config"],
        "quantization_config": q["quantization_config"],
        "payload_schema": schema,
    });
    let config: CollectionConfig = serde_json::from_value(ours).map_err(|e| {
        bad(format!(
            "config.json: the vector parameters cannot be read: {e}"
        ))
    })?;
    config
        .validate()
        .map_err(|e| bad(format!("config.json: {e}")))?;
    Ok(config)
}

/// Points per write while building the collection.
const BATCH: usize = 1_000;

/// Builds a collection named `name` in our format at `dest` from staged segments: for each
/// point id, the newest version across segments. Blocking.
pub(crate) fn build(staged: &Staged, dest: &Path, name: &str) -> Result<()> {
    let config = collection_config(staged)?;
    let mut segments = staged
        .segments
        .iter()
        .map(|d| segment::Segment::open(d))
        .collect::<Result<Vec<_>>>()?;
    // Newest version of every point across segments.
    let mut newest: HashMap<PointId, (u64, usize, u32)> = HashMap::new();
    for (si, seg) in segments.iter().enumerate() {
        for (id, &offset) in &seg.ids {
            let v = seg.version(offset);
            match newest.get(id) {
                Some(&(old, _, _)) if old >= v => {}
                _ => {
                    newest.insert(*id, (v, si, offset));
                }
            }
        }
    }
    let mut order: Vec<(PointId, usize, u32)> = newest
        .into_iter()
        .map(|(id, (_, s, o))| (id, s, o))
        .collect();
    // Segment by segment, in offset order: reads stay sequential.
    order.sort_by_key(|&(_, s, o)| (s, o));
    Collection::init_dir(dest, &config)?;
    let col = Collection::open(dest, name)?;
    for chunk in order.chunks(BATCH) {
        let mut points = Vec::with_capacity(chunk.len());
        for &(id, s, o) in chunk {
            let (vectors, payload) = segments[s].point(o)?;
            // Qdrant answers `{}` for a point without payload: kept as such.
            let payload = match payload {
                Value::Object(m) => Some(m),
                _ => None,
            };
            points.push(PointInput {
                id,
                vectors,
                payload,
            });
        }
        let writes = col.prepare(points).map_err(|e| {
            bad(format!(
                "a point does not fit the collection's vectors ({})",
                e.public_message()
            ))
        })?;
        col.change_blocking(PointsChange::Upsert(writes))?;
    }
    // Qdrant flushes every segment before it snapshots them: operations numbered above the
    // newest segment version are the ones still only in the WAL.
    let flushed = segments.iter().map(|s| s.version).max().unwrap_or(0);
    wal::replay_from(&staged.wal, flushed + 1, &mut |num, op| {
        replay::apply(&col, num, &op)
    })?;
    drop(col);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qdrants_layout_is_told_from_ours_by_the_first_entry() {
        assert!(looks_like("config.json"));
        assert!(looks_like("0/segments/0b1c.tar"));
        assert!(looks_like("version.info"));
        assert!(!looks_like("snapshot.json"));
        assert!(!looks_like("passwd"));
        assert!(!looks_like("x/segments/a.tar"));
    }

    #[test]
    fn only_the_files_recovery_reads_are_written() {
        assert!(wanted_in_segment("mutable_id_tracker.mappings"));
        assert!(wanted_in_segment("vector_storage/vectors/chunk_0.mmap"));
        assert!(wanted_in_segment("vector_storage-text/deleted/flags_a.dat"));
        assert!(wanted_in_segment("payload_storage/page_3.dat"));
        assert!(wanted_in_segment("vector_storage-image/matrix.dat"));
        assert!(wanted_in_segment("id_tracker.deleted"));
        assert!(!wanted_in_segment("vector_index/graph.bin"));
        assert!(!wanted_in_segment("vector_storage/vectors/matrix.dat/x"));
        assert!(!wanted_in_segment("payload_index/x-title-map/page_0.dat"));
        assert!(!wanted_in_segment("vector_storage/hnsw/graph.bin"));
        assert!(checked("a/../b").is_err() && checked("/etc/x").is_err());
    }
}
