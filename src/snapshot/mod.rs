//! Snapshots: creation (pin → stream into storage), listing, deletion, download and
//! transactional recovery (stream → staging → verify → atomic swap).

pub mod codec;
pub mod format;
pub use crate::hashing;
pub mod names;
pub mod ops;
pub mod producer;
pub mod progress_log;
pub mod qdrant;
pub mod source;
pub mod unpack;

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use chrono::Utc;
use futures::Stream;
use parking_lot::Mutex;
use serde::Serialize;

use crate::backend::{BackendError, ByteStream, CreateOptions, DynBackend, ObjectKey, ObjectMeta};
use crate::collection::config::CollectionConfig;
use crate::collection::{PinnedCollection, CONFIG_FILE};
use crate::config::Compression;
use crate::error::{Error, Result};
use crate::registry::Registry;
use crate::repository::{Repository, Stored};
use format::SnapshotKind;
use hashing::Progress;

/// Qdrant's `SnapshotDescription`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SnapshotDescription {
    /// File name.
    pub name: String,
    /// UTC, `YYYY-MM-DDTHH:MM:SS`; never null.
    pub creation_time: String,
    /// Bytes.
    pub size: u64,
    /// Hex SHA-256, when the sidecar exists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
}

fn describe(s: &Stored) -> SnapshotDescription {
    SnapshotDescription {
        name: s.key.file_name().to_string(),
        creation_time: s.created.format("%Y-%m-%dT%H:%M:%S").to_string(),
        size: s.size,
        checksum: s.checksum.clone(),
    }
}

/// Which snapshots an endpoint talks about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// `/collections/{c}/snapshots`, stored under `{c}/`.
    Collection(String),
    /// `/collections/{c}/shards/{id}/snapshots`, stored under `{c}/shards/{id}/`.
    Shard(String, u32),
    /// `/snapshots`, stored at the root.
    Full,
}

impl Scope {
    /// The storage directory of this scope.
    pub fn dir(&self) -> Result<Option<ObjectKey>> {
        let key = match self {
            Scope::Collection(c) => Some(ObjectKey::new(c.clone())),
            Scope::Shard(c, s) => Some(ObjectKey::new(format!("{c}/shards/{s}"))),
            Scope::Full => None,
        };
        key.transpose().map_err(|e| Error::bad_input(e.to_string()))
    }

    /// The key of snapshot `name` in this scope. A name no snapshot can have (a `/`, a
    /// leading `.`, longer than a file name may be) is simply not found, as in Qdrant,
    /// without asking the storage.
    pub fn key(&self, name: &str) -> Result<ObjectKey> {
        let not_found = || Error::NotFound(format!("Snapshot {name} not found"));
        if name.is_empty() || name.len() > 255 || name.starts_with('.') || name.contains('/') {
            return Err(not_found());
        }
        match self.dir()? {
            Some(d) => d.join(name),
            None => ObjectKey::new(name),
        }
        .map_err(|_| not_found())
    }
}

/// How recovery reconciles with other replicas. A single node has none, so all three
/// restore the snapshot and activate it, exactly as Qdrant does on a single node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// Prefer the snapshot's data (the default).
    Snapshot,
    /// Prefer existing replicas' data.
    Replica,
    /// No synchronization.
    NoSync,
}

/// Settings of the snapshot service.
#[derive(Clone, Debug)]
pub struct SnapshotSettings {
    /// `storage.snapshots_path`: `file://` recovery is confined to it.
    pub snapshots_path: PathBuf,
    /// `storage.temp_path`, if set: recovery staging goes there.
    pub temp_path: Option<PathBuf>,
    /// Compression of new snapshots.
    pub compression: Compression,
    /// `service.enable_snapshot_url_recovery`.
    pub url_recovery: bool,
    /// `(bucket, prefix)` when snapshots live in S3, for `s3://` locations.
    pub s3_location: Option<(String, String)>,
    /// New snapshots are incremental (`snapshots_config.incremental`).
    pub incremental: bool,
    /// Keep this many newest snapshots per scope (`retention.keep_last`).
    pub keep_last: Option<u64>,
}

