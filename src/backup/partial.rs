//! Pulling only what changed in a shard since the last backup pulled it from the same
//! replica, with Qdrant's partial snapshots: given the snapshot manifest (each segment's
//! file versions) of the earlier archive, Qdrant streams every segment's current manifest,
//! the segment files newer than the earlier ones, and the shard's own files; or answers 304
//! when nothing changed. The whole shard archive is rebuilt from those files plus the
//! earlier archive's files that did not change, whose pieces are already stored.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::pull::{lasting_at, stream_archive, Pulled};
use crate::error::{Error, Result};
use crate::io::progress::Progress;
use crate::qdrant_api::Server;
use crate::repository::backups::BackupSession;
use crate::repository::hashing::Mark;
use crate::repository::layout::END;
use crate::repository::manifest::{Entry, Manifest};
use crate::repository::writer::{ManifestBuilder, Place};

/// What the last backup holds of one shard.
#[derive(Clone, Debug)]
pub(crate) struct Previous {
    /// The peer it was pulled from: manifests and segment ids belong to one replica.
    pub peer_id: u64,
    /// Qdrant's snapshot manifest of that archive.
    pub qdrant: Value,
    /// Its manifest in the repository.
    pub manifest: Manifest,
    /// The digest state of its tar before each entry and its end; empty when unknown.
    pub marks: Vec<Mark>,
}

impl Previous {
    /// Whether `marks` are those of the manifest's tar: one per entry and one more, the
    /// last of which ends the tar with its recorded size and SHA-256.
    pub(crate) fn marks_fit(manifest: &Manifest, marks: &[Mark]) -> bool {
        let end = [0u8; END];
        marks.len() == manifest.entries.len() + 1
            && marks.last().is_some_and(|m| {
                m.offset + END as u64 == manifest.size
                    && m.finish_with(&end).as_deref() == Some(manifest.sha256.as_str())
            })
    }
}

/// Pulls what changed in shard `shard` of `collection` since `previous` and rebuilds the
/// whole archive.
pub(crate) async fn pull_changes(
    server: &Server,
    collection: &str,
    shard: u32,
    session: &BackupSession,
    previous: &Previous,
    created_at: DateTime<Utc>,
    progress: Option<Progress>,
) -> Result<Pulled> {
    // Qdrant builds the partial archive while the last backup's chunks are indexed.
    let (resp, index) = tokio::join!(
        server.partial_snapshot(collection, shard, &previous.qdrant),
        session.chunk_index(&previous.manifest)
    );
    let mut builder = session.builder(None, created_at, index);
    if previous.manifest.piece_size != builder.piece_size() {
        return Err(Error::Upstream(format!(
            "the last backup of shard {shard} of `{collection}` is cut in other pieces"
        )));
    }
    let resp = resp.map_err(Error::Upstream)?;
    let Some(resp) = resp else {
        return Ok(unchanged_since(previous));
    };
    // What came is stored as it streams and hashed last, after what is kept.
    let place = lasting_at(Place::Early);
    let source = (server, collection, shard);
    let streamed = stream_archive(source, resp, &mut builder, place, progress).await?;
    let kept = unchanged(&previous.manifest, &streamed.segments, &streamed.paths).map_err(|e| {
        Error::Upstream(format!(
            "shard {shard} of `{collection}` from {}: the partial snapshot does not fit the \
             last backup: {e}",
            server.base()
        ))
    })?;
    // The kept entries that open the last archive are not hashed again: the tar's digest
    // resumes from the last archive's state after them.
    let (prefix, rest) = split_prefix(previous, kept);
    let to_hash = prefix_or_all(&mut builder, previous, prefix, rest);
    builder.add_stored(to_hash).await?;
    let written = builder.finish(None).await?;
    Ok(Pulled {
        manifest: written.manifest,
        pulled_bytes: streamed.received,
        stored_bytes: written.uploaded_bytes,
        qdrant: Some(Value::Object(streamed.segments.into_iter().collect())),
        marks: written.marks,
    })
}

/// The shard when nothing changed (Qdrant's 304): the last archive is this one too.
fn unchanged_since(previous: &Previous) -> Pulled {
    Pulled {
        manifest: previous.manifest.clone(),
        pulled_bytes: 0,
        stored_bytes: 0,
        qdrant: Some(previous.qdrant.clone()),
        marks: previous.marks.clone(),
    }
}

/// The leading entries of `kept` that open the previous archive too (when its marks are
/// known), and the rest.
fn split_prefix(previous: &Previous, mut kept: Vec<Entry>) -> (Vec<Entry>, Vec<Entry>) {
    let n = if previous.marks.is_empty() {
        0
    } else {
        previous
            .manifest
            .entries
            .iter()
            .zip(&kept)
            .take_while(|(a, b)| a.path == b.path)
            .count()
    };
    let rest = kept.split_off(n);
    (kept, rest)
}

