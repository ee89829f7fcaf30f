//! Backups of Qdrant deployments in the repository: one object per backup,
//! `.backups/{source}/{id}.backup`, holding the backup's record (opaque here) and the
//! manifest of every shard archive it holds. The shards' files share the repository's
//! content-addressed pieces with incremental snapshots and with each other; the object is
//! written last, under a create lease, so a backup exists exactly when it is complete, and
//! the pieces of one that never finished are collected like those of a failed create.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use futures::{FutureExt, StreamExt};

use super::chunks::{self, Table};
use super::damage::Inventory;
use super::layout::PieceReader;
use super::lease::Lease;
use super::manifest::{InvalidManifest, Manifest, TableRef, MAX_MANIFEST_SIZE};
use super::pack_repair::RepairPlan;
use super::writer::ManifestBuilder;
use super::{pieces, Repository};
use crate::backend::{BackendError, BackendExt, DynBackend, ObjectKey};
use crate::io::progress::Progress;

/// The directory of backups, beside `.repository/`: no collection name starts with `.`.
pub(crate) const BACKUPS_DIR: &str = ".backups";
/// Suffix of backup objects.
pub(crate) const BACKUP_SUFFIX: &str = ".backup";
/// Value of `format`.
const FORMAT: &str = "snapstream-backup";
/// The only version this build reads and writes.
const VERSION: u32 = 1;
/// Pieces of shard files: cut per file and smaller than snapshots' 4 MiB, so that a
/// change to a few points of a large file stores little (measured on Qdrant 1.19 shards:
/// 1 MiB pieces per file held 3.1-3.7% new bytes after 1% of the points changed).
pub(crate) const SHARD_PIECE_SIZE: u64 = 1 << 20;
/// Chunk tables read at once to index an earlier backup's chunks.
const TABLES_IN_FLIGHT: usize = 8;

/// A stored backup: its record and its shards' manifests, keyed `{collection}/{shard}`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StoredBackup {
    /// Always `snapstream-backup`.
    pub format: String,
    /// Always 1 for this build.
    pub version: u32,
    /// What the backup layer recorded (its REST shape).
    pub record: Value,
    /// What else the backup layer keeps for restoring (sampled points), opaque here.
    #[serde(default)]
    pub details: Value,
    /// Each shard archive, by `{collection}/{shard}`.
    pub shards: BTreeMap<String, Manifest>,
}

impl StoredBackup {
    /// A backup of `record` over `shards`.
    pub fn new(record: Value, details: Value, shards: BTreeMap<String, Manifest>) -> Self {
        StoredBackup {
            format: FORMAT.into(),
            version: VERSION,
            record,
            details,
            shards,
        }
    }

    /// Parses a stored backup and checks each of its manifests.
    pub fn parse(bytes: &[u8]) -> Result<Self, InvalidManifest> {
        let b: StoredBackup =
            serde_json::from_slice(bytes).map_err(|e| InvalidManifest(e.to_string()))?;
        if b.format != FORMAT || b.version != VERSION {
            return Err(InvalidManifest(format!(
                "backup format `{}` version {} (this build reads `{FORMAT}` version {VERSION})",
                b.format, b.version
            )));
        }
        for m in b.shards.values() {
            Manifest::parse(&serde_json::to_vec(m).map_err(|e| InvalidManifest(e.to_string()))?)?;
        }
        Ok(b)
    }

    /// Every piece its shards refer to (with repeats).
    pub fn pieces(&self) -> impl Iterator<Item = &str> {
        self.shards.values().flat_map(Manifest::pieces)
    }
}

/// The chunks of the files of `manifest`, read from their tables through `reader`, and the
/// repairs of its packs for which `unsound` holds (damaged or missing); a table that cannot
/// be read only means its chunks may be stored again.
pub(crate) async fn index_of(
    reader: PieceReader,
    manifest: &Manifest,
    unsound: &(dyn Fn(&str) -> bool + Sync),
) -> chunks::Index {
    let tables: Vec<(TableRef, Arc<[String]>)> = manifest
        .entries
        .iter()
        .filter(|e| !e.tables.is_empty())
        .flat_map(|e| {
            let packs: Arc<[String]> = Arc::from(e.pieces.as_slice());
            e.tables
                .iter()
                .map(move |t| (t.clone(), Arc::clone(&packs)))
        })
        .collect();
    let read: Vec<Result<Table, String>> = futures::stream::iter(tables)
        .map(|(t, packs)| {
            let reader = reader.clone();
            async move {
                let bytes = reader.table(&t.0).await.map_err(|e| e.to_string())?;
                Table::parse(&bytes, t.1, &packs)
            }
            .boxed()
        })
        .buffer_unordered(TABLES_IN_FLIGHT)
        .collect()
        .await;
    let mut index = chunks::Index::default();
    let mut repairs = RepairPlan::default();
    for table in read {
        match table {
            Ok(t) => {
                chunks::index_table(&mut index.stored, &t);
                repairs.add(&t, unsound);
            }
            Err(e) => tracing::warn!(
                error = %e,
                "a chunk table of the last backup is unreadable; its chunks are stored again"
            ),
        }
    }
    index.repairs = repairs.build();
    index
}

