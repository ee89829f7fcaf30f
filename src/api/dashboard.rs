//! `GET /dashboard`: the snapshots page, from files embedded in the binary at build time
//! (plain HTML, CSS and JavaScript in `dashboard/`; no build step, nothing fetched).

use axum::extract::{Path, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use super::error::ApiError;
use super::guarded;
use crate::service::{Access, ApiKeys, Operation as Op, Services};

/// The page's files: name, content type, bytes.
const FILES: &[(&str, &str, &str)] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_str!("../../dashboard/index.html"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../../dashboard/app.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../../dashboard/style.css"),
    ),
];

/// The dashboard's page, files and session.
pub(crate) fn routes(st: &Services) -> Router<Services> {
    let g = |op, h| guarded(st, op, h);
    Router::new()
        .route("/dashboard", g(Op::Dashboard, get(root)))
        .route("/dashboard/", g(Op::Dashboard, get(index)))
        .route("/dashboard/session", g(Op::Session, get(session)))
        .route("/dashboard/{file}", g(Op::Dashboard, get(file)))
}

/// `GET /dashboard`: to `/dashboard/`, so the page's relative links resolve.
pub(crate) async fn root() -> Redirect {
    Redirect::permanent("/dashboard/")
}

/// `GET /dashboard/`: the page.
pub(crate) async fn index() -> Response {
    file(Path("index.html".to_string())).await
}

/// `GET /dashboard/{file}`.
pub(crate) async fn file(Path(name): Path<String>) -> Response {
    match FILES.iter().find(|(n, _, _)| *n == name) {
        Some((_, kind, body)) => {
            ([(CONTENT_TYPE, *kind), (CACHE_CONTROL, "no-cache")], *body).into_response()
        }
        None => ApiError::new(StatusCode::NOT_FOUND, "Not found: no such dashboard file")
            .into_response(),
    }
}

/// `GET /dashboard/session`: whether keys are required and what the presented key may
/// do, so the page asks for a key only when needed and hides what it may not do.
pub(crate) async fn session(State(st): State<Services>, headers: HeaderMap) -> Response {
    let access = match st.keys.grants(ApiKeys::presented(&headers)) {
        Access::Manage | Access::Write => "manage",
        Access::Read => "read",
        Access::Open => "none",
    };
    // Where snapshots are stored is shown to key holders only, and never as a local path.
    let storage = (access != "none").then(|| {
        let sc = &st.config.storage.snapshots_config;
        let place = match sc.cloud_location() {
            Some((scheme, bucket, prefix)) => format!("{scheme}://{bucket}/{prefix}"),
            None => "local disk (snapshots_path)".to_string(),
        };
        if sc.incremental {
            format!("{place}, incremental")
        } else {
            place
        }
    });
    Json(json!({
        "keys_required": st.keys.required(),
        "access": access,
        "storage": storage,
    }))
    .into_response()
}
