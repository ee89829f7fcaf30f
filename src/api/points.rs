//! Point endpoints: Qdrant's JSON bodies parsed into service requests, results shaped back.

use axum::extract::State;
use axum::routing::{get, post, put};
use axum::Router;
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{json, Value};

use super::call::{Call, Write};
use super::error::{ApiPath, ApiResult, Timer};
use super::guarded;
use crate::collection::filter::Filter;
use crate::collection::points::{PointView, VectorSelect};
use crate::collection::types::{Payload, PointId};
use crate::collection::{PayloadChange, PointSelector, UpsertInput};
use crate::error::{Error, Result};
use crate::service::points::{
    payload_change, PayloadSelector, PointsUpdate, QueryInput, QueryRequest, ReadOptions, Records,
    ScoredPoints, ScrollRequest, UpdateResult, UpdateStatus, VectorShape,
};
use crate::service::{Operation as Op, Services};

/// Point writes, reads and queries.
pub(crate) fn routes(st: &Services) -> Router<Services> {
    let g = |op, h| guarded(st, op, h);
    let p = |rest: &str| format!("/collections/{{name}}/points{rest}");
    Router::new()
        .route(
            &p(""),
            g(Op::Upsert, put(upsert)).merge(g(Op::GetPoints, post(retrieve))),
        )
        .route(&p("/{id}"), g(Op::GetPoints, get(get_point)))
        .route(&p("/delete"), g(Op::DeletePoints, post(delete)))
        .route(
            &p("/payload"),
            g(Op::SetPayload, post(set_payload))
                .merge(g(Op::OverwritePayload, put(overwrite_payload))),
        )
        .route(
            &p("/payload/delete"),
            g(Op::DeletePayload, post(delete_payload)),
        )
        .route(
            &p("/payload/clear"),
            g(Op::ClearPayload, post(clear_payload)),
        )
        .route(&p("/batch"), g(Op::UpdateBatch, post(batch_update)))
        .route(&p("/scroll"), g(Op::Scroll, post(scroll)))
        .route(&p("/count"), g(Op::Count, post(count)))
        .route(&p("/query"), g(Op::Query, post(query)))
        .route(&p("/query/batch"), g(Op::QueryBatch, post(query_batch)))
        .route(&p("/search"), g(Op::Search, post(search)))
        .route(&p("/search/batch"), g(Op::SearchBatch, post(search_batch)))
}

fn update_json(r: &UpdateResult) -> Value {
    let status = match r.status {
        UpdateStatus::Acknowledged => "acknowledged",
        UpdateStatus::Completed => "completed",
    };
    json!({"operation_id": r.operation_id, "status": status})
}

/// `PUT /collections/{c}/points`
pub(crate) async fn upsert(w: Write<UpsertInput>) -> ApiResult {
    let (w, body) = w.split();
    let update = PointsUpdate::Upsert(body.into_points()?);
    apply(w, update).await
}

/// `with_payload`: a bool, a list of keys, or `{"include": [...]}` / `{"exclude": [...]}`.
#[derive(Deserialize, Clone, Debug)]
#[serde(untagged)]
pub(crate) enum WithPayload {
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
    fn selector(self) -> PayloadSelector {
        match self {
            WithPayload::Bool(true) => PayloadSelector::All,
            WithPayload::Bool(false) => PayloadSelector::None,
            WithPayload::Keys(k)
            | WithPayload::Selector {
                include: Some(k), ..
            } => PayloadSelector::Include(k),
            WithPayload::Selector {
                exclude: Some(k), ..
            } => PayloadSelector::Exclude(k),
            WithPayload::Selector { .. } => PayloadSelector::All,
        }
    }
}

/// `with_vector`: a bool or a list of vector names.
#[derive(Deserialize, Clone, Debug)]
#[serde(untagged)]
pub(crate) enum WithVector {
    /// All or nothing.
    Bool(bool),
    /// Only these names.
    Names(Vec<String>),
}

