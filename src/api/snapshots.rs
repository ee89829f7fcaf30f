//! Snapshot endpoints: collection, shard (shard 0) and full-storage snapshots, recovery,
//! upload, and the background-operation status this service adds.
//!
//! What stays here is HTTP: query and path parsing, multipart uploads, `Range` requests,
//! download headers and the 202 answer of `wait=false`.

use std::ops::Range;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::Router;
use futures::{StreamExt, TryStreamExt};
use serde::Deserialize;
use serde_json::Value;

use super::error::{ApiError, ApiJson, ApiPath, ApiQuery, ApiResult, Timer};
use super::guarded;
use crate::error::Error;
use crate::service::snapshots::{Outcome, RecoverRequest, Snapshots};
use crate::service::{Operation as Op, Services};
use crate::snapshot::{Priority, Scope};

/// Header carrying the id of a background operation (`wait=false`).
pub(crate) const OPERATION_ID_HEADER: &str = "x-operation-id";
/// Header carrying a snapshot's SHA-256 on download.
pub(crate) const CHECKSUM_HEADER: &str = "x-checksum-sha256";

/// Snapshot routes (merged outside the JSON body limit: uploads stream unbounded).
pub(crate) fn routes(st: &Services) -> Router<Services> {
    let g = |op, h| guarded(st, op, h);
    let c = |rest: &str| format!("/collections/{{name}}/snapshots{rest}");
    Router::new()
        .route(
            &c(""),
            g(Op::ListSnapshots, get(list_collection))
                .merge(g(Op::CreateSnapshot, post(create_collection))),
        )
        .route(
            &c("/recover"),
            g(
                Op::RecoverSnapshot,
                put(recover_collection).layer(json_limit()),
            ),
        )
        .route(
            &c("/upload"),
            g(
                Op::UploadSnapshot,
                post(upload_collection).layer(unlimited()),
            ),
        )
        .route(
            &c("/{snapshot}"),
            g(Op::DownloadSnapshot, get(download_collection))
                .merge(g(Op::DeleteSnapshot, delete(delete_collection))),
        )
        .route(
            "/snapshots",
            g(Op::ListSnapshots, get(list_full)).merge(g(Op::CreateSnapshot, post(create_full))),
        )
        .route(
            "/snapshots/{snapshot}",
            g(Op::DownloadSnapshot, get(download_full))
                .merge(g(Op::DeleteSnapshot, delete(delete_full))),
        )
        .merge(shard_routes(st))
        .route("/operations", g(Op::ListOperations, get(list_operations)))
        .route("/operations/{id}", g(Op::GetOperation, get(get_operation)))
}

/// The snapshots of shard 0, and its archive streamed on the fly.
fn shard_routes(st: &Services) -> Router<Services> {
    let g = |op, h| guarded(st, op, h);
    let s = |rest: &str| format!("/collections/{{name}}/shards/{{shard}}/snapshots{rest}");
    Router::new()
        .route(
            &s(""),
            g(Op::ListSnapshots, get(list_shard)).merge(g(Op::CreateSnapshot, post(create_shard))),
        )
        .route(
            &s("/recover"),
            g(Op::RecoverSnapshot, put(recover_shard).layer(json_limit())),
        )
        .route(
            &s("/upload"),
            g(Op::UploadSnapshot, post(upload_shard).layer(unlimited())),
        )
        .route(
            &s("/{snapshot}"),
            g(Op::DownloadSnapshot, get(download_shard))
                .merge(g(Op::DeleteSnapshot, delete(delete_shard))),
        )
        .route(
            "/collections/{name}/shards/{shard}/snapshot",
            g(Op::StreamShardSnapshot, get(stream_shard)),
        )
}

/// The body limit of recover requests (a location and a checksum).
fn json_limit() -> DefaultBodyLimit {
    DefaultBodyLimit::max(1 << 20)
}

/// Uploads stream through the unpacker: no limit.
fn unlimited() -> DefaultBodyLimit {
    DefaultBodyLimit::disable()
}

/// `?wait=` (default true on every snapshot endpoint, as in Qdrant).
#[derive(Deserialize, Default)]
pub(crate) struct WaitParam {
    #[serde(default)]
    pub(crate) wait: Option<bool>,
}

/// `200` with the result, or `202` with the operation id in [`OPERATION_ID_HEADER`] (the
/// body as Qdrant's: its clients refuse fields they do not know there).
pub(crate) fn answer<T: serde::Serialize>(t: &Timer, out: Outcome<T>) -> ApiResult {
    match out {
        Outcome::Done(v) => t.ok(v),
        Outcome::Started(id) => Ok(with_operation_id(t.accepted(), id)),
    }
}

