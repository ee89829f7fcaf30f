//! Backup endpoints (`/backup/sources/...`): sources, running a backup, its records, a
//! shard archive for download. HTTP only; the rules are in `service::backups`.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;

use super::error::{optional_body, ApiError, ApiJson, ApiPath, ApiQuery, ApiResult, Timer};
use super::guarded;
use super::snapshots::{answer_with_id, parse_range, unsatisfiable, Download, WaitParam};
use crate::backup::restore::RestoreRequest;
use crate::service::{Operation as Op, Services};

/// Backup routes.
pub(crate) fn routes(st: &Services) -> Router<Services> {
    let g = |op, h| guarded(st, op, h);
    let b = |rest: &str| format!("/backup/sources/{{source}}/backups{rest}");
    Router::new()
        .route("/backup/sources", g(Op::ListBackupSources, get(sources)))
        .route(
            &b(""),
            g(Op::ListBackups, get(list)).merge(g(Op::RunBackup, post(run))),
        )
        .route(
            &b("/{id}"),
            g(Op::GetBackup, get(one)).merge(g(Op::DeleteBackup, axum::routing::delete(delete))),
        )
        .route(&b("/{id}/restore"), g(Op::RestoreBackup, post(restore)))
        .route(
            &b("/{id}/collections/{collection}/shards/{shard}/snapshot"),
            g(Op::DownloadBackupShard, get(download_shard)),
        )
}

/// `GET /backup/sources`
async fn sources(t: Timer, State(st): State<Services>) -> ApiResult {
    t.ok(st.backups.sources().await?)
}

/// Optional body of `POST /backup/sources/{source}/backups`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RunBody {
    #[serde(default)]
    collections: Option<Vec<String>>,
}

/// `POST /backup/sources/{source}/backups?wait=`
async fn run(
    t: Timer,
    State(st): State<Services>,
    ApiPath(source): ApiPath<String>,
    ApiQuery(q): ApiQuery<WaitParam>,
    body: Bytes,
) -> ApiResult {
    let body: RunBody = optional_body(&body, "a backup request")?;
    answer_with_id(
        &t,
        st.backups
            .run(&source, body.collections, q.wait.unwrap_or(true))
            .await?,
    )
}

/// `POST /backup/sources/{source}/backups/{id}/restore?wait=`
async fn restore(
    t: Timer,
    State(st): State<Services>,
    ApiPath((source, id)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<WaitParam>,
    ApiJson(req): ApiJson<RestoreRequest>,
) -> ApiResult {
    answer_with_id(
        &t,
        st.backups
            .restore(&source, &id, req, q.wait.unwrap_or(true))
            .await?,
    )
}

/// `GET /backup/sources/{source}/backups`
async fn list(t: Timer, State(st): State<Services>, ApiPath(source): ApiPath<String>) -> ApiResult {
    t.ok(st.backups.list(&source).await?)
}

/// `GET /backup/sources/{source}/backups/{id}`
async fn one(
    t: Timer,
    State(st): State<Services>,
    ApiPath((source, id)): ApiPath<(String, String)>,
) -> ApiResult {
    t.ok(st.backups.get(&source, &id).await?)
}

/// `DELETE /backup/sources/{source}/backups/{id}`
async fn delete(
    t: Timer,
    State(st): State<Services>,
    ApiPath((source, id)): ApiPath<(String, String)>,
) -> ApiResult {
    st.backups.delete(&source, &id).await?;
    t.ok(true)
}

/// `GET .../backups/{id}/collections/{collection}/shards/{shard}/snapshot`: the shard as
/// a Qdrant shard snapshot archive, with `Range` and its SHA-256.
async fn download_shard(
    State(st): State<Services>,
    ApiPath((source, id, collection, shard)): ApiPath<(String, String, String, u32)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let archive = st.backups.shard(&source, &id, &collection, shard).await?;
    let size = archive.manifest.size;
    let range = match parse_range(&headers, size) {
        Ok(r) => r,
        Err(()) => return Ok(unsatisfiable(size)),
    };
    let stream = st.backups.open(&archive, range.clone()).await?;
    let name = format!("{collection}-shard-{shard}-{id}.snapshot");
    let file = Download {
        name: &name,
        size,
        modified: archive.created,
        checksum: Some(&archive.manifest.sha256),
    };
    Ok(file.response(stream, range))
}
