//! The snapshot repository: how snapshots are laid out in a storage backend, above the
//! plain object store and below the snapshot service. Two layouts live side by side:
//!
//! * plain: `{dir}/{name}.snapshot` (the tar itself) plus `{name}.snapshot.checksum`;
//! * incremental: `{dir}/{name}.snapshot.manifest` (the tar's entries and SHA-256) plus
//!   content-addressed pieces under `.repository/pieces/`, shared by every snapshot that
//!   holds the same bytes and removed by the collector once no manifest refers to them.
//!
//! Listing, stat, download and delete treat both alike; a download of either is the same
//! kind of plain tar. Documented in `docs/snapshot-format.md`.

pub(crate) mod backups;
pub(crate) mod chunks;
pub(crate) mod collector;
pub(crate) mod damage;
pub(crate) mod hashing;
pub(crate) mod layout;
pub(crate) mod lease;
pub(crate) mod linked;
pub(crate) mod manifest;
pub(crate) mod pack_repair;
pub(crate) mod pieces;
mod plain;
mod resume;
pub(crate) mod verify;
pub(crate) mod writer;

use std::collections::HashSet;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};

use crate::backend::encryption::Keyring;
use crate::backend::{BackendError, ByteStream, DynBackend, ObjectKey, ObjectSink};
use crate::io::progress::Progress;
use collector::Collected;
use lease::Leases;
use manifest::{Manifest, MAX_MANIFEST_SIZE};
pub use writer::Archive;
pub(crate) use writer::{ArchiveEntry, Source};

/// The extension of snapshot names.
pub(crate) const EXTENSION: &str = ".snapshot";
/// Suffix of incremental snapshots' manifests (`{name}.snapshot.manifest`).
pub(crate) const MANIFEST_SUFFIX: &str = ".snapshot.manifest";
/// A lease not refreshed for this long belongs to a dead process.
pub(crate) const LEASE_TTL: Duration = Duration::from_secs(20);
/// A collection that could not run (a create held a lease, or the storage failed) is
/// retried after this long.
const COLLECT_RETRY: Duration = Duration::from_secs(2);

/// How a snapshot is stored.
#[derive(Clone, Debug)]
pub enum Layout {
    /// One tar object.
    Plain,
    /// A manifest over shared pieces.
    Incremental(Arc<Manifest>),
}

/// A stored snapshot as listed.
#[derive(Clone, Debug)]
pub struct Stored {
    /// Its key (`{dir}/{name}.snapshot`, whatever the layout).
    pub key: ObjectKey,
    /// The tar's length.
    pub size: u64,
    /// When it was taken (the plain object's modification time).
    pub created: DateTime<Utc>,
    /// Hex SHA-256 of the tar, when known.
    pub checksum: Option<String>,
    /// How it is stored.
    pub layout: Layout,
}

/// The key of a snapshot's manifest.
pub fn manifest_key(key: &ObjectKey) -> Result<ObjectKey, BackendError> {
    Ok(ObjectKey::new(format!("{key}.manifest"))?)
}

/// A published checksum (sidecar text): 64 hex digits, whitespace ignored.
pub(crate) fn parse_checksum(text: &str) -> Option<String> {
    let t = text.trim();
    hashing::is_hex_digest(t).then(|| t.to_ascii_lowercase())
}

/// Snapshots in one storage backend.
#[derive(Debug)]
pub struct Repository {
    pub(crate) backend: DynBackend,
    /// Pieces known damaged, shared by every read and create of this repository.
    pub(crate) damage: Arc<damage::Damage>,
    /// Whether new pieces are stored zstd-compressed.
    compress_pieces: bool,
    /// The encrypted storage's keys (piece names are keyed hashes then).
    keyring: Option<Arc<Keyring>>,
    /// Whether sealed files are linked into the storage rather than copied.
    link_files: bool,
    incremental: bool,
    pub(crate) leases: Leases,
    collect_wanted: Arc<tokio::sync::Notify>,
    /// Where each snapshot directory's last tar can be resumed.
    resumes: resume::Resumes,
}

impl Repository {
    /// A repository over `backend`; new snapshots are incremental when `incremental`.
    pub fn new(backend: DynBackend, incremental: bool) -> Self {
        Self::with_lease_ttl(backend, incremental, LEASE_TTL)
    }

    /// As [`Repository::new`] with another lease time to live (tests of crashes).
    pub fn with_lease_ttl(backend: DynBackend, incremental: bool, ttl: Duration) -> Self {
        Repository {
            leases: Leases::new(Arc::clone(&backend), ttl),
            damage: damage::Damage::new(Arc::clone(&backend)),
            compress_pieces: false,
            keyring: None,
            link_files: false,
            backend,
            incremental,
            collect_wanted: Arc::new(tokio::sync::Notify::new()),
            resumes: resume::Resumes::default(),
        }
    }

    /// Stores new pieces zstd-compressed when `on` (`storage.snapshots_config.compression`
    /// other than `none`); reads take both kinds whatever this says.
    pub fn with_piece_compression(mut self, on: bool) -> Self {
        self.compress_pieces = on;
        self
    }

