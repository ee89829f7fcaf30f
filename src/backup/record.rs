//! What a backup recorded: its REST shape, stored with the backup's shard manifests.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One backup of a source.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BackupRecord {
    /// Its id: sortable by time, to the millisecond (`20261204T052130123Z-1a2b3c`).
    pub id: String,
    /// The source it was taken from.
    pub source: String,
    /// The version the source's Qdrant reported: a restore refuses an older target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qdrant_version: Option<String>,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// When it was complete.
    pub finished_at: DateTime<Utc>,
    /// Logical size of its shard archives.
    pub size: u64,
    /// What it added to storage (new pieces and the record).
    pub stored_bytes: u64,
    /// Each collection backed up.
    pub collections: BTreeMap<String, CollectionRecord>,
    /// Collections that could not be backed up, with why.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub failed: BTreeMap<String, String>,
}

impl BackupRecord {
    /// Orders each collection's shards and sums the counts and sizes from them.
    pub(crate) fn total(&mut self) {
        for c in self.collections.values_mut() {
            c.shards.sort_by_key(|s| s.shard_id);
            c.points_count = c.shards.iter().map(|s| s.points_count).sum();
        }
        let shards = self.collections.values().flat_map(|c| &c.shards);
        self.size = shards.clone().map(|s| s.size).sum();
        self.stored_bytes = shards.map(|s| s.stored_bytes).sum();
    }
}

/// One collection of a backup.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CollectionRecord {
    /// The collection's configuration as Qdrant reported it (`GET /collections/{c}`'s
    /// `config`): vectors, shards, replication, HNSW, optimizer, quantization, on-disk.
    pub config: Value,
    /// Its aliases.
    pub aliases: Vec<String>,
    /// Its payload indexes as Qdrant reported them (`payload_schema`).
    pub payload_indexes: Value,
    /// Points in all its shards.
    pub points_count: u64,
    /// Each shard.
    pub shards: Vec<ShardRecord>,
}

/// One shard of a backup.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShardRecord {
    /// The shard.
    pub shard_id: u32,
    /// The peer it was pulled from.
    pub peer_id: u64,
    /// Points the replica held when pulled.
    pub points_count: u64,
    /// Logical size of the shard archive.
    pub size: u64,
    /// SHA-256 of the shard archive as served.
    pub sha256: String,
    /// Bytes that came over the network from Qdrant.
    pub pulled_bytes: u64,
    /// Bytes this shard added to storage.
    pub stored_bytes: u64,
}

/// A new backup id for a backup started at `at`: sorts by time, unique by its suffix.
pub(crate) fn new_id(at: DateTime<Utc>) -> String {
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..6];
    format!("{}-{suffix}", at.format("%Y%m%dT%H%M%S%3fZ"))
}

/// Whether `id` has the shape of a backup id (nothing else may reach storage keys).
pub(crate) fn is_id(id: &str) -> bool {
    id.len() <= 64
        && !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_by_time_and_are_checked() {
        let a = new_id("2026-12-04T05:21:30.998Z".parse().unwrap());
        let b = new_id("2026-12-04T05:21:31.001Z".parse().unwrap());
        assert!(a < b, "{a} {b}");
        assert!(a.starts_with("20261204T052130998Z-"));
        assert!(is_id(&a));
        for bad in ["", "../x", "a/b", "a.backup"] {
            assert!(!is_id(bad), "{bad}");
        }
    }
}
