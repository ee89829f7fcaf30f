//! Recovering collections from snapshot archives: stream → staging → verify → atomic swap.
//! Our archives and Qdrant's (converted into our format) alike; on any failure the
//! existing collection is untouched and staging is removed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::Stream;
use parking_lot::Mutex;

use super::format::{Manifest, SnapshotKind};
use super::{qdrant, unpack, verify_checksum};
use crate::collection::config::CollectionConfig;
use crate::collection::loader::Preloaded;
use crate::collection::registry::{validate_name, Registry};
use crate::collection::CONFIG_FILE;
use crate::error::{Error, Result};
use crate::io::progress::Progress;

/// Where recovery staging goes under `storage.temp_path`.
const TEMP_STAGING_DIR: &str = "snapstream-staging";

/// Recovers snapshots into the registry's collections.
#[derive(Debug)]
pub struct Recoverer {
    registry: Arc<Registry>,
    /// `storage.temp_path`, if set: staging goes there instead of beside the collections.
    temp_path: Option<PathBuf>,
    /// One recovery at a time per target collection.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Recoverer {
    /// A recoverer into `registry`, staging under `temp_path` when given.
    pub fn new(registry: Arc<Registry>, temp_path: Option<PathBuf>) -> Self {
        Recoverer {
            registry,
            temp_path,
            locks: Mutex::new(HashMap::new()),
        }
    }

    /// Removes the staging of recoveries a stop interrupted under `temp_path` (staging
    /// inside the storage is the registry's to clean).
    pub async fn startup_cleanup(&self) -> Result<()> {
        let Some(staging) = self.temp_path.as_ref().map(|t| t.join(TEMP_STAGING_DIR)) else {
            return Ok(());
        };
        match tokio::fs::remove_dir_all(&staging).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::internal(
                format!("failed to remove recovery staging `{}`", staging.display()),
                e,
            )),
        }
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

    /// The lock that serializes recoveries into `name`; locks nobody holds are dropped.
    fn lock_for(&self, name: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock();
        locks.retain(|_, l| Arc::strong_count(l) > 1);
        Arc::clone(locks.entry(name.to_string()).or_default())
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
        validate_name(target)?;
        let lock = self.lock_for(target);
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
        preloaded: Option<Preloaded>,
    ) -> Result<()> {
        let registry = Arc::clone(&self.registry);
        let (target, staged) = (target.to_string(), staged.to_path_buf());
        tokio::task::spawn_blocking(move || {
            let parent = registry.new_staging_dir()?;
            let local = parent.join("collection");
            let result = crate::io::fs::move_dir(&staged, &local)
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

    /// Without `force`, fails before anything changes if one of `names` (collections and
    /// aliases) exists; `what` names the kind of each in the message.
    fn check_free<'a>(
        &self,
        force: bool,
        names: impl IntoIterator<Item = (&'static str, &'a str)>,
    ) -> Result<()> {
        if force {
            return Ok(());
        }
        match names.into_iter().find(|(_, n)| self.registry.exists(n)) {
            Some((what, n)) => Err(Error::AlreadyExists(format!(
                "{what}`{n}` already exists. Use --force-snapshot to overwrite it."
            ))),
            None => Ok(()),
        }
    }

    /// Converts and installs each collection of a staged Qdrant full-storage snapshot, then
    /// its aliases; returns the collections' names.
    async fn install_qdrant_full(
        &self,
        full: qdrant::StagedFull,
        staging: &Path,
        force: bool,
    ) -> Result<Vec<String>> {
        let names = full.collections.iter().map(|(n, _)| ("", n.as_str()));
        self.check_free(
            force,
            names.chain(full.aliases.keys().map(|a| ("", a.as_str()))),
        )?;
        let mut names = Vec::new();
        for (i, (name, staged)) in full.collections.into_iter().enumerate() {
            validate_name(&name)?;
            let dir = staging.join(format!("converted-{i}"));
            convert_qdrant(staged, &dir, &name).await?;
            self.install(&name, &dir, None).await?;
            names.push(name);
        }
        self.registry.restore_aliases(&full.aliases)?;
        Ok(names)
    }

    /// Installs every collection of one of our full snapshots, staged at `staging`, then
    /// its aliases; returns the collections' names.
    async fn install_full(
        &self,
        m: &Manifest,
        loaded: Vec<(String, Preloaded)>,
        staging: &Path,
        force: bool,
    ) -> Result<Vec<String>> {
        let collections = m
            .collections
            .iter()
            .map(|c| ("Collection ", c.name.as_str()));
        let aliases = m.aliases.keys().map(|a| ("Alias ", a.as_str()));
        self.check_free(force, collections.chain(aliases))?;
        let mut loaded: HashMap<String, _> = loaded.into_iter().collect();
        for c in &m.collections {
            self.install(&c.name, &staging.join(&c.dir), loaded.remove(&c.name))
                .await?;
        }
        self.registry.restore_aliases(&m.aliases)?;
        Ok(m.collections.iter().map(|c| c.name.clone()).collect())
    }

    /// Recovers a full-storage snapshot (start-up `--storage-snapshot`): every collection and
    /// alias. Without `force`, an existing collection or alias is an error before anything
    /// is changed.
    pub async fn recover_full_from_stream<S>(
        &self,
        stream: S,
        force: bool,
        progress: Option<Progress>,
    ) -> Result<Vec<String>>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Unpin + Send,
    {
        let staging = self.staging_dir()?;
        let started = std::time::Instant::now();
        let result = async {
            let unpacked =
                unpack::unpack(stream, &staging, Some(SnapshotKind::Full), progress).await?;
            let names = match unpacked.contents {
                unpack::Contents::Ours(m, loaded) => {
                    self.install_full(&m, loaded, &staging, force).await?
                }
                unpack::Contents::QdrantFull(full) => {
                    return self.install_qdrant_full(full, &staging, force).await;
                }
                unpack::Contents::Qdrant(_) => {
                    return Err(Error::bad_input(
                        "invalid snapshot: a collection snapshot, not a full-storage one",
                    ))
                }
            };
            tracing::info!(
                collections = names.len(),
                bytes = unpacked.size,
                seconds = started.elapsed().as_secs_f64(),
                "storage recovered from a full snapshot"
            );
            Ok(names)
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

async fn remove_dir_quietly(dir: &Path) {
    match tokio::fs::remove_dir_all(dir).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(path = %dir.display(), error = %e, "failed to remove staging directory")
        }
    }
}