/// The snapshot service.
pub struct SnapshotService {
    registry: Arc<Registry>,
    repo: Arc<Repository>,
    keep_last: Option<u64>,
    snapshots_path: PathBuf,
    temp_path: Option<PathBuf>,
    compression: Compression,
    url_recovery: bool,
    s3_location: Option<(String, String)>,
    http: reqwest::Client,
    reservations: names::Reservations,
    recovery_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Background operations (`wait=false`).
    pub ops: Arc<ops::Operations>,
}

impl std::fmt::Debug for SnapshotService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotService")
            .field("backend", &self.repo.backend().to_string())
            .finish()
    }
}

const TEMP_STAGING_DIR: &str = "snapstream-staging";

impl SnapshotService {
    /// Creates the service over `backend`.
    pub fn new(
        registry: Arc<Registry>,
        backend: DynBackend,
        settings: SnapshotSettings,
    ) -> Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            // An inactivity limit, like Qdrant's 60 s stream timeout, not a total limit.
            .read_timeout(std::time::Duration::from_secs(60))
            .build()
            .map_err(|e| Error::internal("failed to build HTTP client", e))?;
        Ok(SnapshotService {
            registry,
            repo: Arc::new(Repository::new(backend, settings.incremental)),
            keep_last: settings.keep_last,
            snapshots_path: settings.snapshots_path,
            temp_path: settings.temp_path,
            compression: settings.compression,
            url_recovery: settings.url_recovery,
            s3_location: settings.s3_location,
            http,
            reservations: names::Reservations::default(),
            recovery_locks: Mutex::new(HashMap::new()),
            ops: Arc::new(ops::Operations::default()),
        })
    }

    /// The storage backend.
    pub fn backend(&self) -> &DynBackend {
        self.repo.backend()
    }

    /// The snapshot repository over the backend.
    pub fn repository(&self) -> &Arc<Repository> {
        &self.repo
    }

    /// Removes leftovers of interrupted work: hidden temp files and uploads in storage,
    /// orphaned sidecars of local snapshots, and recovery staging under `temp_path`.
    pub async fn startup_cleanup(&self) -> Result<()> {
        let removed = self.backend().cleanup().await?;
        if removed > 0 {
            tracing::info!(removed, backend = %self.backend(), "removed leftovers of interrupted snapshot writes");
        }
        // Pieces of incremental snapshots whose create was interrupted, or whose deletion
        // was not yet collected.
        self.repo.spawn_collector();
        self.repo.request_collection();
        let snapshots = self.snapshots_path.clone();
        let temp = self.temp_path.clone();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            remove_orphan_sidecars(&snapshots, 0)?;
            if let Some(t) = temp {
                let staging = t.join(TEMP_STAGING_DIR);
                if staging.exists() {
                    std::fs::remove_dir_all(&staging)?;
                }
            }
            Ok(())
        })
        .await
        .map_err(|e| Error::internal("cleanup task failed", e))?
        .map_err(|e| Error::internal("failed to clean snapshot leftovers", e))
    }

    /// Pins a collection's files off the async workers (opening files blocks).
    async fn pin(&self, name: &str) -> Result<PinnedCollection> {
        let col = self.registry.get(name)?;
        tokio::task::spawn_blocking(move || col.pin_image())
            .await
            .map_err(|e| Error::internal("pin task failed", e))?
    }

    /// Creates a snapshot of `scope` and stores it; returns its description.
    pub async fn create(
        &self,
        scope: &Scope,
        progress: Option<Progress>,
    ) -> Result<SnapshotDescription> {
        let now = Utc::now();
        let started = std::time::Instant::now();
        let (kind, name, pinned, aliases) = match scope {
            Scope::Collection(c) | Scope::Shard(c, _) => {
                let pinned = self.pin(c).await?;
                let name = match scope {
                    Scope::Shard(c, s) => names::shard_snapshot(c, *s, now),
                    _ => names::collection_snapshot(c, self.registry.peer_id(), now),
                };
                (
                    SnapshotKind::Collection,
                    name,
                    vec![pinned],
                    BTreeMap::new(),
                )
            }
            Scope::Full => {
                let mut pinned = Vec::new();
                for c in self.registry.names() {
                    match self.pin(&c).await {
                        Ok(p) => pinned.push(p),
                        // Deleted between listing and sealing: not part of this snapshot.
                        Err(Error::NotFound(_)) => {}
                        Err(e) => return Err(e),
                    }
                }
                let names: std::collections::HashSet<&str> =
                    pinned.iter().map(|p| p.name.as_str()).collect();
                let aliases = self
                    .registry
                    .aliases()
                    .into_iter()
                    .filter(|(_, c)| names.contains(c.as_str()))
                    .collect();
                (
                    SnapshotKind::Full,
                    names::full_snapshot(now),
                    pinned,
                    aliases,
                )
            }
        };
        let reserved = self
            .reservations
            .reserve(&self.repo, scope.dir()?.as_ref(), &name)
            .await?;
        let manifest = producer::manifest(kind, &pinned, aliases);
        let pinned_names: Vec<String> = pinned.iter().map(|p| p.name.clone()).collect();
        if let Some(p) = &progress {
            p.set_total(producer::estimated_size(&manifest));
        }
        let stored = if self.repo.incremental() {
            self.store_incremental(reserved.key(), manifest, pinned, progress)
                .await?
        } else {
            self.store(reserved.key(), &manifest, pinned, progress)
                .await?
        };
        drop(reserved);
        tracing::info!(
            snapshot = %stored.key,
            bytes = stored.size,
            seconds = started.elapsed().as_secs_f64(),
            backend = %self.backend(),
            incremental = self.repo.incremental(),
            "snapshot created"
        );
        let when = Utc::now().timestamp_millis() as f64 / 1000.0;
        for p in &pinned_names {
            crate::metrics::get()
                .last_snapshot
                .get_or_create(&crate::metrics::CollectionLabels {
                    collection: p.clone(),
                })
                .set(when);
        }
        if let Some(keep) = self.keep_last {
            self.apply_retention(scope, keep, &stored.key).await;
        }
        Ok(describe(&stored))
    }

    /// Deletes the snapshots of `scope` beyond the newest `keep` (never `just_made`).
    /// Failures are logged: the snapshot just taken stands either way.
    async fn apply_retention(&self, scope: &Scope, keep: u64, just_made: &ObjectKey) {
        let listed = match self.list_stored(scope).await {
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
        let stored =
            tokio::spawn(async move { repo.create_incremental(&k, archive, progress).await })
                .await
                .map_err(|e| Error::internal("snapshot task failed", e))?
                .map_err(|e| {
                    Error::from_storage_io(format!("failed to write snapshot `{key}`"), e)
                })?;
        Ok(stored)
    }

    /// Streams an archive into the backend, then writes its checksum sidecar.
    ///
    /// The snapshot is committed first: a failure anywhere before that leaves nothing
    /// visible, and a failed sidecar write deletes the snapshot again. Only a crash between
    /// the two commits can leave a complete snapshot listed without a checksum.
    async fn store(
        &self,
        key: &ObjectKey,
        manifest: &format::Manifest,
        pinned: Vec<PinnedCollection>,
        progress: Option<Progress>,
    ) -> Result<Stored> {
        let hint = producer::estimated_size(manifest);
        let mut sink = self
            .backend()
            .create(key, CreateOptions::default().with_size_hint(hint))
            .await?;
        let (manifest, compression) = (manifest.clone(), self.compression);
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
        let task = if self.s3_location.is_some() {
            tokio::spawn(job)
        } else {
            crate::background::spawn(job)
        };
        let produced = task
            .await
            .map_err(|e| Error::internal("snapshot task failed", e))?;
        let (sink, produced) = match produced {
            Ok(done) => done,
            Err(e) => {
                return Err(Error::from_storage_io(
                    format!("failed to write snapshot `{key}`"),
                    e,
                ));
            }
        };
        let stored = self.repo.publish_plain(key, sink, &produced.sha256).await?;
        Ok(stored)
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

    /// Stored snapshots of a scope, newest first.
    async fn list_stored(&self, scope: &Scope) -> Result<Vec<Stored>> {
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

    /// Opens a snapshot for download (after [`SnapshotService::stat`]): its checksum and
    /// the requested bytes.
    pub async fn download(
        &self,
        meta: &ObjectMeta,
        range: Option<Range<u64>>,
    ) -> Result<(Option<String>, ByteStream)> {
        let name = meta.key.file_name();
        if !name.ends_with(names::EXTENSION) {
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

    fn staging_dir(&self) -> Result<PathBuf> {
        match &self.temp_path {
            Some(t) => {
                let dir = t
                    .join(TEMP_STAGING_DIR)
                    .join(uuid::Uuid::new_v4().simple().to_string());
                std::fs::create_dir_all(&dir).map_err(|e| {
                    Error::internal(format!("failed to create `{}`", dir.display()), e)
                })?;
                Ok(dir)
            }
            None => self.registry.new_staging_dir(),
        }
    }

    fn recovery_lock(&self, name: &str) -> Arc<tokio::sync::Mutex<()>> {
        Arc::clone(
            self.recovery_locks
                .lock()
                .entry(name.to_string())
                .or_default(),
        )
    }

    /// Recovers collection `target` from `location` (see [`SnapshotService::open_source`]).
    pub async fn recover(
        &self,
        target: &str,
        dir: &ObjectKey,
        location: &str,
        checksum: Option<String>,
        api_key: Option<&str>,
        progress: Option<Progress>,
    ) -> Result<()> {
        let source = self.open_source(location, dir, api_key).await?;
        if let (Some(p), Some(n)) = (&progress, source.size) {
            p.set_total(n);
        }
        let expected = checksum.or(source.published_sha256);
        self.recover_from_stream(target, source.stream, expected, progress)
            .await
    }

    /// Unpacks a collection snapshot into staging, verifies it, then swaps it in atomically.
    /// On any failure the existing collection is untouched and staging is removed.
    pub async fn recover_from_stream<S>(
        &self,
        target: &str,
        stream: S,
        expected_sha256: Option<String>,
        progress: Option<Progress>,
    ) -> Result<()>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Unpin + Send,
    {
        crate::registry::validate_name(target)?;
        let lock = self.recovery_lock(target);
        let _serialized = lock.lock().await;
        let staging = self.staging_dir()?;
        let started = std::time::Instant::now();
        let result = async {
            let unpacked =
                unpack::unpack(stream, &staging, Some(SnapshotKind::Collection), progress).await?;
            verify_checksum(expected_sha256.as_deref(), &unpacked.sha256)?;
            let (dir, preloaded) = match unpacked.contents {
                unpack::Contents::Ours(_, loaded) => {
                    (staging.clone(), loaded.into_iter().next().map(|(_, p)| p))
                }
                unpack::Contents::Qdrant(staged) => {
                    // Converted into our format beside the staged files, then installed
                    // like our own.
                    let dir = staging.join("converted");
                    convert_qdrant(staged, &dir, target).await?;
                    (dir, None)
                }
                // Only an expected full snapshot is read as one.
                unpack::Contents::QdrantFull(_) => {
                    return Err(Error::bad_input(
                        "invalid snapshot: a full-storage snapshot, not a collection one",
                    ))
                }
            };
            self.check_compatible(target, &dir).await?;
            self.install(target, &dir, preloaded).await?;
            tracing::info!(
                collection = target,
                bytes = unpacked.size,
                seconds = started.elapsed().as_secs_f64(),
                "collection recovered from a snapshot"
            );
            Ok(())
        }
        .await;
        remove_dir_quietly(&staging).await;
        result
    }

    async fn check_compatible(&self, target: &str, dir: &Path) -> Result<()> {
        let Ok(existing) = self.registry.get(target) else {
            return Ok(());
        };
        if existing.name() != target {
            return Err(Error::bad_input(format!(
                "`{target}` is an alias; recover into the collection it points to"
            )));
        }
        let raw = tokio::fs::read(dir.join(CONFIG_FILE))
            .await
            .map_err(|e| Error::internal("failed to read staged config", e))?;
        let snap: CollectionConfig = serde_json::from_slice(&raw)
            .map_err(|e| Error::bad_input(format!("invalid snapshot: config.json: {e}")))?;
        let current = existing.config();
        if current.vectors != snap.vectors {
            return Err(Error::bad_input(format!(
                "Snapshot is not compatible with existing collection: Collection vectors: {} Snapshot Vectors: {}",
                serde_json::to_string(&current.vectors).unwrap_or_default(),
                serde_json::to_string(&snap.vectors).unwrap_or_default()
            )));
        }
        Ok(())
    }

    /// Moves a staged collection next to the storage (if staged elsewhere) and swaps it in.
    async fn install(
        &self,
        target: &str,
        staged: &Path,
        preloaded: Option<crate::collection::loader::Preloaded>,
    ) -> Result<()> {
        let registry = Arc::clone(&self.registry);
        let (target, staged) = (target.to_string(), staged.to_path_buf());
        tokio::task::spawn_blocking(move || {
            let parent = registry.new_staging_dir()?;
            let local = parent.join("collection");
            let result = crate::fsutil::move_dir(&staged, &local)
                .map_err(|e| {
                    Error::internal("failed to move the staged collection into storage", e)
                })
                .and_then(|()| registry.install(&target, &local, preloaded));
            let _ = std::fs::remove_dir_all(&parent);
            result
        })
        .await
        .map_err(|e| Error::internal("install task failed", e))?
    }

    /// Converts and installs each collection of a staged Qdrant full-storage snapshot, then
    /// its aliases; returns the collections' names.
    async fn install_qdrant_full(
        &self,
        full: qdrant::StagedFull,
        staging: &Path,
        force: bool,
    ) -> Result<Vec<String>> {
        if !force {
            let taken = full
                .collections
                .iter()
                .map(|(n, _)| n)
                .chain(full.aliases.keys())
                .find(|n| self.registry.exists(n));
            if let Some(n) = taken {
                return Err(Error::AlreadyExists(format!(
                    "`{n}` already exists. Use --force-snapshot to overwrite it."
                )));
            }
        }
        let mut names = Vec::new();
        for (i, (name, staged)) in full.collections.into_iter().enumerate() {
            crate::registry::validate_name(&name)?;
            let dir = staging.join(format!("converted-{i}"));
            convert_qdrant(staged, &dir, &name).await?;
            self.install(&name, &dir, None).await?;
            names.push(name);
        }
        self.registry.restore_aliases(&full.aliases)?;
        Ok(names)
    }

    /// Recovers a full-storage snapshot (start-up `--storage-snapshot`): every collection and
    /// alias. Without `force`, an existing collection or alias is an error before anything
    /// is changed.
    pub async fn recover_full_from_stream<S>(&self, stream: S, force: bool) -> Result<Vec<String>>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Unpin + Send,
    {
        let staging = self.staging_dir()?;
        let started = std::time::Instant::now();
        let result = async {
            let unpacked = unpack::unpack(stream, &staging, Some(SnapshotKind::Full), None).await?;
            let (m, loaded) = match unpacked.contents {
                unpack::Contents::Ours(m, loaded) => (m, loaded),
                unpack::Contents::QdrantFull(full) => {
                    return self.install_qdrant_full(full, &staging, force).await;
                }
                unpack::Contents::Qdrant(_) => {
                    return Err(Error::bad_input(
                        "invalid snapshot: a collection snapshot, not a full-storage one",
                    ))
                }
            };
            let m = &m;
            if !force {
                for c in &m.collections {
                    if self.registry.exists(&c.name) {
                        return Err(Error::AlreadyExists(format!(
                            "Collection `{}` already exists. Use --force-snapshot to overwrite it.",
                            c.name
                        )));
                    }
                }
                for a in m.aliases.keys() {
                    if self.registry.exists(a) {
                        return Err(Error::AlreadyExists(format!(
                            "Alias `{a}` already exists. Use --force-snapshot to overwrite it."
                        )));
                    }
                }
            }
            let mut loaded: HashMap<String, _> = loaded.into_iter().collect();
            for c in &m.collections {
                self.install(&c.name, &staging.join(&c.dir), loaded.remove(&c.name))
                    .await?;
            }
            self.registry.restore_aliases(&m.aliases)?;
            tracing::info!(
                collections = m.collections.len(),
                bytes = unpacked.size,
                seconds = started.elapsed().as_secs_f64(),
                "storage recovered from a full snapshot"
            );
            Ok(m.collections.iter().map(|c| c.name.clone()).collect())
        }
        .await;
        remove_dir_quietly(&staging).await;
        result
    }
}

/// Builds collection `name` in our format at `dir` from a staged Qdrant snapshot, off the
/// async workers (it reads and writes files).
async fn convert_qdrant(staged: qdrant::Staged, dir: &Path, name: &str) -> Result<()> {
    let (dir, name) = (dir.to_path_buf(), name.to_string());
    tokio::task::spawn_blocking(move || qdrant::build(&staged, &dir, &name))
        .await
        .map_err(|e| Error::internal("conversion task failed", e))?
}

/// Maps a missing object to Qdrant's "Snapshot {name} not found".
fn not_found(name: &str) -> impl FnOnce(BackendError) -> Error + '_ {
    move |e| match e {
        BackendError::NotFound(_) => Error::NotFound(format!("Snapshot {name} not found")),
        other => other.into(),
    }
}

pub(crate) use crate::repository::parse_checksum;

/// Fails with Qdrant's checksum-mismatch error unless `actual` equals `expected`.
pub fn verify_checksum(expected: Option<&str>, actual: &str) -> Result<()> {
    match expected {
        Some(e) if !e.trim().eq_ignore_ascii_case(actual) => Err(Error::ChecksumMismatch {
            expected: e.trim().to_ascii_lowercase(),
            actual: actual.to_string(),
        }),
        _ => Ok(()),
    }
}

async fn remove_dir_quietly(dir: &Path) {
    match tokio::fs::remove_dir_all(dir).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(path = %dir.display(), error = %e, "failed to remove staging directory")
        }
    }
}

/// Removes `X.snapshot.checksum` files whose `X.snapshot` is gone (a delete that removed
/// the snapshot but died before its sidecar).
fn remove_orphan_sidecars(dir: &Path, depth: usize) -> std::io::Result<()> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in rd {
        let entry = entry?;
        let path = entry.path();
        let ft = entry.file_type()?;
        if ft.is_dir() && depth < 4 {
            remove_orphan_sidecars(&path, depth + 1)?;
        } else if ft.is_file() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(snapshot) = name.strip_suffix(".checksum") {
                if snapshot.ends_with(names::EXTENSION) && !dir.join(snapshot).exists() {
                    std::fs::remove_file(&path)?;
                }
            }
        }
    }
    Ok(())
}
