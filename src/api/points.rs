//! Point endpoints: upsert, retrieve, delete, payload updates, scroll, count, query, search.

use std::sync::Arc;

use axum::extract::State;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::error::{ApiError, ApiJson, ApiPath, ApiQuery, ApiResult, Timer};
use super::AppState;
use crate::collection::filter::Filter;
use crate::collection::points::{PointView, VectorSelect};
use crate::collection::record::Operation;
use crate::collection::types::{
    BatchVectors, Payload, PointId, PointWrite, VectorInput, VectorsConfig, DEFAULT_VECTOR,
};
use crate::collection::{Collection, PointInput};
use crate::error::Error;

/// Query parameters of writes (`ordering` and `timeout` are accepted and ignored).
#[derive(Deserialize, Default)]
pub struct WriteParams {
    #[serde(default)]
    wait: Option<bool>,
}

fn update_result(t: &Timer, op_id: u64, wait: Option<bool>) -> ApiResult {
    // Writes are durable before the answer either way; `wait=false` only changes the word.
    let status = if wait.unwrap_or(false) {
        "completed"
    } else {
        "acknowledged"
    };
    t.ok(json!({"operation_id": op_id, "status": status}))
}

#[derive(Deserialize)]
struct PointIn {
    id: PointId,
    #[serde(default)]
    vector: Option<VectorInput>,
    #[serde(default)]
    payload: Option<Payload>,
}

#[derive(Deserialize)]
struct BatchIn {
    ids: Vec<PointId>,
    vectors: BatchVectors,
    #[serde(default)]
    payloads: Option<Vec<Option<Payload>>>,
}

/// Body of `PUT /collections/{c}/points`: the `points` or the `batch` form.
#[derive(Deserialize)]
pub struct UpsertBody {
    #[serde(default)]
    points: Option<Vec<PointIn>>,
    #[serde(default)]
    batch: Option<BatchIn>,
}

fn flatten_upsert(body: UpsertBody) -> Result<Vec<PointInput>, Error> {
    match (body.points, body.batch) {
        (Some(points), None) => Ok(points
            .into_iter()
            .map(|p| {
                (
                    p.id,
                    p.vector.map(VectorInput::into_named).unwrap_or_default(),
                    p.payload,
                )
            })
            .collect()),
        (None, Some(batch)) => {
            let n = batch.ids.len();
            if let Some(p) = &batch.payloads {
                if p.len() != n {
                    return Err(Error::bad_input(format!(
                        "batch has {n} ids but {} payloads",
                        p.len()
                    )));
                }
            }
            let mut payloads = batch.payloads.unwrap_or_default().into_iter();
            let vectors: Vec<Vec<(String, Vec<f32>)>> = match batch.vectors {
                BatchVectors::Plain(v) => {
                    if v.len() != n {
                        return Err(Error::bad_input(format!(
                            "batch has {n} ids but {} vectors",
                            v.len()
                        )));
                    }
                    v.into_iter()
                        .map(|x| vec![(DEFAULT_VECTOR.to_string(), x)])
                        .collect()
                }
                BatchVectors::Named(map) => {
                    let mut per_point = vec![Vec::new(); n];
                    for (name, list) in map {
                        if list.len() != n {
                            return Err(Error::bad_input(format!(
                                "batch has {n} ids but {} vectors named `{name}`",
                                list.len()
                            )));
                        }
                        for (slot, v) in per_point.iter_mut().zip(list) {
                            slot.push((name.clone(), v));
                        }
                    }
                    per_point
                }
            };
            Ok(batch
                .ids
                .into_iter()
                .zip(vectors)
                .map(|(id, v)| (id, v, payloads.next().flatten()))
                .collect())
        }
        _ => Err(Error::bad_input(
            "the body must have exactly one of `points` or `batch`",
        )),
    }
}

/// `PUT /collections/{c}/points`
pub async fn upsert(
    t: Timer,
    State(st): State<AppState>,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<WriteParams>,
    ApiJson(body): ApiJson<UpsertBody>,
) -> ApiResult {
    let col = st.registry.get(&name)?;
    let points = col.prepare(flatten_upsert(body)?)?;
    let op_id = col.write(Operation::Upsert(points)).await?;
    update_result(&t, op_id, q.wait)
}