/// Starts the builder's tar with `prefix` resumed from the previous archive's marks and
/// returns `rest` to add; when it cannot resume, all of them are to be added (hashed).
fn prefix_or_all(
    builder: &mut ManifestBuilder,
    previous: &Previous,
    prefix: Vec<Entry>,
    rest: Vec<Entry>,
) -> Vec<Entry> {
    if let Some(marks) = previous.marks.get(..=prefix.len()) {
        let from = (prefix.clone(), previous.manifest.mtime);
        if builder.continue_from(from, marks.to_vec(), None) {
            return rest;
        }
    }
    prefix.into_iter().chain(rest).collect()
}

/// The entries of `previous` that the rebuilt archive keeps: the files of segments that
/// still exist (`segments`, by id, with their current manifests) which the partial
/// archive did not send (`sent`) and which their segment still lists. Fails when a
/// segment lists a file that is neither sent nor in `previous`.
fn unchanged(
    previous: &Manifest,
    segments: &BTreeMap<String, Value>,
    sent: &HashSet<String>,
) -> std::result::Result<Vec<Entry>, String> {
    let listed = |segment: &str, rel: &str| {
        segments
            .get(segment)
            .is_some_and(|m| m["file_versions"].get(rel).is_some())
    };
    let kept: Vec<Entry> = previous
        .entries
        .iter()
        .filter(|e| !sent.contains(&e.path))
        .filter(|e| match segment_file(&e.path) {
            Some((segment, Some(rel))) => listed(segment, rel),
            Some((segment, None)) => e.dir && segments.contains_key(segment),
            None => false,
        })
        .cloned()
        .collect();
    let have: HashSet<&str> = kept
        .iter()
        .map(|e| e.path.as_str())
        .chain(sent.iter().map(String::as_str))
        .collect();
    for (segment, m) in segments {
        let files = m["file_versions"].as_object().into_iter().flatten();
        for (rel, _) in files {
            let path = format!("segments/{segment}/files/{rel}");
            if !have.contains(path.as_str()) {
                return Err(format!("`{path}` is neither sent nor in the last backup"));
            }
        }
    }
    Ok(kept)
}

/// `(segment id, path inside its files/ directory)` of a path under `segments/`; the
/// second is `None` for the segment's other paths.
fn segment_file(path: &str) -> Option<(&str, Option<&str>)> {
    let (segment, rest) = path.strip_prefix("segments/")?.split_once('/')?;
    Some((segment, rest.strip_prefix("files/")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str) -> Entry {
        Entry {
            path: path.into(),
            size: 1,
            text: Some("x".into()),
            pieces: Vec::new(),
            dir: false,
            sparse: Vec::new(),
            linked: None,
            tables: Vec::new(),
        }
    }

    fn manifest(paths: &[&str]) -> Manifest {
        Manifest {
            format: String::new(),
            version: 0,
            created_at: String::new(),
            mtime: 0,
            piece_size: 1 << 20,
            size: 0,
            sha256: String::new(),
            entries: paths.iter().map(|p| entry(p)).collect(),
        }
    }

    fn segment(id: &str, files: &[&str]) -> (String, Value) {
        let versions: serde_json::Map<String, Value> =
            files.iter().map(|f| (f.to_string(), Value::Null)).collect();
        (
            id.into(),
            serde_json::json!({"segment_id": id, "segment_version": 3, "file_versions": versions}),
        )
    }

    #[test]
    fn keeps_unsent_files_of_live_segments_and_drops_the_rest() {
        let previous = manifest(&[
            "segments/a/files/matrix.dat",
            "segments/a/files/page.dat",
            "segments/a/files/gone.dat",
            "segments/a/files/segment.json",
            "segments/b/files/matrix.dat",
            "newest_clocks.json",
        ]);
        let segments: BTreeMap<String, Value> = [
            segment("a", &["matrix.dat", "page.dat", "new.dat"]),
            segment("c", &["x.dat"]),
        ]
        .into_iter()
        .collect();
        let sent: HashSet<String> = [
            "segments/a/files/page.dat",
            "segments/a/files/new.dat",
            "segments/a/files/segment.json",
            "segments/c/files/x.dat",
            "newest_clocks.json",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let kept: Vec<String> = unchanged(&previous, &segments, &sent)
            .unwrap()
            .into_iter()
            .map(|e| e.path)
            .collect();
        // Unsent and still listed: kept; a file the segment no longer lists, a segment
        // that is gone and the shard's own files: not.
        assert_eq!(kept, vec!["segments/a/files/matrix.dat".to_string()]);
    }

    #[test]
    fn a_listed_file_found_nowhere_is_an_error() {
        let previous = manifest(&["segments/a/files/one.dat"]);
        let segments: BTreeMap<String, Value> = [segment("a", &["one.dat", "two.dat"])]
            .into_iter()
            .collect();
        let e = unchanged(&previous, &segments, &HashSet::new()).unwrap_err();
        assert!(e.contains("segments/a/files/two.dat"), "{e}");
    }
}
