//! A collection's configuration: what `PUT /collections/{c}` accepts and what `config.json`
//! stores ([`super::tuning`] reports its tuning sections).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::types::VectorsConfig;

/// The body of `PUT /collections/{c}` and the content of `config.json`.
///
/// Tuning sections that this service does not act on (HNSW, optimizers, WAL, quantization)
/// are kept as given and echoed back over Qdrant's defaults, so clients see what they set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CollectionConfig {
    /// Vector spaces.
    pub vectors: VectorsConfig,
    /// Echoed; a single shard is always used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard_number: Option<u32>,
    /// Echoed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication_factor: Option<u32>,
    /// Echoed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_consistency_factor: Option<u32>,
    /// Echoed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_disk_payload: Option<bool>,
    /// Merged over the default HNSW config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hnsw_config: Option<Map<String, Value>>,
    /// Merged over the default optimizer config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optimizers_config: Option<Map<String, Value>>,
    /// Merged over the default WAL config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wal_config: Option<Map<String, Value>>,
    /// Echoed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantization_config: Option<Value>,
    /// Echoed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sparse_vectors: Option<Value>,
    /// Echoed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    /// Payload indexes declared with `PUT /collections/{c}/index` (field → schema).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub payload_schema: BTreeMap<String, Value>,
}

/// A partial update of a collection's tuning sections (REST `PATCH`, gRPC `Update`).
///
/// Maps merge key by key into what is stored; the other sections replace it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CollectionPatch {
    /// Merged into the stored HNSW section.
    pub hnsw_config: Option<Map<String, Value>>,
    /// Merged into the stored optimizer section.
    pub optimizers_config: Option<Map<String, Value>>,
    /// Replaces the stored quantization section.
    pub quantization_config: Option<Value>,
    /// Replaces the stored metadata.
    pub metadata: Option<Value>,
}

impl CollectionConfig {
    /// Applies a partial update.
    pub fn apply_patch(&mut self, patch: &CollectionPatch) {
        let merge = |slot: &mut Option<Map<String, Value>>, v: &Option<Map<String, Value>>| {
            if let Some(o) = v {
                slot.get_or_insert_with(Map::new).extend(o.clone());
            }
        };
        merge(&mut self.hnsw_config, &patch.hnsw_config);
        merge(&mut self.optimizers_config, &patch.optimizers_config);
        if let Some(q) = &patch.quantization_config {
            self.quantization_config = Some(q.clone());
        }
        if let Some(m) = &patch.metadata {
            self.metadata = Some(m.clone());
        }
    }

    /// Checks what the service cannot store.
    pub fn validate(&self) -> Result<(), String> {
        let spaces = self.vectors.spaces();
        if spaces.is_empty() {
            return Err("at least one vector space must be configured".into());
        }
        for (name, p) in spaces {
            if p.size == 0 || p.size > 65_536 {
                let label = if name.is_empty() {
                    "vectors".to_string()
                } else {
                    format!("vector `{name}`")
                };
                return Err(format!(
                    "{label}: size must be between 1 and 65536, got {}",
                    p.size
                ));
            }
            if name.len() > 1024 {
                return Err("vector names must be at most 1024 bytes".into());
            }
        }
        if self
            .sparse_vectors
            .as_ref()
            .is_some_and(|s| s.as_object().is_some_and(|m| !m.is_empty()))
        {
            return Err("sparse vectors are not supported by this service".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn patches_merge_maps_and_replace_the_rest() {
        let mut c: CollectionConfig = serde_json::from_value(json!({
            "vectors": {"size": 4, "distance": "Dot"},
            "hnsw_config": {"m": 32, "ef_construct": 50},
            "metadata": {"a": 1}
        }))
        .unwrap();
        c.apply_patch(&CollectionPatch {
            hnsw_config: json!({"m": 8}).as_object().cloned(),
            metadata: Some(json!({"b": 2})),
            ..Default::default()
        });
        assert_eq!(
            c.hnsw_config,
            json!({"m": 8, "ef_construct": 50}).as_object().cloned()
        );
        assert_eq!(c.metadata, Some(json!({"b": 2})));
        assert_eq!(c.optimizers_config, None);
    }

    #[test]
    fn zero_sized_vectors_are_rejected() {
        let c: CollectionConfig =
            serde_json::from_value(json!({"vectors": {"size": 0, "distance": "Dot"}})).unwrap();
        assert!(c.validate().unwrap_err().contains("size"));
    }
}
