//! Root and health endpoints.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use super::guarded;
use crate::service::{Operation as Op, Services};
pub(crate) use crate::service::{QDRANT_COMPAT_VERSION, QDRANT_TITLE};

/// The version probe, health checks and the metrics.
pub(crate) fn routes(st: &Services) -> Router<Services> {
    let g = |op, h| guarded(st, op, h);
    Router::new()
        .route("/", g(Op::Version, get(root)))
        .route("/healthz", g(Op::Health, get(healthz)))
        .route("/livez", g(Op::Health, get(livez)))
        .route("/readyz", g(Op::Health, get(readyz)))
        .route("/metrics", g(Op::Metrics, get(super::observe::metrics)))
}

/// `GET /`: Qdrant's version probe (no envelope), plus this product's own version.
pub(crate) async fn root() -> Response {
    Json(json!({
        "title": QDRANT_TITLE,
        "version": QDRANT_COMPAT_VERSION,
        "commit": null,
        "product": "snapstream",
        "product_version": env!("CARGO_PKG_VERSION"),
    }))
    .into_response()
}

/// `GET /healthz`
pub(crate) async fn healthz() -> &'static str {
    "healthz check passed"
}

/// `GET /livez`
pub(crate) async fn livez() -> &'static str {
    "livez check passed"
}

/// `GET /readyz`: ready once collections are loaded. A failing snapshot storage does not
/// make the service unready (collections keep serving), but the answer names it.
pub(crate) async fn readyz(State(st): State<Services>) -> String {
    match st.storage_health.problem().await {
        None => "all shards are ready".to_string(),
        Some(problem) => format!("all shards are ready; snapshot storage failing: {problem}"),
    }
}