    /// Names pieces with the keys of `keyring` (the one the storage's encryption uses).
    pub fn with_keyring(mut self, keyring: Option<Arc<Keyring>>) -> Self {
        self.keyring = keyring;
        self
    }

    /// Links sealed segments into the storage instead of copying them when `on` (local
    /// storage on the collections' filesystem, checked by the caller; a file that cannot be
    /// linked after all is copied).
    pub fn with_linked_files(mut self, on: bool) -> Self {
        self.link_files = on;
        self
    }

    /// How this repository names its pieces.
    pub(crate) async fn piece_names(&self) -> Result<pieces::PieceNames, BackendError> {
        pieces::PieceNames::of(self.keyring.as_deref()).await
    }

    /// What a create builds on: the stored pieces, the known damage, the piece codec.
    pub(crate) async fn inventory(&self) -> Result<damage::Inventory, BackendError> {
        let names = self.piece_names().await?;
        damage::Inventory::take(
            &self.backend,
            &self.damage,
            self.compress_pieces,
            names,
            self.link_files && self.incremental,
        )
        .await
    }

    /// The storage backend.
    pub fn backend(&self) -> &DynBackend {
        &self.backend
    }

    /// Whether new snapshots are incremental.
    pub fn incremental(&self) -> bool {
        self.incremental
    }

