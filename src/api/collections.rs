//! Collection, alias and payload-index endpoints.

use axum::extract::State;
use axum::routing::{delete, get, patch, post, put};
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::call::Call;
use super::error::{ApiJson, ApiPath, ApiResult, Timer};
use super::guarded;
use crate::collection::config::{CollectionConfig, CollectionPatch};
use crate::collection::registry::AliasAction;
use crate::service::collections::CollectionInfo;
use crate::service::{Operation as Op, Services};

/// Collections, aliases and payload indexes.
pub(crate) fn routes(st: &Services) -> Router<Services> {
    let g = |op, h| guarded(st, op, h);
    Router::new()
        .route("/collections", g(Op::ListCollections, get(list)))
        .route(
            "/collections/aliases",
            g(Op::UpdateAliases, post(update_aliases)),
        )
        .route("/aliases", g(Op::ListAliases, get(list_aliases)))
        .route(
            "/collections/{name}",
            g(Op::GetCollection, get(get_collection))
                .merge(g(Op::CreateCollection, put(create)))
                .merge(g(Op::DeleteCollection, delete(delete_collection)))
                .merge(g(Op::UpdateCollection, patch(update))),
        )
        .route(
            "/collections/{name}/exists",
            g(Op::CollectionExists, get(exists)),
        )
        .route(
            "/collections/{name}/aliases",
            g(Op::ListCollectionAliases, get(collection_aliases)),
        )
        .route(
            "/collections/{name}/index",
            g(Op::CreateFieldIndex, put(create_index)),
        )
        .route(
            "/collections/{name}/index/{field}",
            g(Op::DeleteFieldIndex, delete(delete_index)),
        )
}

/// `GET /collections`
pub(crate) async fn list(t: Timer, State(st): State<Services>) -> ApiResult {
    let names: Vec<Value> = st
        .collections
        .list()
        .into_iter()
        .map(|n| json!({"name": n}))
        .collect();
    t.ok(json!({"collections": names}))
}

/// `PUT /collections/{name}`
pub(crate) async fn create(c: Call<CollectionConfig>) -> ApiResult {
    c.st.collections.create(c.name, c.body).await?;
    c.t.ok(true)
}

