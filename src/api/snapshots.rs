//! Snapshot endpoints: collection, shard (shard 0) and full-storage snapshots, recovery,
//! upload, and the background-operation status this service adds.

use std::future::Future;
use std::ops::Range;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use futures::{StreamExt, TryStreamExt};
use serde::Deserialize;
use serde_json::Value;
use tokio::io::AsyncWriteExt;

use super::error::{ApiError, ApiJson, ApiPath, ApiQuery, ApiResult, Timer};
use super::AppState;
use crate::error::Error;
use crate::snapshot::format::{is_sha256_hex, SnapshotKind};
use crate::snapshot::hashing::Progress;
use crate::snapshot::{producer, Priority, Scope, SnapshotService};

/// Header carrying the id of a background operation (`wait=false`).
pub const OPERATION_ID_HEADER: &str = "x-operation-id";
/// Header carrying a snapshot's SHA-256 on download.
pub const CHECKSUM_HEADER: &str = "x-checksum-sha256";

/// Snapshot routes (merged outside the JSON body limit: uploads stream unbounded).
pub fn routes() -> Router<AppState> {
    let json_limit = DefaultBodyLimit::max(1 << 20);
    Router::new()
        .route(
            "/collections/{name}/snapshots",
            get(list_collection).post(create_collection),
        )
        .route(
            "/collections/{name}/snapshots/recover",
            put(recover_collection).layer(json_limit),
        )
        .route(
            "/collections/{name}/snapshots/upload",
            post(upload_collection).layer(DefaultBodyLimit::disable()),
        )
        .route(
            "/collections/{name}/snapshots/{snapshot}",
            get(download_collection).delete(delete_collection),
        )
        .route("/snapshots", get(list_full).post(create_full))
        .route(
            "/snapshots/{snapshot}",
            get(download_full).delete(delete_full),
        )
        .route(
            "/collections/{name}/shards/{shard}/snapshots",
            get(list_shard).post(create_shard),
        )
        .route(
            "/collections/{name}/shards/{shard}/snapshots/recover",
            put(recover_shard).layer(json_limit),
        )
        .route(
            "/collections/{name}/shards/{shard}/snapshots/upload",
            post(upload_shard).layer(DefaultBodyLimit::disable()),
        )
        .route(
            "/collections/{name}/shards/{shard}/snapshots/{snapshot}",
            get(download_shard).delete(delete_shard),
        )
        .route(
            "/collections/{name}/shards/{shard}/snapshot",
            get(stream_shard),
        )
        .route("/operations", get(list_operations))
        .route("/operations/{id}", get(get_operation))
}

/// `?wait=` (default true on every snapshot endpoint, as in Qdrant).
#[derive(Deserialize, Default)]
pub struct WaitParam {
    #[serde(default)]
    wait: Option<bool>,
}

/// Runs snapshot work detached from the request (a disconnect does not cancel it). With
/// `wait=false` answers 202 at once with the operation id in [`OPERATION_ID_HEADER`].
async fn run<F, Fut>(
    st: &AppState,
    t: &Timer,
    wait: Option<bool>,
    kind: &str,
    target: &str,
    work: F,
) -> ApiResult
where
    F: FnOnce(Arc<SnapshotService>, Progress) -> Fut,
    Fut: Future<Output = crate::error::Result<Value>> + Send + 'static,
{
    let svc = Arc::clone(&st.snapshots);
    if wait.unwrap_or(true) {
        let fut = work(svc, Progress::default());
        let value = tokio::spawn(fut)
            .await
            .map_err(|e| ApiError::from(Error::internal("snapshot task failed", e)))??;
        return t.ok(value);
    }
    let id = st
        .snapshots
        .ops
        .spawn(kind, target, |progress| work(svc, progress));
    let mut resp = t.accepted();
    resp.headers_mut()
        .insert(OPERATION_ID_HEADER, HeaderValue::from(id));
    Ok(resp)
}

fn to_value<T: serde::Serialize>(v: T) -> crate::error::Result<Value> {
    serde_json::to_value(v).map_err(|e| Error::internal("failed to serialize result", e))
}