/// The directory of `source`'s backups.
fn source_dir(source: &str) -> Result<ObjectKey, BackendError> {
    Ok(ObjectKey::new(format!("{BACKUPS_DIR}/{source}"))?)
}

/// The key of backup `id` of `source`.
fn backup_key(source: &str, id: &str) -> Result<ObjectKey, BackendError> {
    Ok(ObjectKey::new(format!(
        "{BACKUPS_DIR}/{source}/{id}{BACKUP_SUFFIX}"
    ))?)
}

/// Suffix of the directory of a backup's restore journals.
const JOURNAL_DIR_SUFFIX: &str = ".restoring";

/// The key of journal `name` of restores of backup `id` of `source`.
fn journal_key(source: &str, id: &str, name: &str) -> Result<ObjectKey, BackendError> {
    Ok(ObjectKey::new(format!(
        "{BACKUPS_DIR}/{source}/{id}{JOURNAL_DIR_SUFFIX}/{name}.json"
    ))?)
}

/// Whether `key` is a backup object.
pub(crate) fn is_backup(key: &ObjectKey) -> bool {
    let k = key.as_str();
    k.starts_with(BACKUPS_DIR) && k.ends_with(BACKUP_SUFFIX)
}

fn unreadable(key: &ObjectKey, e: impl std::fmt::Display) -> BackendError {
    BackendError::Io {
        action: "failed to read",
        path: key.to_string(),
        source: std::io::Error::other(e.to_string()),
    }
}

/// A backup being written: holds a create lease (the collector waits) and the pieces
/// stored when it began. Commit it with [`BackupSession::commit`].
#[derive(Debug)]
pub struct BackupSession {
    backend: DynBackend,
    lease: Lease,
    known: Inventory,
}

impl BackupSession {
    /// A builder for one shard archive, its files cut in content-defined chunks; pieces
    /// already stored, and the chunks of `index`, are not uploaded again.
    pub(crate) fn builder(
        &self,
        progress: Option<Progress>,
        created_at: DateTime<Utc>,
        index: chunks::Index,
    ) -> ManifestBuilder {
        let mut b = ManifestBuilder::new(
            &self.backend,
            self.known.clone(),
            progress,
            created_at,
            SHARD_PIECE_SIZE,
        );
        b.chunk_with(index);
        b
    }

    /// The chunks of the files of `manifest` (an earlier archive of the shard): see
    /// [`index_of`].
    pub(crate) async fn chunk_index(&self, manifest: &Manifest) -> chunks::Index {
        let reader = PieceReader {
            backend: Arc::clone(&self.backend),
            damage: Arc::clone(&self.known.damage),
            names: self.known.names.clone(),
            label: "the last backup of this shard".to_string(),
        };
        index_of(reader, manifest, &|p| !self.sound(p)).await
    }

    /// Whether piece `hash` was stored before this backup began and is not known damaged.
    pub(crate) fn sound(&self, hash: &str) -> bool {
        self.known.sound.contains(hash) && !self.known.damage.contains(hash)
    }

    /// Writes the backup object: the commit point. Refused if the lease was lost.
    pub async fn commit(
        self,
        source: &str,
        id: &str,
        backup: &StoredBackup,
    ) -> Result<u64, BackendError> {
        let key = backup_key(source, id)?;
        let json = serde_json::to_vec(backup).map_err(|e| unreadable(&key, e))?;
        let len = json.len() as u64;
        let result = async {
            self.lease.check()?;
            self.backend.put_if_absent(&key, Bytes::from(json)).await
        }
        .await;
        self.lease.release().await;
        result.map(|_| len)
    }

    /// Gives up: nothing is committed; the pieces written are collected later.
    pub async fn abandon(self) {
        self.lease.release().await;
    }
}