/// `with_payload`: a bool, a list of keys, or `{"include": [...]}` / `{"exclude": [...]}`.
#[derive(Deserialize, Clone, Debug)]
#[serde(untagged)]
pub enum WithPayload {
    /// All or nothing.
    Bool(bool),
    /// Only these keys.
    Keys(Vec<String>),
    /// Include / exclude lists.
    Selector {
        /// Only these keys.
        #[serde(default)]
        include: Option<Vec<String>>,
        /// All but these keys.
        #[serde(default)]
        exclude: Option<Vec<String>>,
    },
}

impl WithPayload {
    fn wanted(&self) -> bool {
        !matches!(self, WithPayload::Bool(false))
    }
    fn project(&self, p: Payload) -> Payload {
        match self {
            WithPayload::Bool(_) => p,
            WithPayload::Keys(keys)
            | WithPayload::Selector {
                include: Some(keys),
                ..
            } => p.into_iter().filter(|(k, _)| keys.contains(k)).collect(),
            WithPayload::Selector {
                exclude: Some(keys),
                ..
            } => p.into_iter().filter(|(k, _)| !keys.contains(k)).collect(),
            WithPayload::Selector { .. } => p,
        }
    }
}

/// `with_vector`: a bool or a list of vector names.
#[derive(Deserialize, Clone, Debug)]
#[serde(untagged)]
pub enum WithVector {
    /// All or nothing.
    Bool(bool),
    /// Only these names.
    Names(Vec<String>),
}

impl WithVector {
    fn select(&self) -> VectorSelect {
        match self {
            WithVector::Bool(false) => VectorSelect::None,
            WithVector::Bool(true) => VectorSelect::All,
            WithVector::Names(n) => VectorSelect::Names(n.clone()),
        }
    }
}

fn vector_json(config: &VectorsConfig, vectors: Vec<(String, Vec<f32>)>, requested: bool) -> Value {
    if !requested {
        return Value::Null;
    }
    match config {
        VectorsConfig::Single(_) => vectors
            .into_iter()
            .next()
            .map_or(Value::Null, |(_, v)| json!(v)),
        VectorsConfig::Named(_) => {
            Value::Object(vectors.into_iter().map(|(n, v)| (n, json!(v))).collect())
        }
    }
}

fn record_json(cfg: &VectorsConfig, p: PointView, wp: &WithPayload, wv: &WithVector) -> Value {
    let payload = if wp.wanted() {
        p.payload.map(|x| Value::Object(wp.project(x)))
    } else {
        None
    };
    json!({
        "id": p.id,
        "payload": payload,
        "vector": vector_json(cfg, p.vectors, !matches!(wv, WithVector::Bool(false))),
    })
}

fn scored_json(
    cfg: &VectorsConfig,
    score: f32,
    p: PointView,
    wp: &WithPayload,
    wv: &WithVector,
) -> Value {
    let version = p.version;
    let mut v = record_json(cfg, p, wp, wv);
    if let Value::Object(m) = &mut v {
        m.insert("version".into(), json!(version));
        m.insert("score".into(), json!(score));
    }
    v
}

/// Body of `POST /collections/{c}/points`.
#[derive(Deserialize)]
pub struct RetrieveBody {
    ids: Vec<PointId>,
    #[serde(default)]
    with_payload: Option<WithPayload>,
    #[serde(default)]
    with_vector: Option<WithVector>,
}

/// `POST /collections/{c}/points`
pub async fn retrieve(
    t: Timer,
    State(st): State<AppState>,
    ApiPath(name): ApiPath<String>,
    ApiJson(body): ApiJson<RetrieveBody>,
) -> ApiResult {
    let col = st.registry.get(&name)?;
    let wp = body.with_payload.unwrap_or(WithPayload::Bool(true));
    let wv = body.with_vector.unwrap_or(WithVector::Bool(false));
    let cfg = col.config().vectors;
    let points = col.read(|p| p.retrieve(&body.ids, wp.wanted(), &wv.select()));
    t.ok(points
        .into_iter()
        .map(|p| record_json(&cfg, p, &wp, &wv))
        .collect::<Vec<_>>())
}