/// This single-node service has one shard per collection: shard 0.
fn check_shard(name: &str, shard: u32) -> Result<(), ApiError> {
    if shard != 0 {
        return Err(Error::NotFound(format!(
            "Shard {shard} of collection `{name}` does not exist"
        ))
        .into());
    }
    Ok(())
}

fn shard_scope(st: &AppState, name: &str, shard: u32) -> Result<Scope, ApiError> {
    let col = st.registry.get(name)?;
    check_shard(name, shard)?;
    Ok(Scope::Shard(col.name().to_string(), shard))
}

fn collection_scope(st: &AppState, name: &str) -> Result<Scope, ApiError> {
    Ok(Scope::Collection(st.registry.get(name)?.name().to_string()))
}

async fn create(st: AppState, t: Timer, scope: Scope, wait: Option<bool>) -> ApiResult {
    let target = format!("{scope:?}");
    run(
        &st,
        &t,
        wait,
        "create_snapshot",
        &target,
        move |svc, progress| async move { to_value(svc.create(&scope, Some(progress)).await?) },
    )
    .await
}

async fn list(st: AppState, t: Timer, scope: Scope) -> ApiResult {
    t.ok(st.snapshots.list(&scope).await?)
}

async fn delete(
    st: AppState,
    t: Timer,
    scope: Scope,
    name: String,
    wait: Option<bool>,
) -> ApiResult {
    // Missing snapshots are a 404 even with wait=false.
    st.snapshots.stat(&scope, &name).await?;
    let target = format!("{scope:?}/{name}");
    run(
        &st,
        &t,
        wait,
        "delete_snapshot",
        &target,
        move |svc, _| async move {
            svc.delete(&scope, &name).await?;
            Ok(Value::Bool(true))
        },
    )
    .await
}

/// Parses a single `bytes=` range against `size`; `Err` means unsatisfiable (416).
fn parse_range(headers: &HeaderMap, size: u64) -> Result<Option<Range<u64>>, ()> {
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
    st: AppState,
    scope: Scope,
    name: String,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let meta = st.snapshots.stat(&scope, &name).await?;
    let range = match parse_range(&headers, meta.size) {
        Ok(r) => r,
        Err(()) => {
            return Ok((
                StatusCode::RANGE_NOT_SATISFIABLE,
                [(header::CONTENT_RANGE, format!("bytes */{}", meta.size))],
            )
                .into_response())
        }
    };
    let (checksum, stream) = st.snapshots.download(&meta, range.clone()).await?;
    let mut resp = Response::new(Body::from_stream(stream));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Ok(v) = HeaderValue::from_str(&format!(
        "attachment; filename=\"{}\"",
        name.replace('"', "")
    )) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    h.insert(
        header::LAST_MODIFIED,
        HeaderValue::from_str(&httpdate(meta.last_modified))
            .unwrap_or(HeaderValue::from_static("")),
    );
    if let Some(sum) = &checksum {
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
                HeaderValue::from_str(&format!("bytes {}-{}/{}", r.start, r.end - 1, meta.size))
            {
                h.insert(header::CONTENT_RANGE, v);
            }
            *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
        }
        None => {
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(meta.size));
        }
    }
    Ok(resp)
}

fn httpdate(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

/// Body of `PUT .../snapshots/recover`.
#[derive(Deserialize)]
pub struct RecoverBody {
    location: String,
    #[serde(default)]
    priority: Option<Priority>,
    #[serde(default)]
    checksum: Option<String>,
    #[serde(default)]
    api_key: Option<String>,
}

fn validate_checksum(c: &Option<String>, where_: &str) -> Result<(), ApiError> {
    match c {
        Some(c) if !is_sha256_hex(c.trim()) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("Validation error in {where_}: checksum: must be a SHA-256 hash of 64 hexadecimal characters"),
        )),
        _ => Ok(()),
    }
}

