//! Collection, alias and payload-index endpoints.

use std::sync::Arc;

use axum::extract::State;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::error::{blocking, ApiJson, ApiPath, ApiResult, Timer};
use super::AppState;
use crate::collection::config::CollectionConfig;
use crate::registry::AliasAction;

/// `GET /collections`
pub async fn list(t: Timer, State(st): State<AppState>) -> ApiResult {
    let names: Vec<Value> = st
        .registry
        .names()
        .into_iter()
        .map(|n| json!({"name": n}))
        .collect();
    t.ok(json!({"collections": names}))
}

/// `PUT /collections/{name}`
pub async fn create(
    t: Timer,
    State(st): State<AppState>,
    ApiPath(name): ApiPath<String>,
    ApiJson(config): ApiJson<CollectionConfig>,
) -> ApiResult {
    let reg = Arc::clone(&st.registry);
    blocking(move || reg.create(&name, config)).await?;
    t.ok(true)
}

/// `GET /collections/{name}`
pub async fn get(
    t: Timer,
    State(st): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult {
    let col = st.registry.get(&name)?;
    let count = col.read(|p| p.len());
    t.ok(col.config().info(count))
}

/// `DELETE /collections/{name}`: `false` (not 404) when missing, so `recreate_collection` works.
pub async fn delete(
    t: Timer,
    State(st): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult {
    let reg = Arc::clone(&st.registry);
    let existed = blocking(move || reg.delete(&name)).await?;
    t.ok(existed)
}

/// `PATCH /collections/{name}`: tuning sections are stored and echoed.
pub async fn update(
    t: Timer,
    State(st): State<AppState>,
    ApiPath(name): ApiPath<String>,
    ApiJson(body): ApiJson<Map<String, Value>>,
) -> ApiResult {
    let col = st.registry.get(&name)?;
    blocking(move || {
        col.update_config(|cfg| {
            let merge = |slot: &mut Option<Map<String, Value>>, v: Option<&Value>| {
                if let Some(Value::Object(o)) = v {
                    let target = slot.get_or_insert_with(Map::new);
                    target.extend(o.clone());
                }
            };
            merge(&mut cfg.hnsw_config, body.get("hnsw_config"));
            merge(&mut cfg.optimizers_config, body.get("optimizers_config"));
            if let Some(q) = body.get("quantization_config") {
                cfg.quantization_config = Some(q.clone());
            }
            if let Some(m) = body.get("metadata") {
                cfg.metadata = Some(m.clone());
            }
        })
    })
    .await?;
    t.ok(true)
}

/// `GET /collections/{name}/exists`
pub async fn exists(
    t: Timer,
    State(st): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult {
    t.ok(json!({"exists": st.registry.exists(&name)}))
}

/// Body of `POST /collections/aliases`.
#[derive(Deserialize)]
pub struct AliasActions {
    actions: Vec<AliasAction>,
}

/// `POST /collections/aliases`
pub async fn update_aliases(
    t: Timer,
    State(st): State<AppState>,
    ApiJson(body): ApiJson<AliasActions>,
) -> ApiResult {
    let reg = Arc::clone(&st.registry);
    blocking(move || reg.update_aliases(&body.actions)).await?;
    t.ok(true)
}

fn alias_list(pairs: impl Iterator<Item = (String, String)>) -> Value {
    let aliases: Vec<Value> = pairs
        .map(|(a, c)| json!({"alias_name": a, "collection_name": c}))
        .collect();
    json!({"aliases": aliases})
}

/// `GET /aliases`
pub async fn list_aliases(t: Timer, State(st): State<AppState>) -> ApiResult {
    t.ok(alias_list(st.registry.aliases().into_iter()))
}

/// `GET /collections/{name}/aliases`
pub async fn collection_aliases(
    t: Timer,
    State(st): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult {
    let col = st.registry.get(&name)?;
    let target = col.name().to_string();
    t.ok(alias_list(
        st.registry
            .aliases()
            .into_iter()
            .filter(|(_, c)| *c == target),
    ))
}

/// Body of `PUT /collections/{name}/index`.
#[derive(Deserialize)]
pub struct CreateIndex {
    field_name: String,
    #[serde(default)]
    field_schema: Option<Value>,
}

/// `PUT /collections/{name}/index`: declared indexes are stored, echoed in `payload_schema`
/// and carried by snapshots; filtering does not need them.
pub async fn create_index(
    t: Timer,
    State(st): State<AppState>,
    ApiPath(name): ApiPath<String>,
    ApiJson(body): ApiJson<CreateIndex>,
) -> ApiResult {
    let col = st.registry.get(&name)?;
    let schema = body.field_schema.unwrap_or(Value::String("keyword".into()));
    blocking(move || {
        col.update_config(|c| {
            c.payload_schema.insert(body.field_name, schema);
        })
    })
    .await?;
    t.ok(json!({"operation_id": 0, "status": "completed"}))
}

/// `DELETE /collections/{name}/index/{field}`
pub async fn delete_index(
    t: Timer,
    State(st): State<AppState>,
    ApiPath((name, field)): ApiPath<(String, String)>,
) -> ApiResult {
    let col = st.registry.get(&name)?;
    blocking(move || {
        col.update_config(|c| {
            c.payload_schema.remove(&field);
        })
    })
    .await?;
    t.ok(json!({"operation_id": 0, "status": "completed"}))
}