/// As [`answer`], the `202` also carrying `result: {operation_id}` in the body: for this
/// service's own routes (backups), which no Qdrant client parses.
pub(crate) fn answer_with_id<T: serde::Serialize>(t: &Timer, out: Outcome<T>) -> ApiResult {
    match out {
        Outcome::Done(v) => t.ok(v),
        Outcome::Started(id) => Ok(with_operation_id(
            t.accepted_with(serde_json::json!({ "operation_id": id })),
            id,
        )),
    }
}

fn with_operation_id(mut resp: Response, id: u64) -> Response {
    resp.headers_mut()
        .insert(OPERATION_ID_HEADER, HeaderValue::from(id));
    resp
}

async fn create(st: Services, t: Timer, scope: Scope, wait: Option<bool>) -> ApiResult {
    answer(&t, st.snapshots.create(scope, wait.unwrap_or(true)).await?)
}

async fn list(st: Services, t: Timer, scope: Scope) -> ApiResult {
    t.ok(st.snapshots.list(&scope).await?)
}

async fn delete_snapshot(
    st: Services,
    t: Timer,
    scope: Scope,
    name: String,
    wait: Option<bool>,
) -> ApiResult {
    answer(
        &t,
        st.snapshots
            .delete(scope, name, wait.unwrap_or(true))
            .await?,
    )
}

/// Parses a single `bytes=` range against `size`; `Err` means unsatisfiable (416).
pub(crate) fn parse_range(headers: &HeaderMap, size: u64) -> Result<Option<Range<u64>>, ()> {
    let Some(v) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return Ok(None);
    };
    let Some(spec) = v.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None); // Multiple ranges: answer the whole object, as RFC 9110 allows.
    }
    let (a, b) = spec.split_once('-').ok_or(())?;
    let (a, b) = (a.trim(), b.trim());
    let range = if a.is_empty() {
        let n: u64 = b.parse().map_err(|_| ())?;
        if n == 0 {
            return Err(());
        }
        size.saturating_sub(n)..size
    } else {
        let start: u64 = a.parse().map_err(|_| ())?;
        let end = if b.is_empty() {
            size
        } else {
            b.parse::<u64>()
                .map_err(|_| ())?
                .saturating_add(1)
                .min(size)
        };
        if start >= size || start >= end {
            return Err(());
        }
        start..end
    };
    Ok(Some(range))
}

async fn download(
    st: Services,
    scope: Scope,
    name: String,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let meta = st.snapshots.stat(&scope, &name).await?;
    let size = meta.size;
    let range = match parse_range(&headers, size) {
        Ok(r) => r,
        Err(()) => return Ok(unsatisfiable(size)),
    };
    let dl = st.snapshots.download(meta, range.clone()).await?;
    let file = Download {
        name: &name,
        size,
        modified: dl.meta.last_modified,
        checksum: dl.checksum.as_deref(),
    };
    Ok(file.response(dl.stream, range))
}

/// `416` for a range outside an archive of `size` bytes.
pub(crate) fn unsatisfiable(size: u64) -> Response {
    (
        StatusCode::RANGE_NOT_SATISFIABLE,
        [(header::CONTENT_RANGE, format!("bytes */{size}"))],
    )
        .into_response()
}

/// An archive served for download.
pub(crate) struct Download<'a> {
    /// Its file name.
    pub name: &'a str,
    /// Its whole length.
    pub size: u64,
    /// When it was made.
    pub modified: chrono::DateTime<chrono::Utc>,
    /// Its SHA-256, when known.
    pub checksum: Option<&'a str>,
}

impl Download<'_> {
    /// The response carrying `stream`: the whole archive, or `range` of it (206).
    pub(crate) fn response(
        &self,
        stream: crate::backend::ByteStream,
        range: Option<Range<u64>>,
    ) -> Response {
        let size = self.size;
        let mut resp = Response::new(Body::from_stream(stream));
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        if let Ok(v) = HeaderValue::from_str(&format!(
            "attachment; filename=\"{}\"",
            self.name.replace('"', "")
        )) {
            h.insert(header::CONTENT_DISPOSITION, v);
        }
        if let Ok(v) = HeaderValue::from_str(&httpdate(self.modified)) {
            h.insert(header::LAST_MODIFIED, v);
        }
        if let Some(sum) = self.checksum {
            if let (Ok(etag), Ok(v)) = (
                HeaderValue::from_str(&format!("\"{sum}\"")),
                HeaderValue::from_str(sum),
            ) {
                h.insert(header::ETAG, etag);
                h.insert(CHECKSUM_HEADER, v);
            }
        }
        match range {
            Some(r) => {
                h.insert(header::CONTENT_LENGTH, HeaderValue::from(r.end - r.start));
                if let Ok(v) =
                    HeaderValue::from_str(&format!("bytes {}-{}/{}", r.start, r.end - 1, size))
                {
                    h.insert(header::CONTENT_RANGE, v);
                }
                *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
            }
            None => {
                h.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
            }
        }
        resp
    }
}

