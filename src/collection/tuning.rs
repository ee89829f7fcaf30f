//! A collection's tuning sections as reported: Qdrant's defaults with the user's settings
//! over them, typed. This service does not act on them; it stores what clients set and
//! reports it, so both transports render the same values from these types.
//!
//! A key whose value has the type Qdrant gives it is typed; anything else the user stored
//! (an unknown key, a `null` default, a value of another type) is kept in `other` and
//! echoed by REST as it was given.

use serde::Serialize;
use serde_json::{json, Map, Value};

use super::config::CollectionConfig;

/// HNSW index parameters (`hnsw_config`).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct HnswParams {
    /// Edges per node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub m: Option<u64>,
    /// Neighbours considered while building.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ef_construct: Option<u64>,
    /// Below this many KiB of vectors a search scans instead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub full_scan_threshold: Option<u64>,
    /// Threads for building (0: automatic).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_indexing_threads: Option<u64>,
    /// Whether the index lives on disk.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_disk: Option<bool>,
    /// Edges per node of payload-based links.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload_m: Option<u64>,
    /// Everything else, as stored.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// Optimizer parameters (`optimizer_config`).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct OptimizerParams {
    /// Share of deleted points that makes a segment worth vacuuming.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deleted_threshold: Option<f64>,
    /// Fewest vectors a segment must hold to be vacuumed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vacuum_min_vector_number: Option<u64>,
    /// Target number of segments (0: automatic).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_segment_number: Option<u64>,
    /// Largest segment, in KiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_segment_size: Option<u64>,
    /// Above this size, in KiB, segments are memory-mapped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memmap_threshold: Option<u64>,
    /// Above this size, in KiB, segments are indexed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub indexing_threshold: Option<u64>,
    /// Seconds between flushes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flush_interval_sec: Option<u64>,
    /// Everything else, as stored.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// Write-ahead log parameters (`wal_config`).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct WalParams {
    /// Size of one WAL segment, in MiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wal_capacity_mb: Option<u64>,
    /// Segments created ahead of need.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wal_segments_ahead: Option<u64>,
    /// Everything else, as stored.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// The collection-wide parameters with Qdrant's defaults filled in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EffectiveParams {
    /// Shards (always 1 here; echoed).
    pub shard_number: u32,
    /// Replicas per shard (echoed).
    pub replication_factor: u32,
    /// Replicas that must acknowledge a write (echoed).
    pub write_consistency_factor: u32,
    /// Whether payloads live on disk (echoed).
    pub on_disk_payload: bool,
}

/// Every tuning section of a collection, as reported.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tuning {
    /// `hnsw_config`.
    pub hnsw: HnswParams,
    /// `optimizer_config`.
    pub optimizer: OptimizerParams,
    /// `wal_config`.
    pub wal: WalParams,
}

/// `defaults` with the keys of `over` set over them.
fn merged(defaults: Value, over: &Option<Map<String, Value>>) -> Map<String, Value> {
    let mut base = match defaults {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    if let Some(o) = over {
        base.extend(o.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    base
}

/// Takes `key` out of `m` if it is an unsigned integer.
fn take_u64(m: &mut Map<String, Value>, key: &str) -> Option<u64> {
    let v = m.get(key)?.as_u64()?;
    m.remove(key);
    Some(v)
}

/// Takes `key` out of `m` if it is a number.
fn take_f64(m: &mut Map<String, Value>, key: &str) -> Option<f64> {
    let v = m.get(key)?.as_f64()?;
    m.remove(key);
    Some(v)
}

/// Takes `key` out of `m` if it is a boolean.
fn take_bool(m: &mut Map<String, Value>, key: &str) -> Option<bool> {
    let v = m.get(key)?.as_bool()?;
    m.remove(key);
    Some(v)
}

impl CollectionConfig {
    /// Shard and replica counts and payload storage, with Qdrant's defaults.
    pub fn effective_params(&self) -> EffectiveParams {
        EffectiveParams {
            shard_number: self.shard_number.unwrap_or(1),
            replication_factor: self.replication_factor.unwrap_or(1),
            write_consistency_factor: self.write_consistency_factor.unwrap_or(1),
            on_disk_payload: self.on_disk_payload.unwrap_or(true),
        }
    }

    /// The tuning sections: Qdrant's defaults with what the user set over them.
    pub fn tuning(&self) -> Tuning {
        let mut h = merged(
            json!({"m": 16, "ef_construct": 100, "full_scan_threshold": 10000,
                "max_indexing_threads": 0, "on_disk": false}),
            &self.hnsw_config,
        );
        let mut o = merged(
            json!({"deleted_threshold": 0.2, "vacuum_min_vector_number": 1000,
                "default_segment_number": 0, "max_segment_size": null, "memmap_threshold": null,
                "indexing_threshold": 20000, "flush_interval_sec": 5,
                "max_optimization_threads": null}),
            &self.optimizers_config,
        );
        let mut w = merged(
            json!({"wal_capacity_mb": 32, "wal_segments_ahead": 0}),
            &self.wal_config,
        );
        Tuning {
            hnsw: HnswParams {
                m: take_u64(&mut h, "m"),
                ef_construct: take_u64(&mut h, "ef_construct"),
                full_scan_threshold: take_u64(&mut h, "full_scan_threshold"),
                max_indexing_threads: take_u64(&mut h, "max_indexing_threads"),
                on_disk: take_bool(&mut h, "on_disk"),
                payload_m: take_u64(&mut h, "payload_m"),
                other: h,
            },
            optimizer: OptimizerParams {
                deleted_threshold: take_f64(&mut o, "deleted_threshold"),
                vacuum_min_vector_number: take_u64(&mut o, "vacuum_min_vector_number"),
                default_segment_number: take_u64(&mut o, "default_segment_number"),
                max_segment_size: take_u64(&mut o, "max_segment_size"),
                memmap_threshold: take_u64(&mut o, "memmap_threshold"),
                indexing_threshold: take_u64(&mut o, "indexing_threshold"),
                flush_interval_sec: take_u64(&mut o, "flush_interval_sec"),
                other: o,
            },
            wal: WalParams {
                wal_capacity_mb: take_u64(&mut w, "wal_capacity_mb"),
                wal_segments_ahead: take_u64(&mut w, "wal_segments_ahead"),
                other: w,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_settings_go_over_defaults_and_odd_values_are_kept_as_given() {
        let c: CollectionConfig = serde_json::from_value(json!({
            "vectors": {"size": 4, "distance": "Cosine"},
            "hnsw_config": {"m": 32, "ef_construct": "many", "extra": 1},
        }))
        .unwrap();
        let t = c.tuning();
        assert_eq!(t.hnsw.m, Some(32));
        assert_eq!(t.hnsw.ef_construct, None);
        assert_eq!(t.hnsw.full_scan_threshold, Some(10000));
        let shown = serde_json::to_value(&t.hnsw).unwrap();
        assert_eq!(shown["ef_construct"], "many");
        assert_eq!(shown["extra"], 1);
        assert_eq!(shown["m"], 32);
        // A `null` default is reported as null, not left out.
        let o = serde_json::to_value(&t.optimizer).unwrap();
        assert!(o.as_object().unwrap()["max_segment_size"].is_null());
        assert_eq!(t.optimizer.deleted_threshold, Some(0.2));
    }
}
