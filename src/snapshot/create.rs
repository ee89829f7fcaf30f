//! Creating snapshots: pin a scope's files, stream them as a tar into the repository (plain
//! or incremental), apply retention; and building a shard's archive on the fly for a
//! download that stores nothing.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use chrono::Utc;

use super::catalog::Catalog;
use super::format::{self, SnapshotKind};
use super::{describe, names, producer, Scope, SnapshotDescription};
use crate::backend::{diagnosis, ByteStream, ObjectKey};
use crate::collection::registry::Registry;
use crate::collection::PinnedCollection;
use crate::error::{Error, Result};
use crate::io::progress::Progress;
use crate::repository::{Repository, Stored};
use crate::snapshot::codec::Compression;
use crate::telemetry;

/// Settings of snapshot creation.
#[derive(Clone, Debug)]
pub struct CreateSettings {
    /// Compression of new plain snapshots (`snapshots_config.compression`).
    pub compression: Compression,
    /// Whether production runs on the low-priority runtime: writing to local disk it
    /// competes with live writes; into a remote store it is paced by the upload.
    pub low_priority: bool,
    /// Keep this many newest snapshots per scope (`retention.keep_last`).
    pub keep_last: Option<u64>,
}

/// What a create has pinned: the archive's kind and name, the collections' files and the
/// aliases that go with them.
struct Pinned {
    kind: SnapshotKind,
    name: String,
    collections: Vec<PinnedCollection>,
    aliases: BTreeMap<String, String>,
}

/// Creates snapshots into the repository.
#[derive(Debug)]
pub struct Creator {
    registry: Arc<Registry>,
    repo: Arc<Repository>,
    catalog: Catalog,
    settings: CreateSettings,
    reservations: names::Reservations,
}

impl Creator {
    /// A creator of snapshots of `registry`'s collections into `repo`.
    pub fn new(registry: Arc<Registry>, repo: Arc<Repository>, settings: CreateSettings) -> Self {
        Creator {
            catalog: Catalog::new(Arc::clone(&repo)),
            registry,
            repo,
            settings,
            reservations: names::Reservations::default(),
        }
    }

    /// Pins a collection's files off the async workers (opening files blocks).
    async fn pin(&self, name: &str) -> Result<PinnedCollection> {
        let col = self.registry.get(name)?;
        tokio::task::spawn_blocking(move || col.pin_image())
            .await
            .map_err(|e| Error::internal("pin task failed", e))?
    }

    /// Pins what a snapshot of `scope` holds and names it.
    async fn pin_scope(&self, scope: &Scope) -> Result<Pinned> {
        let now = Utc::now();
        match scope {
            Scope::Collection(c) | Scope::Shard(c, _) => {
                let pinned = self.pin(c).await?;
                let name = match scope {
                    Scope::Shard(c, s) => names::shard_snapshot(c, *s, now),
                    _ => names::collection_snapshot(c, self.registry.peer_id(), now),
                };
                Ok(Pinned {
                    kind: SnapshotKind::Collection,
                    name,
                    collections: vec![pinned],
                    aliases: BTreeMap::new(),
                })
            }
            Scope::Full => {
                let mut collections = Vec::new();
                for c in self.registry.names() {
                    match self.pin(&c).await {
                        Ok(p) => collections.push(p),
                        // Deleted between listing and sealing: not part of this snapshot.
                        Err(Error::NotFound(_)) => {}
                        Err(e) => return Err(e),
                    }
                }
                let names: HashSet<&str> = collections.iter().map(|p| p.name.as_str()).collect();
                let aliases = self
                    .registry
                    .aliases()
                    .into_iter()
                    .filter(|(_, c)| names.contains(c.as_str()))
                    .collect();
                Ok(Pinned {
                    kind: SnapshotKind::Full,
                    name: names::full_snapshot(now),
                    collections,
                    aliases,
                })
            }
        }
    }

    /// Creates a snapshot of `scope` and stores it; returns its description.
    pub async fn create(
        &self,
        scope: &Scope,
        progress: Option<Progress>,
    ) -> Result<SnapshotDescription> {
        let started = std::time::Instant::now();
        let pinned = self.pin_scope(scope).await?;
        let reserved = self
            .reservations
            .reserve(&self.repo, scope.dir()?.as_ref(), &pinned.name)
            .await?;
        let manifest = producer::manifest(pinned.kind, &pinned.collections, pinned.aliases);
        let pinned_names: Vec<String> = pinned.collections.iter().map(|p| p.name.clone()).collect();
        if let Some(p) = &progress {
            p.set_total(producer::estimated_size(&manifest));
        }
        let stored = if self.repo.incremental() {
            self.store_incremental(reserved.key(), manifest, pinned.collections, progress)
                .await?
        } else {
            self.store(reserved.key(), &manifest, pinned.collections, progress)
                .await?
        };
        drop(reserved);
        tracing::info!(
            snapshot = %stored.key,
            bytes = stored.size,
            seconds = started.elapsed().as_secs_f64(),
            backend = %self.repo.backend(),
            incremental = self.repo.incremental(),
            "snapshot created"
        );
        let when = Utc::now().timestamp_millis() as f64 / 1000.0;
        for p in pinned_names {
            telemetry::get()
                .last_snapshot
                .get_or_create(&telemetry::CollectionLabels { collection: p })
                .set(when);
        }
        if let Some(keep) = self.settings.keep_last {
            self.apply_retention(scope, keep, &stored.key).await;
        }
        Ok(describe(&stored))
    }