/// `GET /collections/{name}`
pub(crate) async fn get_collection(
    t: Timer,
    State(st): State<Services>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult {
    t.ok(info_json(&st.collections.get(&name)?))
}

/// `CollectionInfo` as Qdrant 1.13+ returns it over REST.
fn info_json(info: &CollectionInfo) -> Value {
    let (c, p) = (&info.config, &info.params);
    let mut params = json!({
        "vectors": c.vectors,
        "shard_number": p.shard_number,
        "replication_factor": p.replication_factor,
        "write_consistency_factor": p.write_consistency_factor,
        "on_disk_payload": p.on_disk_payload,
    });
    if let (Some(sparse), Value::Object(m)) = (&c.sparse_vectors, &mut params) {
        m.insert("sparse_vectors".into(), sparse.clone());
    }
    let points = info.points_count;
    let payload_schema: Map<String, Value> = c
        .payload_schema
        .iter()
        .map(|(k, v)| {
            let data_type = match v {
                Value::String(s) => Value::String(s.clone()),
                Value::Object(o) => o.get("type").cloned().unwrap_or(Value::Null),
                _ => Value::Null,
            };
            let params = v.as_object().map(|_| v.clone());
            (
                k.clone(),
                json!({"data_type": data_type, "params": params, "points": points}),
            )
        })
        .collect();
    json!({
        "status": "green",
        "optimizer_status": "ok",
        "indexed_vectors_count": 0,
        "points_count": points,
        "segments_count": 1,
        "config": {
            "params": params,
            "hnsw_config": info.tuning.hnsw,
            "optimizer_config": info.tuning.optimizer,
            "wal_config": info.tuning.wal,
            "quantization_config": c.quantization_config,
            "strict_mode_config": {"enabled": false},
        },
        "payload_schema": payload_schema,
    })
}

/// `DELETE /collections/{name}`: `false` (not 404) when missing, so `recreate_collection` works.
pub(crate) async fn delete_collection(
    t: Timer,
    State(st): State<Services>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult {
    t.ok(st.collections.delete(name).await?)
}

/// `PATCH /collections/{name}`: tuning sections are stored and echoed.
pub(crate) async fn update(
    t: Timer,
    State(st): State<Services>,
    ApiPath(name): ApiPath<String>,
    ApiJson(body): ApiJson<Map<String, Value>>,
) -> ApiResult {
    let section = |k: &str| body.get(k).and_then(Value::as_object).cloned();
    let patch = CollectionPatch {
        hnsw_config: section("hnsw_config"),
        optimizers_config: section("optimizers_config"),
        quantization_config: body.get("quantization_config").cloned(),
        metadata: body.get("metadata").cloned(),
    };
    st.collections.update(&name, patch).await?;
    t.ok(true)
}

/// `GET /collections/{name}/exists`
pub(crate) async fn exists(
    t: Timer,
    State(st): State<Services>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult {
    t.ok(json!({"exists": st.collections.exists(&name)}))
}

/// Body of `POST /collections/aliases`.
#[derive(Deserialize)]
pub(crate) struct AliasActions {
    actions: Vec<AliasAction>,
}

/// `POST /collections/aliases`
pub(crate) async fn update_aliases(
    t: Timer,
    State(st): State<Services>,
    ApiJson(body): ApiJson<AliasActions>,
) -> ApiResult {
    st.collections.update_aliases(body.actions).await?;
    t.ok(true)
}

fn alias_list(pairs: Vec<(String, String)>) -> Value {
    let aliases: Vec<Value> = pairs
        .into_iter()
        .map(|(a, c)| json!({"alias_name": a, "collection_name": c}))
        .collect();
    json!({"aliases": aliases})
}

/// `GET /aliases`
pub(crate) async fn list_aliases(t: Timer, State(st): State<Services>) -> ApiResult {
    t.ok(alias_list(st.collections.aliases()))
}

/// `GET /collections/{name}/aliases`
pub(crate) async fn collection_aliases(
    t: Timer,
    State(st): State<Services>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult {
    t.ok(alias_list(st.collections.aliases_of(&name)?))
}

/// Body of `PUT /collections/{name}/index`.
#[derive(Deserialize)]
pub(crate) struct CreateIndex {
    field_name: String,
    #[serde(default)]
    field_schema: Option<Value>,
}

/// `PUT /collections/{name}/index`
pub(crate) async fn create_index(c: Call<CreateIndex>) -> ApiResult {
    c.st.collections
        .create_index(&c.name, c.body.field_name, c.body.field_schema)
        .await?;
    c.t.ok(json!({"operation_id": 0, "status": "completed"}))
}

/// `DELETE /collections/{name}/index/{field}`
pub(crate) async fn delete_index(
    t: Timer,
    State(st): State<Services>,
    ApiPath((name, field)): ApiPath<(String, String)>,
) -> ApiResult {
    st.collections.delete_index(&name, field).await?;
    t.ok(json!({"operation_id": 0, "status": "completed"}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_echoes_user_settings_over_defaults() {
        let config: CollectionConfig = serde_json::from_value(json!({
            "vectors": {"size": 4, "distance": "Cosine"},
            "hnsw_config": {"m": 32}
        }))
        .unwrap();
        config.validate().unwrap();
        let info = info_json(&CollectionInfo {
            params: config.effective_params(),
            tuning: config.tuning(),
            config,
            points_count: 3,
        });
        assert_eq!(info["config"]["hnsw_config"]["m"], 32);
        assert_eq!(info["config"]["hnsw_config"]["ef_construct"], 100);
        assert!(info["config"]["optimizer_config"]["max_segment_size"].is_null());
        assert_eq!(
            info["config"]["params"]["vectors"],
            json!({"size": 4, "distance": "Cosine"})
        );
        assert_eq!(info["points_count"], 3);
    }
}
