//! Mark and sweep: pieces (and linked files) that no manifest (of a snapshot or of a backup's shard) anywhere
//! under the storage root refers to are deleted. Runs under a collector lease (see [`super::lease`]), so no create is between
//! storing pieces and committing its manifest while the collector looks; every step is
//! idempotent, so a crash at any point only leaves work for the next run.

use std::collections::HashSet;

use futures::{StreamExt, TryStreamExt};

use super::backups::{self, StoredBackup};
use super::damage::DAMAGED_DIR;
use super::lease::Leases;
use super::linked::LINKED_DIR;
use super::manifest::{Manifest, MAX_MANIFEST_SIZE};
use super::pieces::{self, PIECES_DIR};
use super::MANIFEST_SUFFIX;
use crate::backend::{BackendError, DynBackend, ObjectKey};

/// Deletes run this many at a time.
const DELETES_IN_FLIGHT: usize = 8;

/// What one collection found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Collected {
    /// Manifests read (every node's under the storage root).
    pub manifests: usize,
    /// Pieces and linked files kept because a manifest refers to them.
    pub kept: usize,
    /// Pieces and linked files deleted.
    pub removed: usize,
}

/// Collects once; `None` when a create holds a lease (try again later).
///
/// A manifest that cannot be read or parsed stops the sweep before anything is deleted:
/// the pieces it refers to cannot be known.
pub(crate) async fn collect(
    backend: &DynBackend,
    leases: &Leases,
) -> Result<Option<Collected>, BackendError> {
    let Some(lease) = leases.try_collect().await? else {
        return Ok(None);
    };
    let result = mark_and_sweep(backend).await;
    lease.release().await;
    result.map(Some)
}

/// The pieces and linked files a snapshot manifest or a backup object refers to; `None` when it was deleted
/// since it was listed (it refers to nothing any more). An unreadable one is an error: the
/// pieces it refers to cannot be known.
async fn referenced(
    backend: &DynBackend,
    key: &ObjectKey,
) -> Result<Option<Vec<String>>, BackendError> {
    let bytes = match pieces::get_small(backend, key, MAX_MANIFEST_SIZE).await {
        Ok(b) => b,
        Err(BackendError::NotFound(_)) => return Ok(None),
        Err(e) => return Err(e),
    };
    let parsed = if backups::is_backup(key) {
        StoredBackup::parse(&bytes).map(|b| b.pieces().map(str::to_string).collect())
    } else {
        Manifest::parse(&bytes).map(|m| {
            let linked = m.linked().filter_map(|e| e.linked.clone());
            m.pieces().map(str::to_string).chain(linked).collect()
        })
    };
    parsed.map(Some).map_err(|e| BackendError::Io {
        action: "refused to collect garbage because of the unreadable manifest",
        path: key.to_string(),
        source: std::io::Error::other(e),
    })
}

async fn mark_and_sweep(backend: &DynBackend) -> Result<Collected, BackendError> {
    let mut live: HashSet<String> = HashSet::new();
    let mut stored: Vec<ObjectKey> = Vec::new();
    let mut manifests = 0;
    let pieces_prefix = format!("{PIECES_DIR}/");
    let linked_prefix = format!("{LINKED_DIR}/");
    let damaged_prefix = format!("{DAMAGED_DIR}/");
    let mut listing = backend.list_recursive(None);
    while let Some(m) = listing.try_next().await? {
        let k = m.key.as_str();
        // A damage marker goes with its piece: it is swept when the piece would be.
        if k.starts_with(&pieces_prefix)
            || k.starts_with(&linked_prefix)
            || k.starts_with(&damaged_prefix)
        {
            stored.push(m.key);
        } else if backups::is_backup(&m.key) || k.ends_with(MANIFEST_SUFFIX) {
            if let Some(pieces) = referenced(backend, &m.key).await? {
                live.extend(pieces);
                manifests += 1;
            }
        }
    }
    let doomed: Vec<ObjectKey> = stored
        .iter()
        .filter(|k| !live.contains(k.file_name()))
        .cloned()
        .collect();
    let is_marker = |k: &&ObjectKey| k.as_str().starts_with(&damaged_prefix);
    let removed = doomed.len() - doomed.iter().filter(is_marker).count();
    let kept = stored.len() - stored.iter().filter(is_marker).count() - removed;
    futures::stream::iter(doomed)
        .map(|k| async move {
            match backend.delete(&k).await {
                Ok(()) | Err(BackendError::NotFound(_)) => Ok(()),
                Err(e) => Err(e),
            }
        })
        .buffer_unordered(DELETES_IN_FLIGHT)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(Collected {
        manifests,
        kept,
        removed,
    })
}