/// `GET /collections/{c}/points/{id}`
pub async fn get_point(
    t: Timer,
    State(st): State<AppState>,
    ApiPath((name, id)): ApiPath<(String, String)>,
) -> ApiResult {
    let col = st.registry.get(&name)?;
    let id: PointId = match id.parse::<u64>() {
        Ok(n) => PointId::Num(n),
        Err(_) => serde_json::from_value(Value::String(id.clone()))
            .map_err(|e| Error::bad_input(format!("invalid point id `{id}`: {e}")))?,
    };
    let cfg = col.config().vectors;
    let found = col
        .read(|p| p.retrieve(&[id], true, &VectorSelect::All))
        .into_iter()
        .next();
    match found {
        Some(p) => t.ok(record_json(
            &cfg,
            p,
            &WithPayload::Bool(true),
            &WithVector::Bool(true),
        )),
        None => Err(Error::NotFound(format!("No point with id {id} found")).into()),
    }
}

/// Selects points by ids or filter (delete and payload updates).
#[derive(Deserialize)]
pub struct PointsSelector {
    #[serde(default)]
    points: Option<Vec<PointId>>,
    #[serde(default)]
    filter: Option<Filter>,
}

fn selected_ids(col: &Collection, sel: &PointsSelector) -> Result<Vec<PointId>, Error> {
    match (&sel.points, &sel.filter) {
        (Some(ids), None) => Ok(ids.clone()),
        (None, Some(f)) => Ok(col.read(|p| p.matching_ids(f))),
        _ => Err(Error::bad_input("give exactly one of `points` or `filter`")),
    }
}

/// `POST /collections/{c}/points/delete`
pub async fn delete(
    t: Timer,
    State(st): State<AppState>,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<WriteParams>,
    ApiJson(sel): ApiJson<PointsSelector>,
) -> ApiResult {
    let col = st.registry.get(&name)?;
    let ids = selected_ids(&col, &sel)?;
    let op_id = col.write(Operation::Delete(ids)).await?;
    update_result(&t, op_id, q.wait)
}

/// Body of the payload endpoints.
#[derive(Deserialize)]
pub struct SetPayloadBody {
    payload: Payload,
    #[serde(flatten)]
    selector: PointsSelector,
}

async fn payload_update(
    t: Timer,
    st: AppState,
    name: String,
    wait: Option<bool>,
    body: SetPayloadBody,
    overwrite: bool,
) -> ApiResult {
    let col: Arc<Collection> = st.registry.get(&name)?;
    let ids = selected_ids(&col, &body.selector)?;
    let points = col.read(|store| {
        ids.iter()
            .filter_map(|id| store.get(id))
            .map(|p| {
                let mut payload = if overwrite {
                    Map::new()
                } else {
                    p.payload.unwrap_or_default()
                };
                payload.extend(body.payload.clone());
                // Stored vectors are already validated and normalized: written back as they are.
                PointWrite {
                    id: p.id,
                    vectors: p.vectors,
                    payload: Some(payload),
                }
            })
            .collect::<Vec<_>>()
    });
    let op_id = col.write(Operation::Upsert(points)).await?;
    update_result(&t, op_id, wait)
}

/// `POST /collections/{c}/points/payload`: merge into existing payloads.
pub async fn set_payload(
    t: Timer,
    State(st): State<AppState>,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<WriteParams>,
    ApiJson(body): ApiJson<SetPayloadBody>,
) -> ApiResult {
    payload_update(t, st, name, q.wait, body, false).await
}

/// `PUT /collections/{c}/points/payload`: replace payloads.
pub async fn overwrite_payload(
    t: Timer,
    State(st): State<AppState>,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<WriteParams>,
    ApiJson(body): ApiJson<SetPayloadBody>,
) -> ApiResult {
    payload_update(t, st, name, q.wait, body, true).await
}

