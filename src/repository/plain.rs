//! The plain layout: one tar object per snapshot (`{dir}/{name}.snapshot`), as Qdrant
//! stores snapshots, with the tar's SHA-256 in a sidecar object beside it
//! (`{name}.snapshot.checksum`).
//!
//! The tar is committed before its sidecar and deleted before it, so the only leftover a
//! crash can make is a sidecar without its snapshot; [`sweep_orphan_sidecars`] removes
//! those at start-up, on every backend.

use std::collections::HashSet;

use bytes::Bytes;
use futures::TryStreamExt;

use super::{parse_checksum, Layout, Stored, EXTENSION};
use crate::backend::{
    BackendError, BackendExt, CreateOptions, DynBackend, ObjectKey, ObjectMeta, ObjectSink,
};

/// What a sidecar's key adds to its snapshot's key.
const SIDECAR_SUFFIX: &str = ".checksum";

/// The key of the checksum sidecar of the snapshot at `key`.
fn sidecar_key(key: &ObjectKey) -> Result<ObjectKey, BackendError> {
    Ok(ObjectKey::new(format!("{key}{SIDECAR_SUFFIX}"))?)
}

/// Whether `key` names a plain snapshot's tar.
pub(super) fn is_snapshot(key: &ObjectKey) -> bool {
    key.as_str().ends_with(EXTENSION)
}

/// Whether `key`, among the keys `listed`, has a sidecar.
pub(super) fn has_sidecar(key: &ObjectKey, listed: &HashSet<&str>) -> bool {
    listed.contains(format!("{key}{SIDECAR_SUFFIX}").as_str())
}

/// The published SHA-256 of the snapshot at `key`; `None` when its sidecar is missing or
/// unreadable (the snapshot is then listed without a checksum).
pub(super) async fn read_sidecar(backend: &DynBackend, key: &ObjectKey) -> Option<String> {
    let b = backend.get_bytes(&sidecar_key(key).ok()?).await.ok()?;
    parse_checksum(&String::from_utf8_lossy(&b))
}

/// A plain snapshot as listed.
pub(super) fn stored(meta: ObjectMeta, checksum: Option<String>) -> Stored {
    Stored {
        key: meta.key,
        size: meta.size,
        created: meta.last_modified,
        checksum,
        layout: Layout::Plain,
    }
}

/// Starts writing the tar of a plain snapshot; nothing is visible before [`publish`].
pub(super) async fn begin(
    backend: &DynBackend,
    key: &ObjectKey,
    size_hint: u64,
) -> Result<Box<dyn ObjectSink>, BackendError> {
    backend
        .create(key, CreateOptions::default().with_size_hint(size_hint))
        .await
}

/// Commits the tar written into `sink`, then its sidecar; a failed sidecar write deletes
/// the tar again, so a failure leaves nothing listed.
pub(super) async fn publish(
    backend: &DynBackend,
    key: &ObjectKey,
    sink: Box<dyn ObjectSink>,
    sha256: &str,
) -> Result<Stored, BackendError> {
    let meta = sink.commit().await?;
    let written = match sidecar_key(key) {
        Ok(sidecar) => backend
            .put(&sidecar, Bytes::from(sha256.to_string()))
            .await
            .map(drop),
        Err(e) => Err(e),
    };
    if let Err(e) = written {
        if let Err(del) = backend.delete(key).await {
            tracing::warn!(key = %key, error = %del, "snapshot without checksum could not be removed");
        }
        return Err(e);
    }
    Ok(stored(meta, Some(sha256.to_string())))
}

/// Deletes the tar at `key`, then its sidecar. `NotFound` when there is no tar (the
/// snapshot may be in the other layout).
pub(super) async fn delete(backend: &DynBackend, key: &ObjectKey) -> Result<(), BackendError> {
    backend.delete(key).await?;
    match backend.delete(&sidecar_key(key)?).await {
        Ok(()) | Err(BackendError::NotFound(_)) => {}
        Err(e) => {
            tracing::warn!(key = %key, error = %e, "snapshot deleted but its checksum sidecar was not")
        }
    }
    Ok(())
}

/// Removes the sidecars whose snapshot is gone (a delete that removed the tar but died
/// before its sidecar); returns how many. One pass over the store's listing.
pub(super) async fn sweep_orphan_sidecars(backend: &DynBackend) -> Result<usize, BackendError> {
    let mut snapshots = HashSet::new();
    let mut sidecars = Vec::new();
    let mut listing = backend.list_recursive(None);
    while let Some(meta) = listing.try_next().await? {
        let key = meta.key.as_str();
        if key.ends_with(EXTENSION) {
            snapshots.insert(key.to_string());
        } else if let Some(snapshot) = key.strip_suffix(SIDECAR_SUFFIX) {
            if snapshot.ends_with(EXTENSION) {
                sidecars.push((snapshot.to_string(), meta.key));
            }
        }
    }
    let mut removed = 0;
    for (snapshot, sidecar) in sidecars {
        if snapshots.contains(&snapshot) {
            continue;
        }
        match backend.delete(&sidecar).await {
            Ok(()) => removed += 1,
            Err(BackendError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(removed)
}
