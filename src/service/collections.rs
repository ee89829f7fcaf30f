//! Collections, aliases and payload indexes, for every transport.

use std::sync::Arc;

use serde_json::Value;

use super::blocking;
use crate::collection::config::{CollectionConfig, CollectionPatch};
use crate::collection::registry::{AliasAction, Registry};
use crate::collection::tuning::{EffectiveParams, Tuning};
use crate::error::Result;

/// What `GET /collections/{c}` and gRPC `Collections/Get` describe.
#[derive(Clone, Debug)]
pub struct CollectionInfo {
    /// The stored configuration.
    pub config: CollectionConfig,
    /// Shard, replica and payload-storage parameters with Qdrant's defaults.
    pub params: EffectiveParams,
    /// The tuning sections as reported.
    pub tuning: Tuning,
    /// Live points.
    pub points_count: usize,
}

/// The schema a payload index gets when the request names none, as in Qdrant's examples.
pub(crate) const DEFAULT_INDEX_SCHEMA: &str = "keyword";

/// Collection operations.
#[derive(Clone, Debug)]
pub struct Collections {
    registry: Arc<Registry>,
}

impl Collections {
    /// Operations over `registry`.
    pub fn new(registry: Arc<Registry>) -> Self {
        Collections { registry }
    }

    /// Collection names, sorted.
    pub fn list(&self) -> Vec<String> {
        self.registry.names()
    }

    /// Creates a collection.
    ///
    /// # Errors
    /// `BadInput` for an invalid name or configuration, `AlreadyExists` when taken.
    pub async fn create(&self, name: String, config: CollectionConfig) -> Result<()> {
        let reg = Arc::clone(&self.registry);
        blocking(move || reg.create(&name, config)).await
    }

    /// The configuration and size of a collection (by name or alias).
    pub fn get(&self, name: &str) -> Result<CollectionInfo> {
        let col = self.registry.get(name)?;
        let config = col.config();
        Ok(CollectionInfo {
            points_count: col.read(|p| p.len()),
            params: config.effective_params(),
            tuning: config.tuning(),
            config,
        })
    }

    /// Deletes a collection; `false` when there was none (not an error, so clients'
    /// `recreate_collection` works).
    pub async fn delete(&self, name: String) -> Result<bool> {
        let reg = Arc::clone(&self.registry);
        blocking(move || reg.delete(&name)).await
    }

    /// Applies a partial update of the tuning sections.
    pub async fn update(&self, name: &str, patch: CollectionPatch) -> Result<()> {
        let col = self.registry.get(name)?;
        blocking(move || col.update_config(|cfg| cfg.apply_patch(&patch))).await
    }

    /// Whether a collection or alias of that name exists.
    pub fn exists(&self, name: &str) -> bool {
        self.registry.exists(name)
    }

    /// Applies alias changes all together, or none of them.
    pub async fn update_aliases(&self, actions: Vec<AliasAction>) -> Result<()> {
        let reg = Arc::clone(&self.registry);
        blocking(move || reg.update_aliases(&actions)).await
    }

    /// Every alias as `(alias, collection)`.
    pub fn aliases(&self) -> Vec<(String, String)> {
        self.registry.aliases()
    }

    /// The aliases of one collection.
    pub fn aliases_of(&self, name: &str) -> Result<Vec<(String, String)>> {
        self.registry.aliases_of(name)
    }

    /// Declares a payload index: stored, reported in `payload_schema` and carried by
    /// snapshots. Filtering does not need it (every filter scans).
    pub async fn create_index(
        &self,
        name: &str,
        field: String,
        schema: Option<Value>,
    ) -> Result<()> {
        let col = self.registry.get(name)?;
        let schema = schema.unwrap_or_else(|| Value::String(DEFAULT_INDEX_SCHEMA.into()));
        blocking(move || {
            col.update_config(|c| {
                c.payload_schema.insert(field, schema);
            })
        })
        .await
    }

    /// Removes a payload index declaration.
    pub async fn delete_index(&self, name: &str, field: String) -> Result<()> {
        let col = self.registry.get(name)?;
        blocking(move || {
            col.update_config(|c| {
                c.payload_schema.remove(&field);
            })
        })
        .await
    }
}