/// Body of `POST /collections/{c}/points/scroll`.
#[derive(Deserialize)]
pub struct ScrollBody {
    #[serde(default)]
    offset: Option<PointId>,
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    filter: Option<Filter>,
    #[serde(default)]
    with_payload: Option<WithPayload>,
    #[serde(default)]
    with_vector: Option<WithVector>,
}

/// `POST /collections/{c}/points/scroll`
pub async fn scroll(
    t: Timer,
    State(st): State<AppState>,
    ApiPath(name): ApiPath<String>,
    ApiJson(body): ApiJson<ScrollBody>,
) -> ApiResult {
    let col = st.registry.get(&name)?;
    let wp = body.with_payload.unwrap_or(WithPayload::Bool(true));
    let wv = body.with_vector.unwrap_or(WithVector::Bool(false));
    let cfg = col.config().vectors;
    let limit = body.limit.unwrap_or(10);
    let (points, next) = col.read(|p| {
        p.scroll(
            body.offset,
            limit,
            body.filter.as_ref(),
            wp.wanted(),
            &wv.select(),
        )
    });
    let points: Vec<Value> = points
        .into_iter()
        .map(|p| record_json(&cfg, p, &wp, &wv))
        .collect();
    t.ok(json!({"points": points, "next_page_offset": next}))
}

/// Body of `POST /collections/{c}/points/count`.
#[derive(Deserialize)]
pub struct CountBody {
    #[serde(default)]
    filter: Option<Filter>,
}

/// `POST /collections/{c}/points/count`
pub async fn count(
    t: Timer,
    State(st): State<AppState>,
    ApiPath(name): ApiPath<String>,
    ApiJson(body): ApiJson<CountBody>,
) -> ApiResult {
    let col = st.registry.get(&name)?;
    let n = col.read(|p| p.count(body.filter.as_ref()));
    t.ok(json!({"count": n}))
}

/// Body of `POST /collections/{c}/points/query`.
#[derive(Deserialize)]
pub struct QueryBody {
    #[serde(default)]
    query: Option<Value>,
    #[serde(default)]
    using: Option<String>,
    #[serde(default)]
    filter: Option<Filter>,
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    offset: Option<usize>,
    #[serde(default)]
    score_threshold: Option<f32>,
    #[serde(default)]
    with_payload: Option<WithPayload>,
    #[serde(default)]
    with_vector: Option<WithVector>,
}

/// Resolves a query (`[..]`, `{"nearest": ..}`, or a point id) into a vector.
fn query_vector(col: &Collection, q: &Value, using: &str) -> Result<Vec<f32>, Error> {
    match q {
        Value::Object(m) if m.contains_key("nearest") => query_vector(col, &m["nearest"], using),
        Value::Object(m) => Err(Error::bad_input(format!(
            "unsupported query type `{}`: this service supports nearest-neighbour queries",
            m.keys().next().map(String::as_str).unwrap_or("")
        ))),
        Value::Array(_) => serde_json::from_value::<Vec<f32>>(q.clone())
            .map_err(|e| Error::bad_input(format!("query vector is not a list of numbers: {e}"))),
        Value::Number(_) | Value::String(_) => {
            let id: PointId =
                serde_json::from_value(q.clone()).map_err(|e| Error::bad_input(e.to_string()))?;
            let point = col
                .read(|p| p.get(&id))
                .ok_or_else(|| Error::NotFound(format!("No point with id {id} found")))?;
            point
                .vectors
                .into_iter()
                .find(|(n, _)| n == using)
                .map(|(_, v)| v)
                .ok_or_else(|| Error::bad_input(format!("point {id} has no vector `{using}`")))
        }
        _ => Err(Error::bad_input(
            "query must be a vector, {\"nearest\": ...} or a point id",
        )),
    }
}

/// Normalizes and checks a query vector against the vector space `using`.
fn prepared_query(col: &Collection, using: &str, v: Vec<f32>) -> Result<Vec<f32>, Error> {
    let mut prepared = col.prepare(vec![(PointId::Num(0), vec![(using.to_string(), v)], None)])?;
    Ok(prepared
        .pop()
        .and_then(|p| p.vectors.into_iter().next())
        .map(|(_, v)| v)
        .unwrap_or_default())
}