impl Repository {
    /// Starts a backup: takes a create lease and lists the stored pieces.
    pub async fn begin_backup(&self) -> Result<BackupSession, BackendError> {
        let lease = self.leases.acquire_create().await?;
        match self.inventory().await {
            Ok(known) => Ok(BackupSession {
                backend: Arc::clone(&self.backend),
                lease,
                known,
            }),
            Err(e) => {
                lease.release().await;
                Err(e)
            }
        }
    }

    /// Every backup of `source`, by id, in no particular order. An unreadable one is
    /// logged and left out.
    pub async fn list_backups(
        &self,
        source: &str,
    ) -> Result<Vec<(String, StoredBackup)>, BackendError> {
        let objects = self.backend.list(Some(&source_dir(source)?)).await?;
        let mut out = Vec::new();
        for m in objects {
            let Some(id) = m.key.file_name().strip_suffix(BACKUP_SUFFIX) else {
                continue;
            };
            match self.read_backup_at(&m.key).await {
                Ok(b) => out.push((id.to_string(), b)),
                Err(BackendError::NotFound(_)) => {}
                Err(e) => {
                    tracing::warn!(backup = %m.key, error = %e, "backup unreadable; not listed")
                }
            }
        }
        Ok(out)
    }

    /// The ids of `source`'s backups (nothing read but the listing).
    pub async fn backup_ids(&self, source: &str) -> Result<Vec<String>, BackendError> {
        let objects = self.backend.list(Some(&source_dir(source)?)).await?;
        Ok(objects
            .iter()
            .filter_map(|m| {
                m.key
                    .file_name()
                    .strip_suffix(BACKUP_SUFFIX)
                    .map(str::to_string)
            })
            .collect())
    }

    /// Backup `id` of `source`.
    pub async fn read_backup(&self, source: &str, id: &str) -> Result<StoredBackup, BackendError> {
        self.read_backup_at(&backup_key(source, id)?).await
    }

    async fn read_backup_at(&self, key: &ObjectKey) -> Result<StoredBackup, BackendError> {
        let bytes = pieces::get_small(&self.backend, key, MAX_MANIFEST_SIZE).await?;
        StoredBackup::parse(&bytes).map_err(|e| unreadable(key, e))
    }

    /// Journal `name` of a restore of backup `id` of `source` in progress, if any.
    pub async fn restore_journal(
        &self,
        source: &str,
        id: &str,
        name: &str,
    ) -> Result<Option<Value>, BackendError> {
        let key = journal_key(source, id, name)?;
        match pieces::get_small(&self.backend, &key, 1 << 20).await {
            Ok(b) => Ok(Some(
                serde_json::from_slice(&b).map_err(|e| unreadable(&key, e))?,
            )),
            Err(BackendError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes (replaces) journal `name` of a restore of backup `id` of `source`.
    pub async fn write_restore_journal(
        &self,
        source: &str,
        id: &str,
        name: &str,
        journal: &Value,
    ) -> Result<(), BackendError> {
        let key = journal_key(source, id, name)?;
        let bytes = serde_json::to_vec(journal).map_err(|e| unreadable(&key, e))?;
        self.backend.put(&key, Bytes::from(bytes)).await.map(drop)
    }

    /// Removes journal `name`: that restore finished.
    pub async fn end_restore_journal(
        &self,
        source: &str,
        id: &str,
        name: &str,
    ) -> Result<(), BackendError> {
        match self.backend.delete(&journal_key(source, id, name)?).await {
            Ok(()) | Err(BackendError::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Deletes backup `id` of `source`; its pieces go with the next collection unless
    /// another backup or snapshot holds them.
    pub async fn delete_backup(&self, source: &str, id: &str) -> Result<(), BackendError> {
        self.backend.delete(&backup_key(source, id)?).await?;
        self.request_collection();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_keys_stay_in_their_directory() {
        let k = backup_key("prod", "20261204T052130Z-ab12").unwrap();
        assert_eq!(k.as_str(), ".backups/prod/20261204T052130Z-ab12.backup");
        assert!(is_backup(&k));
        assert!(!is_backup(&ObjectKey::new("papers/x.snapshot").unwrap()));
    }

    #[test]
    fn a_backup_of_another_format_is_refused() {
        let mut b =
            serde_json::to_value(StoredBackup::new(Value::Null, Value::Null, BTreeMap::new()))
                .unwrap();
        assert!(StoredBackup::parse(&serde_json::to_vec(&b).unwrap()).is_ok());
        b["version"] = 2.into();
        let e = StoredBackup::parse(&serde_json::to_vec(&b).unwrap()).unwrap_err();
        assert!(e.to_string().contains("version 2"), "{e}");
    }
}