fn read_options(
    wp: Option<WithPayload>,
    wv: Option<WithVector>,
    payload_default: bool,
) -> ReadOptions {
    ReadOptions {
        payload: wp.unwrap_or(WithPayload::Bool(payload_default)).selector(),
        vectors: match wv.unwrap_or(WithVector::Bool(false)) {
            WithVector::Bool(false) => VectorSelect::None,
            WithVector::Bool(true) => VectorSelect::All,
            WithVector::Names(n) => VectorSelect::Names(n),
        },
    }
}

/// A point's vectors in an answer. Serialized straight to the response (never through a
/// `serde_json::Value`, which widens to f64): serde_json prints each f32 in its shortest
/// form, as Qdrant does, about half the digits of the f64, and without a per-number
/// allocation, which made pages of vectors slow to answer.
enum VectorOut {
    Absent,
    Single(Vec<f32>),
    Named(Vec<(String, Vec<f32>)>),
}

impl Serialize for VectorOut {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            VectorOut::Absent => s.serialize_none(),
            VectorOut::Single(v) => v.serialize(s),
            VectorOut::Named(named) => {
                let mut m = s.serialize_map(Some(named.len()))?;
                for (name, v) in named {
                    m.serialize_entry(name, v)?;
                }
                m.end()
            }
        }
    }
}

/// One point in an answer: a record, or a scored point with `version` and `score`.
#[derive(Serialize)]
struct PointOut {
    id: PointId,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    score: Option<f32>,
    payload: Option<Payload>,
    vector: VectorOut,
}

fn point_out(shape: VectorShape, read: &ReadOptions, p: PointView) -> PointOut {
    let payload = match read.payload {
        PayloadSelector::None => None,
        _ => p.payload,
    };
    let vector = if read.vectors == VectorSelect::None {
        VectorOut::Absent
    } else {
        match shape {
            VectorShape::Single => p
                .vectors
                .into_iter()
                .next()
                .map_or(VectorOut::Absent, |(_, v)| VectorOut::Single(v)),
            VectorShape::Named => VectorOut::Named(p.vectors),
        }
    };
    PointOut {
        id: p.id,
        version: None,
        score: None,
        payload,
        vector,
    }
}

fn records_out(r: Records, read: &ReadOptions) -> Vec<PointOut> {
    let shape = r.shape;
    r.points
        .into_iter()
        .map(|p| point_out(shape, read, p))
        .collect()
}

fn scored_out(s: ScoredPoints, read: &ReadOptions) -> Vec<PointOut> {
    let shape = s.shape;
    s.hits
        .into_iter()
        .map(|(score, p)| {
            let version = p.version;
            PointOut {
                version: Some(version),
                score: Some(score),
                ..point_out(shape, read, p)
            }
        })
        .collect()
}

/// `{"points": [...]}` of the query answers.
#[derive(Serialize)]
struct PointsOut {
    points: Vec<PointOut>,
}

/// A scroll page.
#[derive(Serialize)]
struct ScrollOut {
    points: Vec<PointOut>,
    next_page_offset: Option<PointId>,
}

/// Body of `POST /collections/{c}/points`.
#[derive(Deserialize)]
pub(crate) struct RetrieveBody {
    ids: Vec<PointId>,
    #[serde(default)]
    with_payload: Option<WithPayload>,
    #[serde(default)]
    with_vector: Option<WithVector>,
}

/// `POST /collections/{c}/points`
pub(crate) async fn retrieve(c: Call<RetrieveBody>) -> ApiResult {
    let read = read_options(c.body.with_payload, c.body.with_vector, true);
    let records = c.st.points.retrieve(&c.name, &c.body.ids, &read)?;
    c.t.ok(records_out(records, &read))
}

/// `GET /collections/{c}/points/{id}`
pub(crate) async fn get_point(
    t: Timer,
    State(st): State<Services>,
    ApiPath((name, id)): ApiPath<(String, String)>,
) -> ApiResult {
    let id: PointId = match id.parse::<u64>() {
        Ok(n) => PointId::Num(n),
        Err(_) => serde_json::from_value(Value::String(id.clone()))
            .map_err(|e| Error::bad_input(format!("invalid point id `{id}`: {e}")))?,
    };
    let read = read_options(
        Some(WithPayload::Bool(true)),
        Some(WithVector::Bool(true)),
        true,
    );
    let mut found = records_out(st.points.get(&name, id)?, &read);
    t.ok(found.pop())
}

