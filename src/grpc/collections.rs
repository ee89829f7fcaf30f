//! `qdrant.Collections`: collections and aliases.
// Deprecated proto fields (`data`, `on_disk`, ...) are what older clients still send
// and read: handling them is deliberate.
#![allow(deprecated)]

use ::qdrant_client::qdrant as pb;
use pb::collections_server::Collections;
use serde_json::{json, Map, Value};
use tonic::{Request, Response, Status};

use super::convert::{payload, payload_out};
use super::status::status;
use super::{answer, unsupported};
use crate::collection::config::{CollectionConfig, CollectionPatch};
use crate::collection::registry::AliasAction;
use crate::collection::tuning::{HnswParams, OptimizerParams};
use crate::collection::types::{Distance, VectorParams, VectorsConfig};
use crate::service::collections::CollectionInfo;
use crate::service::Services;

/// The `Collections` service.
#[derive(Clone, Debug)]
pub(crate) struct CollectionsApi(pub(crate) Services);

fn invalid(msg: impl Into<String>) -> Status {
    Status::invalid_argument(msg.into())
}

fn distance(d: i32) -> Result<Distance, Status> {
    match pb::Distance::try_from(d) {
        Ok(pb::Distance::Cosine) => Ok(Distance::Cosine),
        Ok(pb::Distance::Euclid) => Ok(Distance::Euclid),
        Ok(pb::Distance::Dot) => Ok(Distance::Dot),
        Ok(pb::Distance::Manhattan) => Ok(Distance::Manhattan),
        _ => Err(invalid(format!("unknown distance {d}"))),
    }
}

fn distance_out(d: Distance) -> i32 {
    (match d {
        Distance::Cosine => pb::Distance::Cosine,
        Distance::Euclid => pb::Distance::Euclid,
        Distance::Dot => pb::Distance::Dot,
        Distance::Manhattan => pb::Distance::Manhattan,
    }) as i32
}

fn vector_params(p: pb::VectorParams) -> Result<VectorParams, Status> {
    if p.multivector_config.is_some() {
        return Err(invalid("multivectors are not supported by this service"));
    }
    Ok(VectorParams {
        size: p.size,
        distance: distance(p.distance)?,
        on_disk: p.on_disk,
        hnsw_config: None,
        quantization_config: None,
    })
}

fn vector_params_out(p: &VectorParams) -> pb::VectorParams {
    pb::VectorParams {
        size: p.size,
        distance: distance_out(p.distance),
        on_disk: p.on_disk,
        ..Default::default()
    }
}

/// Inserts each `Some` field as a JSON value.
macro_rules! diff_map {
    ($diff:expr, $($field:ident),*) => {{
        let d = $diff;
        let mut m = Map::new();
        $(if let Some(v) = d.$field { m.insert(stringify!($field).into(), json!(v)); })*
        m
    }};
}

fn hnsw_map(d: pb::HnswConfigDiff) -> Map<String, Value> {
    diff_map!(
        d,
        m,
        ef_construct,
        full_scan_threshold,
        max_indexing_threads,
        on_disk,
        payload_m
    )
}

fn optimizers_map(d: pb::OptimizersConfigDiff) -> Map<String, Value> {
    diff_map!(
        d,
        deleted_threshold,
        vacuum_min_vector_number,
        default_segment_number,
        max_segment_size,
        memmap_threshold,
        indexing_threshold,
        flush_interval_sec
    )
}

fn wal_map(d: pb::WalConfigDiff) -> Map<String, Value> {
    diff_map!(d, wal_capacity_mb, wal_segments_ahead)
}

