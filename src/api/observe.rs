//! `GET /metrics` and the request counters of the REST transport.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::service::Services;
use crate::telemetry;

/// `GET /metrics`: Prometheus metrics in the OpenMetrics text format.
pub(crate) async fn metrics(State(st): State<Services>) -> Response {
    (
        [(CONTENT_TYPE, telemetry::CONTENT_TYPE)],
        crate::service::exposition::exposition(&st),
    )
        .into_response()
}

/// Counts each request by its route template (never the raw path, which would make a
/// series per collection and per probe) and status, with its latency.
pub(crate) async fn record(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "other".to_string(), |p| p.as_str().to_string());
    let started = Instant::now();
    let resp = next.run(req).await;
    telemetry::get().request(
        "rest",
        route,
        resp.status().as_u16().to_string(),
        started.elapsed(),
    );
    resp
}
