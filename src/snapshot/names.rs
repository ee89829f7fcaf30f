//! Snapshot names in Qdrant's patterns, unique even within one second.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use parking_lot::Mutex;

use crate::backend::ObjectKey;
use crate::error::{Error, Result};
use crate::repository::{Repository, EXTENSION};

/// Qdrant's timestamp format in names (UTC).
pub(crate) fn timestamp(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d-%H-%M-%S").to_string()
}

/// `{collection}-{peer_id}-{ts}.snapshot`
pub(crate) fn collection_snapshot(collection: &str, peer_id: u64, t: DateTime<Utc>) -> String {
    format!("{collection}-{peer_id}-{}{EXTENSION}", timestamp(t))
}

/// `{collection}-shard-{shard}-{ts}.snapshot`
pub(crate) fn shard_snapshot(collection: &str, shard: u32, t: DateTime<Utc>) -> String {
    format!("{collection}-shard-{shard}-{}{EXTENSION}", timestamp(t))
}

/// `full-snapshot-{ts}.snapshot`
pub(crate) fn full_snapshot(t: DateTime<Utc>) -> String {
    format!("full-snapshot-{}{EXTENSION}", timestamp(t))
}

/// Keys being written right now, so two creates in one second never pick the same name.
#[derive(Debug, Default)]
pub(crate) struct Reservations {
    taken: Arc<Mutex<HashSet<ObjectKey>>>,
}

/// Holds a name until the snapshot is committed or abandoned.
#[derive(Debug)]
pub(crate) struct Reserved {
    key: ObjectKey,
    taken: Arc<Mutex<HashSet<ObjectKey>>>,
}

impl Reserved {
    /// The reserved key.
    pub(crate) fn key(&self) -> &ObjectKey {
        &self.key
    }
}

impl Drop for Reserved {
    fn drop(&mut self) {
        self.taken.lock().remove(&self.key);
    }
}

fn with_suffix(name: &str, n: u32) -> String {
    match name.strip_suffix(EXTENSION) {
        Some(stem) if n > 0 => format!("{stem}-{n}{EXTENSION}"),
        _ => name.to_string(),
    }
}

impl Reservations {
    /// Reserves `dir/name`, or `dir/{stem}-1.snapshot`, `-2`, ... if taken or existing.
    pub(crate) async fn reserve(
        &self,
        repo: &Repository,
        dir: Option<&ObjectKey>,
        name: &str,
    ) -> Result<Reserved> {
        for n in 0..10_000 {
            let candidate = with_suffix(name, n);
            let key = match dir {
                Some(d) => d.join(&candidate),
                None => ObjectKey::new(candidate),
            }
            .map_err(|e| Error::bad_input(e.to_string()))?;
            if !self.taken.lock().insert(key.clone()) {
                continue;
            }
            let reserved = Reserved {
                key,
                taken: Arc::clone(&self.taken),
            };
            // Taken in either layout (a plain tar or an incremental manifest).
            if !repo.exists(reserved.key()).await? {
                return Ok(reserved);
            }
        }
        Err(Error::internal(
            "no free snapshot name",
            std::io::Error::other(name.to_string()),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::local::LocalBackend;
    use crate::backend::BackendExt;

    #[test]
    fn names_follow_qdrant_patterns() {
        let t = DateTime::parse_from_rfc3339("2025-01-02T03:04:05Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            collection_snapshot("c", 42, t),
            "c-42-2025-01-02-03-04-05.snapshot"
        );
        assert_eq!(
            full_snapshot(t),
            "full-snapshot-2025-01-02-03-04-05.snapshot"
        );
        assert_eq!(
            shard_snapshot("c", 0, t),
            "c-shard-0-2025-01-02-03-04-05.snapshot"
        );
    }

    #[tokio::test]
    async fn same_second_names_never_collide() {
        let tmp = tempfile::tempdir().unwrap();
        let b = std::sync::Arc::new(LocalBackend::new(tmp.path()).unwrap());
        let repo = Repository::new(
            std::sync::Arc::clone(&b) as crate::backend::DynBackend,
            false,
        );
        let r = Reservations::default();
        let dir = ObjectKey::new("c").unwrap();
        let a = r
            .reserve(&repo, Some(&dir), "c-1-t.snapshot")
            .await
            .unwrap();
        let second = r
            .reserve(&repo, Some(&dir), "c-1-t.snapshot")
            .await
            .unwrap();
        assert_eq!(second.key().as_str(), "c/c-1-t-1.snapshot");
        b.put(a.key(), bytes::Bytes::from_static(b"x"))
            .await
            .unwrap();
        drop(a);
        drop(second);
        let third = r
            .reserve(&repo, Some(&dir), "c-1-t.snapshot")
            .await
            .unwrap();
        assert_eq!(third.key().as_str(), "c/c-1-t-1.snapshot");
    }
}