fn create_config(c: pb::CreateCollection) -> Result<CollectionConfig, Status> {
    use pb::vectors_config::Config;
    if c.sparse_vectors_config
        .as_ref()
        .is_some_and(|s| !s.map.is_empty())
    {
        return Err(invalid("sparse vectors are not supported by this service"));
    }
    if c.sharding_method == Some(pb::ShardingMethod::Custom as i32) {
        return Err(invalid("custom sharding is not supported by this service"));
    }
    let vectors = match c.vectors_config.and_then(|v| v.config) {
        Some(Config::Params(p)) => VectorsConfig::Single(vector_params(p)?),
        Some(Config::ParamsMap(m)) => VectorsConfig::Named(
            m.map
                .into_iter()
                .map(|(k, v)| Ok((k, vector_params(v)?)))
                .collect::<Result<_, Status>>()?,
        ),
        None => return Err(invalid("vectors_config is required")),
    };
    let mut config: CollectionConfig = serde_json::from_value(json!({ "vectors": vectors }))
        .map_err(|e| invalid(e.to_string()))?;
    config.shard_number = c.shard_number;
    config.replication_factor = c.replication_factor;
    config.write_consistency_factor = c.write_consistency_factor;
    config.on_disk_payload = c.on_disk_payload;
    config.hnsw_config = c.hnsw_config.map(hnsw_map);
    config.optimizers_config = c.optimizers_config.map(optimizers_map);
    config.wal_config = c.wal_config.map(wal_map);
    if !c.metadata.is_empty() {
        config.metadata = Some(Value::Object(payload(c.metadata)));
    }
    Ok(config)
}

fn schema_type(v: &Value) -> i32 {
    let name = match v {
        Value::String(s) => s.as_str(),
        Value::Object(o) => o.get("type").and_then(Value::as_str).unwrap_or(""),
        _ => "",
    };
    (match name {
        "keyword" => pb::PayloadSchemaType::Keyword,
        "integer" => pb::PayloadSchemaType::Integer,
        "float" => pb::PayloadSchemaType::Float,
        "geo" => pb::PayloadSchemaType::Geo,
        "text" => pb::PayloadSchemaType::Text,
        "bool" => pb::PayloadSchemaType::Bool,
        "datetime" => pb::PayloadSchemaType::Datetime,
        "uuid" => pb::PayloadSchemaType::Uuid,
        _ => pb::PayloadSchemaType::UnknownType,
    }) as i32
}

fn hnsw_out(h: &HnswParams) -> pb::HnswConfigDiff {
    pb::HnswConfigDiff {
        m: h.m,
        ef_construct: h.ef_construct,
        full_scan_threshold: h.full_scan_threshold,
        max_indexing_threads: h.max_indexing_threads,
        on_disk: h.on_disk,
        payload_m: h.payload_m,
        ..Default::default()
    }
}

fn optimizer_out(o: &OptimizerParams) -> pb::OptimizersConfigDiff {
    pb::OptimizersConfigDiff {
        deleted_threshold: o.deleted_threshold,
        vacuum_min_vector_number: o.vacuum_min_vector_number,
        default_segment_number: o.default_segment_number,
        max_segment_size: o.max_segment_size,
        memmap_threshold: o.memmap_threshold,
        indexing_threshold: o.indexing_threshold,
        flush_interval_sec: o.flush_interval_sec,
        ..Default::default()
    }
}

fn vectors_out(vectors: &VectorsConfig) -> pb::VectorsConfig {
    use pb::vectors_config::Config;
    pb::VectorsConfig {
        config: Some(match vectors {
            VectorsConfig::Single(v) => Config::Params(vector_params_out(v)),
            VectorsConfig::Named(m) => Config::ParamsMap(pb::VectorParamsMap {
                map: m
                    .iter()
                    .map(|(k, v)| (k.clone(), vector_params_out(v)))
                    .collect(),
            }),
        }),
    }
}

