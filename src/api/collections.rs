//! Collection, alias and payload-index endpoints.

use axum::extract::State;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::error::{ApiJson, ApiPath, ApiResult, Timer};
use crate::collection::config::{CollectionConfig, CollectionPatch};
use crate::collection::registry::AliasAction;
use crate::service::Services;

/// `GET /collections`
pub async fn list(t: Timer, State(st): State<Services>) -> ApiResult {
    let names: Vec<Value> = st
        .collections
        .list()
        .into_iter()
        .map(|n| json!({"name": n}))
        .collect();
    t.ok(json!({"collections": names}))
}

/// `PUT /collections/{name}`
pub async fn create(
    t: Timer,
    State(st): State<Services>,
    ApiPath(name): ApiPath<String>,
    ApiJson(config): ApiJson<CollectionConfig>,
) -> ApiResult {
    st.collections.create(name, config).await?;
    t.ok(true)
}

/// `GET /collections/{name}`
pub async fn get(
    t: Timer,
    State(st): State<Services>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult {
    let info = st.collections.get(&name)?;
    t.ok(info.config.info(info.points_count))
}

/// `DELETE /collections/{name}`: `false` (not 404) when missing, so `recreate_collection` works.
pub async fn delete(
    t: Timer,
    State(st): State<Services>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult {
    t.ok(st.collections.delete(name).await?)
}

/// `PATCH /collections/{name}`: tuning sections are stored and echoed.
pub async fn update(
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
pub async fn exists(
    t: Timer,
    State(st): State<Services>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult {
    t.ok(json!({"exists": st.collections.exists(&name)}))
}

/// Body of `POST /collections/aliases`.
#[derive(Deserialize)]
pub struct AliasActions {
    actions: Vec<AliasAction>,
}

/// `POST /collections/aliases`
pub async fn update_aliases(
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
pub async fn list_aliases(t: Timer, State(st): State<Services>) -> ApiResult {
    t.ok(alias_list(st.collections.aliases()))
}

/// `GET /collections/{name}/aliases`
pub async fn collection_aliases(
    t: Timer,
    State(st): State<Services>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult {
    t.ok(alias_list(st.collections.aliases_of(&name)?))
}

/// Body of `PUT /collections/{name}/index`.
#[derive(Deserialize)]
pub struct CreateIndex {
    field_name: String,
    #[serde(default)]
    field_schema: Option<Value>,
}

/// `PUT /collections/{name}/index`
pub async fn create_index(
    t: Timer,
    State(st): State<Services>,
    ApiPath(name): ApiPath<String>,
    ApiJson(body): ApiJson<CreateIndex>,
) -> ApiResult {
    st.collections
        .create_index(&name, body.field_name, body.field_schema)
        .await?;
    t.ok(json!({"operation_id": 0, "status": "completed"}))
}

/// `DELETE /collections/{name}/index/{field}`
pub async fn delete_index(
    t: Timer,
    State(st): State<Services>,
    ApiPath((name, field)): ApiPath<(String, String)>,
) -> ApiResult {
    st.collections.delete_index(&name, field).await?;
    t.ok(json!({"operation_id": 0, "status": "completed"}))
}