    /// Deletes the snapshots of `scope` beyond the newest `keep` (never `just_made`).
    /// Failures are logged: the snapshot just taken stands either way.
    async fn apply_retention(&self, scope: &Scope, keep: u64, just_made: &ObjectKey) {
        let listed = match self.catalog.list_stored(scope).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(scope = ?scope, error = %e.chain(), "retention: listing failed");
                return;
            }
        };
        for old in listed.iter().skip(keep as usize) {
            if &old.key == just_made {
                continue;
            }
            match self.repo.delete(&old.key).await {
                Ok(()) => {
                    tracing::info!(snapshot = %old.key, keep, "retention: old snapshot deleted")
                }
                Err(e) => {
                    tracing::warn!(snapshot = %old.key, error = %e, "retention: delete failed")
                }
            }
        }
    }

    /// Creates an incremental snapshot: only pieces the storage lacks are uploaded.
    async fn store_incremental(
        &self,
        key: &ObjectKey,
        manifest: format::Manifest,
        pinned: Vec<PinnedCollection>,
        progress: Option<Progress>,
    ) -> Result<Stored> {
        let archive = producer::archive(&manifest, pinned)?;
        let (repo, k) = (Arc::clone(&self.repo), key.clone());
        let job = async move { repo.create_incremental(&k, archive, progress).await };
        // On local disk the pass reads and hashes every file next to live writes (linking
        // segments or writing pieces): low priority, as for a plain local snapshot.
        let task = if self.settings.low_priority {
            crate::io::low_priority::spawn(job)
        } else {
            tokio::spawn(job)
        };
        task.await
            .map_err(|e| Error::internal("snapshot task failed", e))?
            .map_err(|e| diagnosis::storage_error(format!("failed to write snapshot `{key}`"), e))
    }

    /// Streams an archive into a plain snapshot, then publishes it with its checksum.
    ///
    /// Nothing is visible before the repository publishes it: a failure anywhere before
    /// that aborts the write and leaves nothing listed.
    async fn store(
        &self,
        key: &ObjectKey,
        manifest: &format::Manifest,
        pinned: Vec<PinnedCollection>,
        progress: Option<Progress>,
    ) -> Result<Stored> {
        let hint = producer::estimated_size(manifest);
        let mut sink = self.repo.begin_plain(key, hint).await?;
        let (manifest, compression) = (manifest.clone(), self.settings.compression);
        let job = async move {
            match producer::write_archive(&mut sink, &manifest, pinned, compression, progress).await
            {
                Ok((_, p)) => Ok((sink, p)),
                Err(e) => {
                    if let Err(abort) = sink.abort().await {
                        tracing::warn!(error = %abort, "failed to abort snapshot write");
                    }
                    Err(e)
                }
            }
        };
        // Writing to local disk, production is bulk CPU and I/O next to live writes: it
        // runs at low priority, so upserts keep their latency. Into S3 it is paced by the
        // upload and needs a fifth of a core; at low priority an S3 server busy on the same
        // machine would starve it and slow the upload, so it runs at normal priority.
        let task = if self.settings.low_priority {
            crate::io::low_priority::spawn(job)
        } else {
            tokio::spawn(job)
        };
        let (sink, produced) = task
            .await
            .map_err(|e| Error::internal("snapshot task failed", e))?
            .map_err(|e| {
                diagnosis::storage_error(format!("failed to write snapshot `{key}`"), e)
            })?;
        Ok(self.repo.publish_plain(key, sink, &produced.sha256).await?)
    }

    /// A snapshot of one collection built on the fly and streamed, stored nowhere; returns
    /// the file name it would have and the archive's bytes.
    ///
    /// The stream ends with an error item, not a clean end, if production fails half-way,
    /// so a reader sees a broken transfer rather than a short archive.
    pub async fn stream(&self, collection: &str, shard: u32) -> Result<(String, ByteStream)> {
        use futures::StreamExt;
        use tokio::io::AsyncWriteExt;

        let pinned = self.pin(collection).await?;
        let manifest = producer::manifest(
            SnapshotKind::Collection,
            std::slice::from_ref(&pinned),
            BTreeMap::new(),
        );
        let file_name = names::shard_snapshot(collection, shard, Utc::now());
        let (writer, reader) = tokio::io::duplex(1 << 20);
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<Result<()>>();
        // Paced by the reader, like an S3 upload: normal priority.
        tokio::spawn(async move {
            let outcome = match producer::write_archive(
                writer,
                &manifest,
                vec![pinned],
                Compression::None,
                None,
            )
            .await
            {
                Ok((mut w, _)) => w
                    .shutdown()
                    .await
                    .map_err(|e| Error::internal("failed to finish streamed snapshot", e)),
                Err(e) => Err(Error::internal("streamed snapshot failed", e)),
            };
            if let Err(e) = &outcome {
                tracing::error!(error = %e.chain(), "streamed shard snapshot failed");
            }
            let _ = done_tx.send(outcome);
        });
        let body = tokio_util::io::ReaderStream::with_capacity(reader, 256 << 10);
        let tail = futures::stream::once(async move {
            match done_rx.await {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(Err(std::io::Error::other(e.public_message()))),
                Err(_) => Some(Err(std::io::Error::other("snapshot producer stopped"))),
            }
        })
        .filter_map(futures::future::ready);
        Ok((file_name, body.chain(tail).boxed()))
    }
}