/// `POST /collections/{c}/points/query`
pub async fn query(
    t: Timer,
    State(st): State<AppState>,
    ApiPath(name): ApiPath<String>,
    ApiJson(body): ApiJson<QueryBody>,
) -> ApiResult {
    let col = st.registry.get(&name)?;
    let wp = body.with_payload.unwrap_or(WithPayload::Bool(false));
    let wv = body.with_vector.unwrap_or(WithVector::Bool(false));
    let cfg = col.config().vectors;
    let limit = body.limit.unwrap_or(10);
    let using = body.using.unwrap_or_default();
    let points: Vec<Value> = match &body.query {
        None => {
            let (page, _) = col
                .read(|p| p.scroll(None, limit, body.filter.as_ref(), wp.wanted(), &wv.select()));
            page.into_iter()
                .map(|p| scored_json(&cfg, 0.0, p, &wp, &wv))
                .collect()
        }
        Some(q) => {
            let v = prepared_query(&col, &using, query_vector(&col, q, &using)?)?;
            let offset = body.offset.unwrap_or(0);
            let hits = search_blocking(
                &col,
                using,
                v,
                limit,
                offset,
                body.filter,
                body.score_threshold,
                &wp,
                &wv,
            )
            .await?;
            hits.into_iter()
                .map(|(s, p)| scored_json(&cfg, s, p, &wp, &wv))
                .collect()
        }
    };
    t.ok(json!({"points": points}))
}

#[allow(clippy::too_many_arguments)]
async fn search_blocking(
    col: &Arc<Collection>,
    using: String,
    v: Vec<f32>,
    limit: usize,
    offset: usize,
    filter: Option<Filter>,
    threshold: Option<f32>,
    wp: &WithPayload,
    wv: &WithVector,
) -> Result<Vec<(f32, PointView)>, ApiError> {
    let col = Arc::clone(col);
    let (want_payload, select) = (wp.wanted(), wv.select());
    // A full scan takes milliseconds: keep it off the async workers.
    tokio::task::spawn_blocking(move || {
        col.read(|p| {
            p.search(
                &using,
                &v,
                limit,
                offset,
                filter.as_ref(),
                threshold,
                want_payload,
                &select,
            )
        })
    })
    .await
    .map_err(|e| ApiError::from(Error::internal("search task failed", e)))
}

/// Body of the legacy `POST /collections/{c}/points/search`.
#[derive(Deserialize)]
pub struct SearchBody {
    vector: Value,
    #[serde(default)]
    filter: Option<Filter>,
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    offset: Option<usize>,
    #[serde(default)]
    score_threshold: Option<f32>,
    #[serde(default)]
    with_payload: Option<WithPayload>,
    #[serde(default)]
    with_vector: Option<WithVector>,
}

/// `POST /collections/{c}/points/search` (legacy; answers a bare list).
pub async fn search(
    t: Timer,
    State(st): State<AppState>,
    ApiPath(name): ApiPath<String>,
    ApiJson(body): ApiJson<SearchBody>,
) -> ApiResult {
    let col = st.registry.get(&name)?;
    let wp = body.with_payload.unwrap_or(WithPayload::Bool(false));
    let wv = body.with_vector.unwrap_or(WithVector::Bool(false));
    let cfg = col.config().vectors;
    // `{"name": "img", "vector": [..]}` selects a named vector.
    let (using, raw) = match &body.vector {
        Value::Object(m) => (
            m.get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            m.get("vector").cloned().unwrap_or(Value::Null),
        ),
        other => (String::new(), other.clone()),
    };
    let v: Vec<f32> = serde_json::from_value(raw)
        .map_err(|e| Error::bad_input(format!("vector is not a list of numbers: {e}")))?;
    let v = prepared_query(&col, &using, v)?;
    let hits = search_blocking(
        &col,
        using,
        v,
        body.limit.unwrap_or(10),
        body.offset.unwrap_or(0),
        body.filter,
        body.score_threshold,
        &wp,
        &wv,
    )
    .await?;
    t.ok(hits
        .into_iter()
        .map(|(s, p)| scored_json(&cfg, s, p, &wp, &wv))
        .collect::<Vec<_>>())
}