/// Selects points by ids or filter (delete and payload updates).
#[derive(Deserialize)]
pub(crate) struct SelectorBody {
    #[serde(default)]
    points: Option<Vec<PointId>>,
    #[serde(default)]
    filter: Option<Filter>,
}

impl SelectorBody {
    fn selector(self) -> Result<PointSelector> {
        match (self.points, self.filter) {
            (Some(ids), None) => Ok(PointSelector::Ids(ids)),
            (None, Some(f)) => Ok(PointSelector::Filter(Box::new(f))),
            _ => Err(Error::bad_input("give exactly one of `points` or `filter`")),
        }
    }
}

/// `POST /collections/{c}/points/delete`
pub(crate) async fn delete(w: Write<SelectorBody>) -> ApiResult {
    let (w, body) = w.split();
    let update = PointsUpdate::Delete(body.selector()?);
    apply(w, update).await
}

/// Body of the set/overwrite payload endpoints.
#[derive(Deserialize)]
pub(crate) struct SetPayloadBody {
    payload: Payload,
    #[serde(default)]
    key: Option<String>,
    #[serde(flatten)]
    selector: SelectorBody,
}

/// Body of `POST /collections/{c}/points/payload/delete`.
#[derive(Deserialize)]
pub(crate) struct DeletePayloadBody {
    keys: Vec<String>,
    #[serde(flatten)]
    selector: SelectorBody,
}

/// Applies `update` to the collection a write names; answers Qdrant's update result.
async fn apply<B>(w: Write<B>, update: PointsUpdate) -> ApiResult {
    let r = w.st.points.update(&w.name, update, w.wait).await?;
    w.t.ok(update_json(&r))
}

/// `POST /collections/{c}/points/payload`: merge into existing payloads.
pub(crate) async fn set_payload(w: Write<SetPayloadBody>) -> ApiResult {
    let (w, body) = w.split();
    let change = payload_change(body.key.as_deref(), PayloadChange::Merge(body.payload))?;
    let update = PointsUpdate::Payload(body.selector.selector()?, change);
    apply(w, update).await
}

/// `PUT /collections/{c}/points/payload`: replace payloads.
pub(crate) async fn overwrite_payload(w: Write<SetPayloadBody>) -> ApiResult {
    let (w, body) = w.split();
    let change = PayloadChange::Overwrite(body.payload);
    let change = payload_change(body.key.as_deref(), change)?;
    let update = PointsUpdate::Payload(body.selector.selector()?, change);
    apply(w, update).await
}

/// `POST /collections/{c}/points/payload/delete`: remove keys.
pub(crate) async fn delete_payload(w: Write<DeletePayloadBody>) -> ApiResult {
    let (w, body) = w.split();
    let change = PayloadChange::DeleteKeys(body.keys);
    let update = PointsUpdate::Payload(body.selector.selector()?, change);
    apply(w, update).await
}

/// `POST /collections/{c}/points/payload/clear`: remove every key.
pub(crate) async fn clear_payload(w: Write<SelectorBody>) -> ApiResult {
    let (w, body) = w.split();
    let update = PointsUpdate::Payload(body.selector()?, PayloadChange::Clear);
    apply(w, update).await
}

/// One operation of `POST /collections/{c}/points/batch`.
#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum BatchOperation {
    /// `{"upsert": {"points": ..}}` or `{"upsert": {"batch": ..}}`.
    Upsert(UpsertInput),
    /// `{"delete": {"points": ..}}` or a filter.
    Delete(SelectorBody),
    /// `{"set_payload": {..}}`.
    SetPayload(SetPayloadBody),
    /// `{"overwrite_payload": {..}}`.
    OverwritePayload(SetPayloadBody),
    /// `{"delete_payload": {..}}`.
    DeletePayload(DeletePayloadBody),
    /// `{"clear_payload": {..}}`.
    ClearPayload(SelectorBody),
}

