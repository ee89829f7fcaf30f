//! Backups of Qdrant deployments as operations: a run waited for or not (then polled at
//! `GET /operations/{id}` like snapshot operations), listing, deleting, and shard archives
//! opened for download.

use std::future::Future;
use std::ops::Range;
use std::sync::Arc;

use super::operations::Operations;
use super::snapshots::Outcome;
use crate::backend::ByteStream;
use crate::backup::record::BackupRecord;
use crate::backup::restore::{RestoreRequest, Restored};
use crate::backup::{Backups, SourceStatus};
use crate::error::Result;
use crate::io::progress::Progress;
use crate::repository::manifest::Manifest;
use crate::telemetry;

/// Backup operations over the configured sources.
#[derive(Clone, Debug)]
pub struct BackupService {
    backups: Arc<Backups>,
    ops: Arc<Operations>,
}

/// A shard archive of a backup, ready to stream.
#[derive(Debug)]
pub struct ShardArchive {
    /// Its manifest: size, SHA-256, pieces.
    pub manifest: Arc<Manifest>,
    /// When its backup was taken.
    pub created: chrono::DateTime<chrono::Utc>,
    /// What it is, for errors: backup, source, collection, shard.
    pub label: String,
}

impl BackupService {
    /// Backups, registered in the same operations list as snapshots.
    pub(crate) fn new(backups: Arc<Backups>, ops: Arc<Operations>) -> Self {
        BackupService { backups, ops }
    }

    /// Every configured source with its peers and newest backup.
    pub async fn sources(&self) -> Result<Vec<SourceStatus>> {
        self.backups.list_sources().await
    }

    /// Runs `work` as operation `kind` on `target` (see [`super::operations::in_task`]).
    async fn in_task<T, F, Fut>(
        &self,
        kind: &'static str,
        target: String,
        wait: bool,
        work: F,
    ) -> Result<Outcome<T>>
    where
        T: serde::Serialize + Send + 'static,
        F: FnOnce(Arc<Backups>, Progress) -> Fut,
        Fut: Future<Output = Result<T>> + Send + 'static,
    {
        let backups = Arc::clone(&self.backups);
        super::operations::in_task(&self.ops, (kind, target), wait, |progress| {
            work(backups, progress)
        })
        .await
    }

    /// Backs up `source` now.
    pub async fn run(
        &self,
        source: &str,
        collections: Option<Vec<String>>,
        wait: bool,
    ) -> Result<Outcome<BackupRecord>> {
        self.backups.source(source)?;
        let source = source.to_string();
        self.in_task(
            "backup",
            source.clone(),
            wait,
            move |backups, progress| async move {
                let out = backups.run(&source, collections, Some(progress)).await;
                observe_backup(&source, &out);
                out
            },
        )
        .await
    }

    /// Restores backup `id` of `source` into the deployment `req.to` names; the result is
    /// each collection's verification.
    pub async fn restore(
        &self,
        source: &str,
        id: &str,
        req: RestoreRequest,
        wait: bool,
    ) -> Result<Outcome<Restored>> {
        req.check()?;
        self.backups.stored(source, id).await?;
        let (source, id) = (source.to_string(), id.to_string());
        let target = format!("{source}/{id}");
        self.in_task(
            "restore",
            target,
            wait,
            move |backups, progress| async move {
                let out = backups.restore(&source, &id, req, Some(progress)).await;
                telemetry::get().restore(&source, out.as_ref().is_ok_and(|r| r.verified));
                out
            },
        )
        .await
    }

    /// The backups of `source`, newest first.
    pub async fn list(&self, source: &str) -> Result<Vec<BackupRecord>> {
        self.backups.list(source).await
    }

    /// One backup.
    pub async fn get(&self, source: &str, id: &str) -> Result<BackupRecord> {
        self.backups.get(source, id).await
    }

    /// Deletes one backup.
    pub async fn delete(&self, source: &str, id: &str) -> Result<()> {
        self.backups.delete(source, id).await
    }

    /// Shard `shard` of `collection` in backup `id` of `source`.
    pub async fn shard(
        &self,
        source: &str,
        id: &str,
        collection: &str,
        shard: u32,
    ) -> Result<ShardArchive> {
        let manifest = self.backups.shard(source, id, collection, shard).await?;
        let created = chrono::DateTime::parse_from_rfc3339(&manifest.created_at)
            .map(|t| t.with_timezone(&chrono::Utc))
            .unwrap_or_default();
        Ok(ShardArchive {
            manifest,
            created,
            label: crate::backup::shard_label(source, id, collection, shard),
        })
    }

    /// The bytes `range` of a shard archive.
    pub async fn open(&self, a: &ShardArchive, range: Option<Range<u64>>) -> Result<ByteStream> {
        self.backups
            .open(a.label.clone(), Arc::clone(&a.manifest), range)
            .await
    }
}

/// Counts a finished backup in the metrics.
pub(crate) fn observe_backup(source: &str, out: &Result<BackupRecord>) {
    let done = out.as_ref().ok().map(|r| {
        let pulled = r
            .collections
            .values()
            .flat_map(|c| &c.shards)
            .map(|s| s.pulled_bytes)
            .sum();
        (
            r.finished_at.timestamp_millis() as f64 / 1000.0,
            pulled,
            r.stored_bytes,
        )
    });
    telemetry::get().backup(source, done);
}