fn info_out(info: &CollectionInfo) -> pb::CollectionInfo {
    let (config, p, t) = (&info.config, &info.params, &info.tuning);
    let points = info.points_count as u64;
    pb::CollectionInfo {
        status: pb::CollectionStatus::Green as i32,
        optimizer_status: Some(pb::OptimizerStatus {
            ok: true,
            error: String::new(),
        }),
        segments_count: 1,
        config: Some(pb::CollectionConfig {
            params: Some(pb::CollectionParams {
                shard_number: p.shard_number,
                on_disk_payload: p.on_disk_payload,
                vectors_config: Some(vectors_out(&config.vectors)),
                replication_factor: Some(p.replication_factor),
                write_consistency_factor: Some(p.write_consistency_factor),
                ..Default::default()
            }),
            hnsw_config: Some(hnsw_out(&t.hnsw)),
            optimizer_config: Some(optimizer_out(&t.optimizer)),
            wal_config: Some(pb::WalConfigDiff {
                wal_capacity_mb: t.wal.wal_capacity_mb,
                wal_segments_ahead: t.wal.wal_segments_ahead,
                ..Default::default()
            }),
            metadata: match &config.metadata {
                Some(Value::Object(m)) => payload_out(m.clone()),
                _ => Default::default(),
            },
            ..Default::default()
        }),
        payload_schema: config
            .payload_schema
            .iter()
            .map(|(k, v)| {
                let info = pb::PayloadSchemaInfo {
                    data_type: schema_type(v),
                    params: None,
                    points: Some(points),
                };
                (k.clone(), info)
            })
            .collect(),
        points_count: Some(points),
        indexed_vectors_count: Some(0),
        ..Default::default()
    }
}

fn aliases_out(pairs: Vec<(String, String)>) -> pb::ListAliasesResponse {
    pb::ListAliasesResponse {
        aliases: pairs
            .into_iter()
            .map(|(alias_name, collection_name)| pb::AliasDescription {
                alias_name,
                collection_name,
            })
            .collect(),
        ..Default::default()
    }
}

fn done(result: bool) -> pb::CollectionOperationResponse {
    pb::CollectionOperationResponse {
        result,
        ..Default::default()
    }
}

#[tonic::async_trait]
impl Collections for CollectionsApi {
    async fn get(
        &self,
        r: Request<pb::GetCollectionInfoRequest>,
    ) -> Result<Response<pb::GetCollectionInfoResponse>, Status> {
        answer(r, |r| async move {
            let info = self.0.collections.get(&r.collection_name).map_err(status)?;
            Ok(pb::GetCollectionInfoResponse {
                result: Some(info_out(&info)),
                ..Default::default()
            })
        })
        .await
    }

    async fn list(
        &self,
        r: Request<pb::ListCollectionsRequest>,
    ) -> Result<Response<pb::ListCollectionsResponse>, Status> {
        answer(r, |_| async move {
            Ok(pb::ListCollectionsResponse {
                collections: self
                    .0
                    .collections
                    .list()
                    .into_iter()
                    .map(|name| pb::CollectionDescription { name })
                    .collect(),
                ..Default::default()
            })
        })
        .await
    }

    async fn create(
        &self,
        r: Request<pb::CreateCollection>,
    ) -> Result<Response<pb::CollectionOperationResponse>, Status> {
        answer(r, |r| async move {
            let name = r.collection_name.clone();
            let config = create_config(r)?;
            self.0
                .collections
                .create(name, config)
                .await
                .map_err(status)?;
            Ok(done(true))
        })
        .await
    }

    async fn update(
        &self,
        r: Request<pb::UpdateCollection>,
    ) -> Result<Response<pb::CollectionOperationResponse>, Status> {
        answer(r, |r| async move {
            let patch = CollectionPatch {
                hnsw_config: r.hnsw_config.map(hnsw_map),
                optimizers_config: r.optimizers_config.map(optimizers_map),
                quantization_config: None,
                metadata: (!r.metadata.is_empty()).then(|| Value::Object(payload(r.metadata))),
            };
            self.0
                .collections
                .update(&r.collection_name, patch)
                .await
                .map_err(status)?;
            Ok(done(true))
        })
        .await
    }

