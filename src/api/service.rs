//! Root and health endpoints.

use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// The Qdrant version this service answers as. Clients warn unless the minor versions are at
/// most one apart: 1.19 satisfies the current Python client (1.20) and the newest JS client
/// that runs on Node 20 (1.18) alike.
pub const QDRANT_COMPAT_VERSION: &str = "1.19.0";

/// `GET /`: Qdrant's version probe (no envelope), plus this product's own version.
pub async fn root() -> Response {
    Json(json!({
        "title": "qdrant - vector search engine",
        "version": QDRANT_COMPAT_VERSION,
        "commit": null,
        "product": "snapstream",
        "product_version": env!("CARGO_PKG_VERSION"),
    }))
    .into_response()
}

/// `GET /healthz`
pub async fn healthz() -> &'static str {
    "healthz check passed"
}

/// `GET /livez`
pub async fn livez() -> &'static str {
    "livez check passed"
}

/// `GET /readyz`
pub async fn readyz() -> &'static str {
    "all shards are ready"
}