async fn recover(
    st: AppState,
    t: Timer,
    scope: Scope,
    target: String,
    wait: Option<bool>,
    body: RecoverBody,
) -> ApiResult {
    validate_checksum(&body.checksum, "JSON body")?;
    crate::registry::validate_name(&target)?;
    // Priorities only matter between replicas; a single node restores and activates.
    let _ = body.priority;
    let dir = scope
        .dir()?
        .ok_or_else(|| Error::bad_input("no snapshot directory"))?;
    let what = format!("{target} from {}", body.location);
    run(
        &st,
        &t,
        wait,
        "recover_snapshot",
        &what,
        move |svc, progress| async move {
            svc.recover(
                &target,
                &dir,
                &body.location,
                body.checksum,
                body.api_key.as_deref(),
                Some(progress),
            )
            .await?;
            Ok(Value::Bool(true))
        },
    )
    .await
}

/// Query of the upload endpoints.
#[derive(Deserialize, Default)]
pub struct UploadParams {
    #[serde(default)]
    wait: Option<bool>,
    #[serde(default)]
    priority: Option<Priority>,
    #[serde(default)]
    checksum: Option<String>,
}

/// Streams the multipart field `snapshot` straight through the unpacker: nothing is
/// spooled and nothing is left in the snapshots directory. `wait=false` answers 202 once
/// the body has been received and recovered, since the body must be read either way.
async fn upload(
    st: AppState,
    t: Timer,
    target: String,
    q: UploadParams,
    req: Request,
    unit: bool,
) -> ApiResult {
    validate_checksum(&q.checksum, "query parameters")?;
    crate::registry::validate_name(&target)?;
    let _ = q.priority;
    let mut multipart = Multipart::from_request(req, &()).await.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("Bad request: {}", e.body_text()),
        )
    })?;
    loop {
        let field = multipart.next_field().await.map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("Bad request: {}", e.body_text()),
            )
        })?;
        let Some(field) = field else {
            return Err(Error::BadRequest("multipart field `snapshot` is missing".into()).into());
        };
        if field.name() != Some("snapshot") {
            continue;
        }
        let stream = field.map_err(std::io::Error::other).boxed();
        st.snapshots
            .recover_from_stream(&target, stream, q.checksum.clone(), None)
            .await?;
        break;
    }
    if !q.wait.unwrap_or(true) {
        return Ok(t.accepted());
    }
    if unit {
        t.ok(Value::Null)
    } else {
        t.ok(true)
    }
}