impl BatchOperation {
    fn into_update(self) -> Result<PointsUpdate> {
        Ok(match self {
            BatchOperation::Upsert(b) => PointsUpdate::Upsert(b.into_points()?),
            BatchOperation::Delete(s) => PointsUpdate::Delete(s.selector()?),
            BatchOperation::SetPayload(b) => PointsUpdate::Payload(
                b.selector.selector()?,
                payload_change(b.key.as_deref(), PayloadChange::Merge(b.payload))?,
            ),
            BatchOperation::OverwritePayload(b) => PointsUpdate::Payload(
                b.selector.selector()?,
                payload_change(b.key.as_deref(), PayloadChange::Overwrite(b.payload))?,
            ),
            BatchOperation::DeletePayload(b) => {
                PointsUpdate::Payload(b.selector.selector()?, PayloadChange::DeleteKeys(b.keys))
            }
            BatchOperation::ClearPayload(s) => {
                PointsUpdate::Payload(s.selector()?, PayloadChange::Clear)
            }
        })
    }
}

/// Body of `POST /collections/{c}/points/batch`.
#[derive(Deserialize)]
pub(crate) struct BatchBody {
    operations: Vec<BatchOperation>,
}

/// `POST /collections/{c}/points/batch`
pub(crate) async fn batch_update(w: Write<BatchBody>) -> ApiResult {
    let updates = w
        .body
        .operations
        .into_iter()
        .map(BatchOperation::into_update)
        .collect::<Result<Vec<_>>>()?;
    let results = w.st.points.update_batch(&w.name, updates, w.wait).await?;
    w.t.ok(results.iter().map(update_json).collect::<Vec<_>>())
}

