//! Root and health endpoints.

use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

pub use crate::service::{QDRANT_COMPAT_VERSION, QDRANT_TITLE};

/// `GET /`: Qdrant's version probe (no envelope), plus this product's own version.
pub async fn root() -> Response {
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