/// Streams a shard snapshot built on the fly: nothing is stored anywhere.
async fn stream_shard(
    State(st): State<AppState>,
    ApiPath((name, shard)): ApiPath<(String, u32)>,
) -> Result<Response, ApiError> {
    let Scope::Shard(collection, shard) = shard_scope(&st, &name, shard)? else {
        return Err(Error::bad_input("not a shard").into());
    };
    let col = st.registry.get(&collection)?;
    let pinned = tokio::task::spawn_blocking(move || col.pin_image())
        .await
        .map_err(|e| ApiError::from(Error::internal("pin task failed", e)))??;
    let manifest = producer::manifest(
        SnapshotKind::Collection,
        std::slice::from_ref(&pinned),
        Default::default(),
    );
    let file_name = crate::snapshot::names::shard_snapshot(&collection, shard, chrono::Utc::now());
    let (writer, reader) = tokio::io::duplex(1 << 20);
    // Paced by the client reading it, like an S3 upload: normal priority.
    tokio::spawn(async move {
        match producer::write_archive(
            writer,
            &manifest,
            vec![pinned],
            crate::config::Compression::None,
            None,
        )
        .await
        {
            Ok((mut w, _)) => {
                let _ = w.shutdown().await;
            }
            // The client sees a truncated body, which the unpacker rejects.
            Err(e) => tracing::error!(error = %e, "streamed shard snapshot failed"),
        }
    });
    let mut resp = Response::new(Body::from_stream(
        tokio_util::io::ReaderStream::with_capacity(reader, 256 << 10),
    ));
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
    State(st): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult {
    let scope = collection_scope(&st, &name)?;
    list(st, t, scope).await
}

async fn create_collection(
    t: Timer,
    State(st): State<AppState>,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<WaitParam>,
) -> ApiResult {
    let scope = collection_scope(&st, &name)?;
    create(st, t, scope, q.wait).await
}

async fn download_collection(
    State(st): State<AppState>,
    ApiPath((name, snapshot)): ApiPath<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    // Snapshots of a deleted collection stay downloadable, as in Qdrant.
    download(st, Scope::Collection(name), snapshot, headers).await
}

async fn delete_collection(
    t: Timer,
    State(st): State<AppState>,
    ApiPath((name, snapshot)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<WaitParam>,
) -> ApiResult {
    delete(st, t, Scope::Collection(name), snapshot, q.wait).await
}

async fn recover_collection(
    t: Timer,
    State(st): State<AppState>,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<WaitParam>,
    ApiJson(body): ApiJson<RecoverBody>,
) -> ApiResult {
    recover(st, t, Scope::Collection(name.clone()), name, q.wait, body).await
}

async fn upload_collection(
    t: Timer,
    State(st): State<AppState>,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<UploadParams>,
    req: Request,
) -> ApiResult {
    upload(st, t, name, q, req, false).await
}

async fn list_full(t: Timer, State(st): State<AppState>) -> ApiResult {
    list(st, t, Scope::Full).await
}

async fn create_full(
    t: Timer,
    State(st): State<AppState>,
    ApiQuery(q): ApiQuery<WaitParam>,
) -> ApiResult {
    create(st, t, Scope::Full, q.wait).await
}

async fn download_full(
    State(st): State<AppState>,
    ApiPath(snapshot): ApiPath<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    download(st, Scope::Full, snapshot, headers).await
}

async fn delete_full(
    t: Timer,
    State(st): State<AppState>,
    ApiPath(snapshot): ApiPath<String>,
    ApiQuery(q): ApiQuery<WaitParam>,
) -> ApiResult {
    delete(st, t, Scope::Full, snapshot, q.wait).await
}

async fn list_shard(
    t: Timer,
    State(st): State<AppState>,
    ApiPath((name, shard)): ApiPath<(String, u32)>,
) -> ApiResult {
    let scope = shard_scope(&st, &name, shard)?;
    list(st, t, scope).await
}

async fn create_shard(
    t: Timer,
    State(st): State<AppState>,
    ApiPath((name, shard)): ApiPath<(String, u32)>,
    ApiQuery(q): ApiQuery<WaitParam>,
) -> ApiResult {
    let scope = shard_scope(&st, &name, shard)?;
    create(st, t, scope, q.wait).await
}

async fn download_shard(
    State(st): State<AppState>,
    ApiPath((name, shard, snapshot)): ApiPath<(String, u32, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    download(st, Scope::Shard(name, shard), snapshot, headers).await
}

async fn delete_shard(
    t: Timer,
    State(st): State<AppState>,
    ApiPath((name, shard, snapshot)): ApiPath<(String, u32, String)>,
    ApiQuery(q): ApiQuery<WaitParam>,
) -> ApiResult {
    delete(st, t, Scope::Shard(name, shard), snapshot, q.wait).await
}

async fn recover_shard(
    t: Timer,
    State(st): State<AppState>,
    ApiPath((name, shard)): ApiPath<(String, u32)>,
    ApiQuery(q): ApiQuery<WaitParam>,
    ApiJson(body): ApiJson<RecoverBody>,
) -> ApiResult {
    check_shard(&name, shard)?;
    recover(st, t, Scope::Shard(name.clone(), shard), name, q.wait, body).await
}

async fn upload_shard(
    t: Timer,
    State(st): State<AppState>,
    ApiPath((name, shard)): ApiPath<(String, u32)>,
    ApiQuery(q): ApiQuery<UploadParams>,
    req: Request,
) -> ApiResult {
    check_shard(&name, shard)?;
    upload(st, t, name, q, req, true).await
}

async fn list_operations(t: Timer, State(st): State<AppState>) -> ApiResult {
    t.ok(st.snapshots.ops.list())
}

async fn get_operation(
    t: Timer,
    State(st): State<AppState>,
    ApiPath(id): ApiPath<u64>,
) -> ApiResult {
    match st.snapshots.ops.get(id) {
        Some(s) => t.ok(s),
        None => Err(Error::NotFound(format!("Operation {id} not found")).into()),
    }
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