/// Body of `POST /collections/{c}/points/scroll`.
#[derive(Deserialize)]
pub(crate) struct ScrollBody {
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
pub(crate) async fn scroll(c: Call<ScrollBody>) -> ApiResult {
    let read = read_options(c.body.with_payload, c.body.with_vector, true);
    let req = ScrollRequest {
        offset: c.body.offset,
        limit: c.body.limit.unwrap_or(10),
        filter: c.body.filter,
        read: read.clone(),
    };
    let page = c.st.points.scroll(&c.name, req).await?;
    c.t.ok(ScrollOut {
        points: records_out(page.records, &read),
        next_page_offset: page.next_offset,
    })
}

/// Body of `POST /collections/{c}/points/count`.
#[derive(Deserialize)]
pub(crate) struct CountBody {
    #[serde(default)]
    filter: Option<Filter>,
}

/// `POST /collections/{c}/points/count`
pub(crate) async fn count(c: Call<CountBody>) -> ApiResult {
    let n = c.st.points.count(&c.name, c.body.filter).await?;
    c.t.ok(json!({"count": n}))
}

/// Body of `POST /collections/{c}/points/query`.
#[derive(Deserialize)]
pub(crate) struct QueryBody {
    #[serde(default)]
    query: Option<Value>,
    #[serde(default)]
    using: Option<String>,
    #[serde(flatten)]
    shared: Shared,
}

/// Parses a JSON query: `[..]`, `{"nearest": ..}`, or a point id.
fn query_input(q: &Value) -> Result<QueryInput> {
    match q {
        Value::Object(m) if m.contains_key("nearest") => query_input(&m["nearest"]),
        Value::Object(m) => Err(Error::bad_input(format!(
            "unsupported query type `{}`: this service supports nearest-neighbour queries",
            m.keys().next().map(String::as_str).unwrap_or("")
        ))),
        Value::Array(_) => serde_json::from_value::<Vec<f32>>(q.clone())
            .map(QueryInput::Vector)
            .map_err(|e| Error::bad_input(format!("query vector is not a list of numbers: {e}"))),
        Value::Number(_) | Value::String(_) => serde_json::from_value(q.clone())
            .map(QueryInput::Point)
            .map_err(|e| Error::bad_input(e.to_string())),
        _ => Err(Error::bad_input(
            "query must be a vector, {\"nearest\": ...} or a point id",
        )),
    }
}

/// A search or query body, parsed into the one request the service answers.
trait IntoQuery {
    /// The request, and how its points are to be shown.
    fn into_request(self) -> Result<(QueryRequest, ReadOptions)>;
}

/// The fields every search and query body shares besides its query.
#[derive(Deserialize)]
struct Shared {
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

impl Shared {
    fn request(self, query: Option<QueryInput>, using: String) -> (QueryRequest, ReadOptions) {
        let read = read_options(self.with_payload, self.with_vector, false);
        let request = QueryRequest {
            query,
            using,
            filter: self.filter,
            limit: self.limit.unwrap_or(10),
            offset: self.offset.unwrap_or(0),
            score_threshold: self.score_threshold,
            read: read.clone(),
        };
        (request, read)
    }
}

impl IntoQuery for QueryBody {
    fn into_request(self) -> Result<(QueryRequest, ReadOptions)> {
        let query = self.query.as_ref().map(query_input).transpose()?;
        Ok(self.shared.request(query, self.using.unwrap_or_default()))
    }
}

/// Answers a batch of searches or queries: each one's hits with how to show them.
async fn batch<B: IntoQuery>(
    st: &Services,
    name: &str,
    searches: Vec<B>,
) -> Result<Vec<(ScoredPoints, ReadOptions)>> {
    let (reqs, reads): (Vec<_>, Vec<_>) = searches
        .into_iter()
        .map(B::into_request)
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .unzip();
    let results = st.points.query_batch(name, reqs).await?;
    Ok(results.into_iter().zip(reads).collect())
}

/// `POST /collections/{c}/points/query`
pub(crate) async fn query(c: Call<QueryBody>) -> ApiResult {
    let (req, read) = c.body.into_request()?;
    let hits = c.st.points.query(&c.name, req).await?;
    c.t.ok(PointsOut {
        points: scored_out(hits, &read),
    })
}

/// Body of `POST /collections/{c}/points/query/batch`.
#[derive(Deserialize)]
pub(crate) struct QueryBatchBody {
    searches: Vec<QueryBody>,
}

/// `POST /collections/{c}/points/query/batch`
pub(crate) async fn query_batch(c: Call<QueryBatchBody>) -> ApiResult {
    let answers = batch(&c.st, &c.name, c.body.searches).await?;
    c.t.ok(answers
        .into_iter()
        .map(|(hits, read)| PointsOut {
            points: scored_out(hits, &read),
        })
        .collect::<Vec<_>>())
}

/// Body of the legacy `POST /collections/{c}/points/search`.
#[derive(Deserialize)]
pub(crate) struct SearchBody {
    vector: Value,
    #[serde(flatten)]
    shared: Shared,
}

impl IntoQuery for SearchBody {
    fn into_request(self) -> Result<(QueryRequest, ReadOptions)> {
        // `{"name": "img", "vector": [..]}` selects a named vector.
        let (using, raw) = match self.vector {
            Value::Object(mut m) => (
                m.get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                m.remove("vector").unwrap_or(Value::Null),
            ),
            other => (String::new(), other),
        };
        let v: Vec<f32> = serde_json::from_value(raw)
            .map_err(|e| Error::bad_input(format!("vector is not a list of numbers: {e}")))?;
        Ok(self.shared.request(Some(QueryInput::Vector(v)), using))
    }
}

/// `POST /collections/{c}/points/search` (legacy; answers a bare list).
pub(crate) async fn search(c: Call<SearchBody>) -> ApiResult {
    let (req, read) = c.body.into_request()?;
    let hits = c.st.points.query(&c.name, req).await?;
    c.t.ok(scored_out(hits, &read))
}

/// Body of `POST /collections/{c}/points/search/batch`.
#[derive(Deserialize)]
pub(crate) struct SearchBatchBody {
    searches: Vec<SearchBody>,
}

/// `POST /collections/{c}/points/search/batch`
pub(crate) async fn search_batch(c: Call<SearchBatchBody>) -> ApiResult {
    let answers = batch(&c.st, &c.name, c.body.searches).await?;
    c.t.ok(answers
        .into_iter()
        .map(|(hits, read)| scored_out(hits, &read))
        .collect::<Vec<_>>())
}