fn httpdate(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

/// Body of `PUT .../snapshots/recover`.
#[derive(Deserialize)]
pub(crate) struct RecoverBody {
    location: String,
    /// Priorities only matter between replicas; a single node restores and activates.
    #[serde(default)]
    #[allow(dead_code)]
    priority: Option<Priority>,
    #[serde(default)]
    checksum: Option<String>,
    #[serde(default)]
    api_key: Option<String>,
}

async fn recover(
    st: Services,
    t: Timer,
    target: String,
    shard: Option<u32>,
    wait: Option<bool>,
    body: RecoverBody,
) -> ApiResult {
    let req = RecoverRequest {
        location: body.location,
        checksum: body.checksum,
        api_key: body.api_key,
    };
    answer(
        &t,
        st.snapshots
            .recover(target, shard, req, wait.unwrap_or(true))
            .await?,
    )
}

/// Query of the upload endpoints.
#[derive(Deserialize, Default)]
pub(crate) struct UploadParams {
    #[serde(default)]
    wait: Option<bool>,
    /// Accepted for Qdrant compatibility; see [`RecoverBody`].
    #[serde(default)]
    #[allow(dead_code)]
    priority: Option<Priority>,
    #[serde(default)]
    checksum: Option<String>,
}

/// Streams the multipart field `snapshot` straight through the unpacker: nothing is
/// spooled and nothing is left in the snapshots directory. `wait=false` answers 202 once
/// the body has been received and recovered, since the body must be read either way.
/// Shard uploads answer `null` where collection uploads answer `true`, as Qdrant does.
async fn upload(
    st: Services,
    t: Timer,
    target: String,
    shard: Option<u32>,
    q: UploadParams,
    req: Request,
) -> ApiResult {
    st.snapshots
        .check_upload(&target, shard, q.checksum.as_deref())?;
    let bad = |text: String| ApiError::new(StatusCode::BAD_REQUEST, format!("Bad request: {text}"));
    let size = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut multipart = Multipart::from_request(req, &())
        .await
        .map_err(|e| bad(e.body_text()))?;
    loop {
        let field = multipart
            .next_field()
            .await
            .map_err(|e| bad(e.body_text()))?;
        let Some(field) = field else {
            return Err(Error::BadRequest("multipart field `snapshot` is missing".into()).into());
        };
        if field.name() != Some("snapshot") {
            continue;
        }
        let stream = field.map_err(std::io::Error::other).boxed();
        st.snapshots
            .recover_upload(&target, shard, stream, q.checksum.clone(), size)
            .await?;
        break;
    }
    if !q.wait.unwrap_or(true) {
        return Ok(t.accepted());
    }
    match shard {
        Some(_) => t.ok(Value::Null),
        None => t.ok(true),
    }
}

/// Streams a shard snapshot built on the fly: nothing is stored anywhere.
async fn stream_shard(
    State(st): State<Services>,
    ApiPath((name, shard)): ApiPath<(String, u32)>,
) -> Result<Response, ApiError> {
    let (file_name, stream) = st.snapshots.stream_shard(&name, shard).await?;
    let mut resp = Response::new(Body::from_stream(stream));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{file_name}\"")) {
        resp.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(resp)
}

