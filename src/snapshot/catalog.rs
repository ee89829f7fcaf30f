//! The stored snapshots of a scope: listing (newest first), metadata, download, delete.

use std::ops::Range;
use std::sync::Arc;

use super::{describe, not_found, Scope, SnapshotDescription};
use crate::backend::{ByteStream, ObjectMeta};
use crate::error::{Error, Result};
use crate::repository::{Repository, Stored, EXTENSION};

/// Reads and deletes stored snapshots, whatever their layout.
#[derive(Clone, Debug)]
pub struct Catalog {
    repo: Arc<Repository>,
}

impl Catalog {
    /// The snapshots in `repo`.
    pub fn new(repo: Arc<Repository>) -> Self {
        Catalog { repo }
    }

    /// Stored snapshots of a scope, newest first.
    pub(super) async fn list_stored(&self, scope: &Scope) -> Result<Vec<Stored>> {
        let mut out = self.repo.list(scope.dir()?.as_ref()).await?;
        out.sort_by(|a, b| {
            b.created
                .cmp(&a.created)
                .then_with(|| b.key.file_name().cmp(a.key.file_name()))
        });
        Ok(out)
    }

    /// Snapshots of a scope, newest first.
    pub async fn list(&self, scope: &Scope) -> Result<Vec<SnapshotDescription>> {
        Ok(self
            .list_stored(scope)
            .await?
            .iter()
            .map(describe)
            .collect())
    }

    /// Metadata of snapshot `name` in `scope`: its tar's size and its creation time.
    pub async fn stat(&self, scope: &Scope, name: &str) -> Result<ObjectMeta> {
        let s = self
            .repo
            .stat(&scope.key(name)?)
            .await
            .map_err(not_found(name))?;
        Ok(ObjectMeta {
            key: s.key,
            size: s.size,
            last_modified: s.created,
        })
    }

    /// Deletes a snapshot (an incremental one's pieces go once no snapshot shares them).
    pub async fn delete(&self, scope: &Scope, name: &str) -> Result<()> {
        let key = scope.key(name)?;
        self.repo.delete(&key).await.map_err(not_found(name))
    }

    /// Opens a snapshot for download (after [`Catalog::stat`]): its checksum and
    /// the requested bytes.
    pub async fn download(
        &self,
        meta: &ObjectMeta,
        range: Option<Range<u64>>,
    ) -> Result<(Option<String>, ByteStream)> {
        let name = meta.key.file_name();
        if !name.ends_with(EXTENSION) {
            return Err(Error::NotFound(format!("Snapshot {name} not found")));
        }
        let stored = self.repo.stat(&meta.key).await.map_err(not_found(name))?;
        let stream = self
            .repo
            .open(&stored, range)
            .await
            .map_err(not_found(name))?;
        Ok((stored.checksum, stream))
    }
}