    /// Whether a snapshot named by `key` exists in either layout.
    pub async fn exists(&self, key: &ObjectKey) -> Result<bool, BackendError> {
        for k in [key.clone(), manifest_key(key)?] {
            match self.backend.stat(&k).await {
                Ok(_) => return Ok(true),
                Err(BackendError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(false)
    }

    async fn read_manifest(&self, mkey: &ObjectKey) -> Result<Manifest, BackendError> {
        let bytes = pieces::get_small(&self.backend, mkey, MAX_MANIFEST_SIZE).await?;
        Manifest::parse(&bytes).map_err(|e| BackendError::Io {
            action: "failed to read",
            path: mkey.to_string(),
            source: std::io::Error::other(e),
        })
    }

    fn incremental_stored(key: ObjectKey, m: Manifest) -> Stored {
        let created = DateTime::parse_from_rfc3339(&m.created_at)
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default();
        Stored {
            key,
            size: m.size,
            created,
            checksum: Some(m.sha256.clone()),
            layout: Layout::Incremental(Arc::new(m)),
        }
    }

    /// Snapshots directly under `dir`, in no particular order. A plain snapshot whose
    /// sidecar cannot be read is listed without a checksum; an unreadable manifest hides
    /// only its own snapshot (logged).
    pub async fn list(&self, dir: Option<&ObjectKey>) -> Result<Vec<Stored>, BackendError> {
        let objects = self.backend.list(dir).await?;
        let names: HashSet<&str> = objects.iter().map(|m| m.key.as_str()).collect();
        let mut out = Vec::new();
        for m in &objects {
            let k = m.key.as_str();
            if plain::is_snapshot(&m.key) {
                let checksum = if plain::has_sidecar(&m.key, &names) {
                    plain::read_sidecar(&self.backend, &m.key).await
                } else {
                    None
                };
                out.push(plain::stored(m.clone(), checksum));
            } else if let Some(plain) = k.strip_suffix(".manifest") {
                if !plain.ends_with(EXTENSION) || names.contains(plain) {
                    continue;
                }
                let key = ObjectKey::new(plain)?;
                match self.read_manifest(&m.key).await {
                    Ok(manifest) => out.push(Self::incremental_stored(key, manifest)),
                    Err(BackendError::NotFound(_)) => {}
                    Err(e) => {
                        tracing::warn!(manifest = %m.key, error = %e, "snapshot manifest unreadable; not listed")
                    }
                }
            }
        }
        Ok(out)
    }

    /// The snapshot stored under `key`, in either layout.
    pub async fn stat(&self, key: &ObjectKey) -> Result<Stored, BackendError> {
        match self.backend.stat(key).await {
            Ok(m) => {
                return Ok(plain::stored(
                    m,
                    plain::read_sidecar(&self.backend, key).await,
                ))
            }
            Err(BackendError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        let manifest = self.read_manifest(&manifest_key(key)?).await?;
        Ok(Self::incremental_stored(key.clone(), manifest))
    }

    /// The bytes `range` (clamped to its size) of the tar a manifest stands for.
    pub async fn open_manifest(
        &self,
        label: String,
        m: Arc<Manifest>,
        range: Option<Range<u64>>,
    ) -> Result<ByteStream, BackendError> {
        layout::read(self.pieces(label).await?, m, range).await
    }

    /// A reader of this repository's pieces for the snapshot (or backup) named `label`.
    pub(crate) async fn pieces(&self, label: String) -> Result<layout::PieceReader, BackendError> {
        Ok(layout::PieceReader {
            backend: Arc::clone(&self.backend),
            damage: Arc::clone(&self.damage),
            names: self.piece_names().await?,
            label,
        })
    }

    /// The bytes `range` (clamped to the size) of a stored snapshot's tar.
    pub async fn open(
        &self,
        stored: &Stored,
        range: Option<Range<u64>>,
    ) -> Result<ByteStream, BackendError> {
        let range = range.map(|r| r.start..r.end.min(stored.size));
        match &stored.layout {
            Layout::Plain => self.backend.open(&stored.key, range).await,
            Layout::Incremental(m) => {
                layout::read(
                    self.pieces(stored.key.to_string()).await?,
                    Arc::clone(m),
                    range,
                )
                .await
            }
        }
    }

    /// Deletes a snapshot: the plain object and its sidecar, or the manifest (its pieces
    /// go with the next collection, if no other snapshot shares them).
    pub async fn delete(&self, key: &ObjectKey) -> Result<(), BackendError> {
        match plain::delete(&self.backend, key).await {
            Ok(()) => Ok(()),
            Err(BackendError::NotFound(_)) => {
                self.backend.delete(&manifest_key(key)?).await?;
                self.request_collection();
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Starts writing a plain snapshot's tar under `key` (reserved by the caller), of
    /// about `size_hint` bytes; nothing is visible before [`Repository::publish_plain`].
    pub async fn begin_plain(
        &self,
        key: &ObjectKey,
        size_hint: u64,
    ) -> Result<Box<dyn ObjectSink>, BackendError> {
        plain::begin(&self.backend, key, size_hint).await
    }

    /// Commits a plain snapshot written into `sink` (from [`Repository::begin_plain`]),
    /// then its checksum sidecar; a failure leaves nothing listed.
    pub async fn publish_plain(
        &self,
        key: &ObjectKey,
        sink: Box<dyn ObjectSink>,
        sha256: &str,
    ) -> Result<Stored, BackendError> {
        plain::publish(&self.backend, key, sink, sha256).await
    }

    /// Removes what interrupted work left in storage (hidden temp files, multipart
    /// uploads, sidecars of deleted snapshots) and starts the collector, which removes the
    /// pieces of interrupted incremental creates. Returns how many leftovers were removed.
    pub async fn startup_cleanup(self: &Arc<Self>) -> Result<usize, BackendError> {
        let removed =
            self.backend.cleanup().await? + plain::sweep_orphan_sidecars(&self.backend).await?;
        self.spawn_collector();
        self.request_collection();
        Ok(removed)
    }

    /// Creates an incremental snapshot under `key` (reserved by the caller): uploads the
    /// pieces the storage lacks, then commits the manifest. A failure commits nothing; the
    /// pieces it uploaded are collected later.
    pub async fn create_incremental(
        &self,
        key: &ObjectKey,
        archive: Archive,
        progress: Option<Progress>,
    ) -> Result<Stored, BackendError> {
        let lease = self.leases.acquire_create().await?;
        let result = async {
            let known = self.inventory().await?;
            // Snapshots of the same collections live in one directory.
            let dir = key.as_str().rsplit_once('/').map_or("", |(dir, _)| dir);
            let resume = (&self.resumes, dir);
            let written = writer::write(&self.backend, archive, known, progress, resume).await?;
            let json = serde_json::to_vec(&written.manifest).map_err(|e| BackendError::Io {
                action: "failed to serialize",
                path: key.to_string(),
                source: std::io::Error::other(e),
            })?;
            lease.check()?;
            self.backend
                .put_if_absent(&manifest_key(key)?, Bytes::from(json))
                .await?;
            tracing::info!(
                snapshot = %key,
                pieces_uploaded = written.uploaded,
                bytes_uploaded = written.uploaded_bytes,
                files_linked = written.linked,
                bytes = written.manifest.size,
                bytes_resumed = written.resumed,
                "incremental snapshot stored"
            );
            Ok(Self::incremental_stored(key.clone(), written.manifest))
        }
        .await;
        lease.release().await;
        if result.is_err() {
            self.request_collection();
        }
        result
    }

    /// Collects unreferenced pieces once; `None` when a create is running.
    pub async fn collect(&self) -> Result<Option<Collected>, BackendError> {
        collector::collect(&self.backend, &self.leases).await
    }

    /// Asks the background collector (see [`Repository::spawn_collector`]) to run soon.
    pub fn request_collection(&self) {
        self.collect_wanted.notify_one();
    }

    /// Runs the collector in the background whenever asked (deletes, failed creates,
    /// start-up), retrying every 2 s while creates hold leases or the storage fails.
    pub fn spawn_collector(self: &Arc<Self>) {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                this.collect_wanted.notified().await;
                loop {
                    match this.collect().await {
                        Ok(Some(c)) => {
                            if c.removed > 0 {
                                tracing::info!(
                                    removed = c.removed,
                                    kept = c.kept,
                                    manifests = c.manifests,
                                    "snapshot pieces collected"
                                );
                            }
                            break;
                        }
                        Ok(None) => {}
                        Err(e) => {
                            tracing::warn!(error = %e, "snapshot garbage collection failed; retrying")
                        }
                    }
                    tokio::time::sleep(COLLECT_RETRY).await;
                }
            }
        });
    }
}