    async fn delete(
        &self,
        r: Request<pb::DeleteCollection>,
    ) -> Result<Response<pb::CollectionOperationResponse>, Status> {
        answer(r, |r| async move {
            let existed = self
                .0
                .collections
                .delete(r.collection_name)
                .await
                .map_err(status)?;
            Ok(done(existed))
        })
        .await
    }

    async fn update_aliases(
        &self,
        r: Request<pb::ChangeAliases>,
    ) -> Result<Response<pb::CollectionOperationResponse>, Status> {
        answer(r, |r| async move {
            use pb::alias_operations::Action;
            let actions = r
                .actions
                .into_iter()
                .map(|a| match a.action {
                    Some(Action::CreateAlias(c)) => Ok(AliasAction::CreateAlias {
                        collection_name: c.collection_name,
                        alias_name: c.alias_name,
                    }),
                    Some(Action::RenameAlias(c)) => Ok(AliasAction::RenameAlias {
                        old_alias_name: c.old_alias_name,
                        new_alias_name: c.new_alias_name,
                    }),
                    Some(Action::DeleteAlias(c)) => Ok(AliasAction::DeleteAlias {
                        alias_name: c.alias_name,
                    }),
                    None => Err(invalid("an alias operation is empty")),
                })
                .collect::<Result<Vec<_>, Status>>()?;
            self.0
                .collections
                .update_aliases(actions)
                .await
                .map_err(status)?;
            Ok(done(true))
        })
        .await
    }

    async fn list_collection_aliases(
        &self,
        r: Request<pb::ListCollectionAliasesRequest>,
    ) -> Result<Response<pb::ListAliasesResponse>, Status> {
        answer(r, |r| async move {
            let pairs = self
                .0
                .collections
                .aliases_of(&r.collection_name)
                .map_err(status)?;
            Ok(aliases_out(pairs))
        })
        .await
    }

    async fn list_aliases(
        &self,
        r: Request<pb::ListAliasesRequest>,
    ) -> Result<Response<pb::ListAliasesResponse>, Status> {
        answer(r, |_| async move {
            Ok(aliases_out(self.0.collections.aliases()))
        })
        .await
    }

    async fn collection_exists(
        &self,
        r: Request<pb::CollectionExistsRequest>,
    ) -> Result<Response<pb::CollectionExistsResponse>, Status> {
        answer(r, |r| async move {
            let exists = self.0.collections.exists(&r.collection_name);
            Ok(pb::CollectionExistsResponse {
                result: Some(pb::CollectionExists { exists }),
                ..Default::default()
            })
        })
        .await
    }

    async fn collection_cluster_info(
        &self,
        _: Request<pb::CollectionClusterInfoRequest>,
    ) -> Result<Response<pb::CollectionClusterInfoResponse>, Status> {
        unsupported("qdrant.Collections/CollectionClusterInfo")
    }

    async fn update_collection_cluster_setup(
        &self,
        _: Request<pb::UpdateCollectionClusterSetupRequest>,
    ) -> Result<Response<pb::UpdateCollectionClusterSetupResponse>, Status> {
        unsupported("qdrant.Collections/UpdateCollectionClusterSetup")
    }

    async fn create_shard_key(
        &self,
        _: Request<pb::CreateShardKeyRequest>,
    ) -> Result<Response<pb::CreateShardKeyResponse>, Status> {
        unsupported("qdrant.Collections/CreateShardKey")
    }

    async fn delete_shard_key(
        &self,
        _: Request<pb::DeleteShardKeyRequest>,
    ) -> Result<Response<pb::DeleteShardKeyResponse>, Status> {
        unsupported("qdrant.Collections/DeleteShardKey")
    }

    async fn list_shard_keys(
        &self,
        _: Request<pb::ListShardKeysRequest>,
    ) -> Result<Response<pb::ListShardKeysResponse>, Status> {
        unsupported("qdrant.Collections/ListShardKeys")
    }
}