async fn list_collection(
    t: Timer,
    State(st): State<Services>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult {
    let scope = st.snapshots.collection_scope(&name)?;
    list(st, t, scope).await
}

async fn create_collection(
    t: Timer,
    State(st): State<Services>,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<WaitParam>,
) -> ApiResult {
    let scope = st.snapshots.collection_scope(&name)?;
    create(st, t, scope, q.wait).await
}

async fn download_collection(
    State(st): State<Services>,
    ApiPath((name, snapshot)): ApiPath<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    download(st, Snapshots::stored_scope(&name, None)?, snapshot, headers).await
}

async fn delete_collection(
    t: Timer,
    State(st): State<Services>,
    ApiPath((name, snapshot)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<WaitParam>,
) -> ApiResult {
    delete_snapshot(
        st,
        t,
        Snapshots::stored_scope(&name, None)?,
        snapshot,
        q.wait,
    )
    .await
}

async fn recover_collection(
    t: Timer,
    State(st): State<Services>,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<WaitParam>,
    ApiJson(body): ApiJson<RecoverBody>,
) -> ApiResult {
    recover(st, t, name, None, q.wait, body).await
}

async fn upload_collection(
    t: Timer,
    State(st): State<Services>,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<UploadParams>,
    req: Request,
) -> ApiResult {
    upload(st, t, name, None, q, req).await
}

async fn list_full(t: Timer, State(st): State<Services>) -> ApiResult {
    list(st, t, Scope::Full).await
}

async fn create_full(
    t: Timer,
    State(st): State<Services>,
    ApiQuery(q): ApiQuery<WaitParam>,
) -> ApiResult {
    create(st, t, Scope::Full, q.wait).await
}

async fn download_full(
    State(st): State<Services>,
    ApiPath(snapshot): ApiPath<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    download(st, Scope::Full, snapshot, headers).await
}

async fn delete_full(
    t: Timer,
    State(st): State<Services>,
    ApiPath(snapshot): ApiPath<String>,
    ApiQuery(q): ApiQuery<WaitParam>,
) -> ApiResult {
    delete_snapshot(st, t, Scope::Full, snapshot, q.wait).await
}

async fn list_shard(
    t: Timer,
    State(st): State<Services>,
    ApiPath((name, shard)): ApiPath<(String, u32)>,
) -> ApiResult {
    let scope = st.snapshots.shard_scope(&name, shard)?;
    list(st, t, scope).await
}

async fn create_shard(
    t: Timer,
    State(st): State<Services>,
    ApiPath((name, shard)): ApiPath<(String, u32)>,
    ApiQuery(q): ApiQuery<WaitParam>,
) -> ApiResult {
    let scope = st.snapshots.shard_scope(&name, shard)?;
    create(st, t, scope, q.wait).await
}

async fn download_shard(
    State(st): State<Services>,
    ApiPath((name, shard, snapshot)): ApiPath<(String, u32, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    download(
        st,
        Snapshots::stored_scope(&name, Some(shard))?,
        snapshot,
        headers,
    )
    .await
}

async fn delete_shard(
    t: Timer,
    State(st): State<Services>,
    ApiPath((name, shard, snapshot)): ApiPath<(String, u32, String)>,
    ApiQuery(q): ApiQuery<WaitParam>,
) -> ApiResult {
    let scope = Snapshots::stored_scope(&name, Some(shard))?;
    delete_snapshot(st, t, scope, snapshot, q.wait).await
}

async fn recover_shard(
    t: Timer,
    State(st): State<Services>,
    ApiPath((name, shard)): ApiPath<(String, u32)>,
    ApiQuery(q): ApiQuery<WaitParam>,
    ApiJson(body): ApiJson<RecoverBody>,
) -> ApiResult {
    recover(st, t, name, Some(shard), q.wait, body).await
}

async fn upload_shard(
    t: Timer,
    State(st): State<Services>,
    ApiPath((name, shard)): ApiPath<(String, u32)>,
    ApiQuery(q): ApiQuery<UploadParams>,
    req: Request,
) -> ApiResult {
    upload(st, t, name, Some(shard), q, req).await
}

async fn list_operations(t: Timer, State(st): State<Services>) -> ApiResult {
    t.ok(st.snapshots.operations())
}

async fn get_operation(
    t: Timer,
    State(st): State<Services>,
    ApiPath(id): ApiPath<u64>,
) -> ApiResult {
    t.ok(st.snapshots.operation(id)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_like_rfc_9110() {
        let mut h = HeaderMap::new();
        assert_eq!(parse_range(&h, 10), Ok(None));
        h.insert(header::RANGE, HeaderValue::from_static("bytes=2-4"));
        assert_eq!(parse_range(&h, 10), Ok(Some(2..5)));
        h.insert(header::RANGE, HeaderValue::from_static("bytes=7-"));
        assert_eq!(parse_range(&h, 10), Ok(Some(7..10)));
        h.insert(header::RANGE, HeaderValue::from_static("bytes=-3"));
        assert_eq!(parse_range(&h, 10), Ok(Some(7..10)));
        h.insert(header::RANGE, HeaderValue::from_static("bytes=10-"));
        assert_eq!(parse_range(&h, 10), Err(()));
        h.insert(header::RANGE, HeaderValue::from_static("bytes=5-100"));
        assert_eq!(parse_range(&h, 10), Ok(Some(5..10)));
    }
}
