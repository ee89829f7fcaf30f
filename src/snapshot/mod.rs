//! Snapshots, one task per part, over the repository (as restic's archiver and restorer sit
//! over its repository):
//! * [`create::Creator`]: pin a scope → stream the tar into the repository, retention;
//! * [`recover::Recoverer`]: stream → staging → verify → atomic swap;
//! * [`sources::Sources`]: where a recovery reads from (`file://`, `http(s)://`, `s3://`,
//!   stored names);
//! * [`catalog::Catalog`]: listing, metadata, download and deletion of stored snapshots.
//!
//! Below them: the tar producer and the safe unpacker, the archive format and compression,
//! and Qdrant's snapshot format, converted on recovery.

pub(crate) mod catalog;
pub mod codec;
pub(crate) mod create;
pub(crate) mod format;
pub(crate) mod names;
pub mod producer;
pub(crate) mod qdrant;
pub(crate) mod recover;
pub(crate) mod sources;
pub mod unpack;

pub(crate) use catalog::Catalog;
pub(crate) use create::Creator;
pub(crate) use recover::Recoverer;
pub(crate) use sources::Sources;

use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Serialize, Serializer};

use crate::backend::{BackendError, DynBackend, ObjectKey};
use crate::collection::registry::Registry;
use crate::error::{Error, Result};
use crate::repository::{Repository, Stored};

/// Qdrant's `SnapshotDescription`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SnapshotDescription {
    /// File name.
    pub name: String,
    /// When it was taken; never null. Qdrant's JSON writes it `YYYY-MM-DDTHH:MM:SS` (UTC).
    #[serde(serialize_with = "qdrant_time")]
    pub creation_time: DateTime<Utc>,
    /// Bytes.
    pub size: u64,
    /// Hex SHA-256, when the sidecar exists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
}

/// Qdrant's form of a snapshot's time in JSON: UTC to the second, without a zone.
fn qdrant_time<S: Serializer>(t: &DateTime<Utc>, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.collect_str(&t.format("%Y-%m-%dT%H:%M:%S"))
}

fn describe(s: &Stored) -> SnapshotDescription {
    SnapshotDescription {
        name: s.key.file_name().to_string(),
        creation_time: s.created,
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
pub(crate) enum Priority {
    /// Prefer the snapshot's data (the default).
    Snapshot,
    /// Prefer existing replicas' data.
    Replica,
    /// No synchronization.
    NoSync,
}

/// Settings of the snapshot engine, from the configuration.
#[derive(Clone, Debug)]
pub struct SnapshotSettings {
    /// How snapshots are created.
    pub create: create::CreateSettings,
    /// Where recoveries may read from.
    pub sources: sources::SourceSettings,
    /// `storage.temp_path`, if set: recovery staging goes there.
    pub temp_path: Option<PathBuf>,
}

/// The snapshot engine: one part per task, sharing the repository.
#[derive(Clone, Debug)]
pub struct Engine {
    /// The repository over the storage backend.
    pub repo: Arc<Repository>,
    /// Listing, metadata, download and deletion.
    pub catalog: Catalog,
    /// Creation.
    pub creator: Arc<Creator>,
    /// Recovery.
    pub recoverer: Arc<Recoverer>,
    /// Recovery sources.
    pub sources: Arc<Sources>,
}

impl Engine {
    /// The engine over `repo` for `registry`'s collections.
    pub fn new(
        registry: Arc<Registry>,
        repo: Arc<Repository>,
        settings: SnapshotSettings,
    ) -> Result<Self> {
        Ok(Engine {
            catalog: Catalog::new(Arc::clone(&repo)),
            creator: Arc::new(Creator::new(
                Arc::clone(&registry),
                Arc::clone(&repo),
                settings.create,
            )),
            recoverer: Arc::new(Recoverer::new(registry, settings.temp_path)),
            sources: Arc::new(Sources::new(Arc::clone(&repo), settings.sources)?),
            repo,
        })
    }

    /// The storage backend.
    pub fn backend(&self) -> &DynBackend {
        self.repo.backend()
    }

    /// Removes leftovers of interrupted work (in storage: temp files, multipart uploads,
    /// orphaned sidecars, pieces of interrupted creates; on disk: recovery staging) and
    /// starts the piece collector.
    pub async fn startup_cleanup(&self) -> Result<()> {
        let removed = self.repo.startup_cleanup().await?;
        if removed > 0 {
            tracing::info!(removed, backend = %self.backend(), "removed leftovers of interrupted snapshot writes");
        }
        self.recoverer.startup_cleanup().await
    }
}

/// Maps a missing object to Qdrant's "Snapshot {name} not found".
fn not_found(name: &str) -> impl FnOnce(BackendError) -> Error + '_ {
    move |e| match e {
        BackendError::NotFound(_) => Error::NotFound(format!("Snapshot {name} not found")),
        other => other.into(),
    }
}

/// Fails with Qdrant's checksum-mismatch error unless `actual` equals `expected`.
pub(crate) fn verify_checksum(expected: Option<&str>, actual: &str) -> Result<()> {
    match expected {
        Some(e) if !e.trim().eq_ignore_ascii_case(actual) => Err(Error::ChecksumMismatch {
            expected: e.trim().to_ascii_lowercase(),
            actual: actual.to_string(),
        }),
        _ => Ok(()),
    }
}
