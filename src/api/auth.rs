//! API-key enforcement: `api-key` header or `Authorization: Bearer`, full or read-only.

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::AppState;

/// What a request needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Nothing (root and health endpoints).
    Open,
    /// Read access (the read-only key is enough).
    Read,
    /// Full access.
    Write,
}

/// Classifies a request: reads are GETs and the POST endpoints that only query.
pub fn required_access(method: &Method, path: &str) -> Access {
    let path = path.trim_end_matches('/');
    if matches!(path, "" | "/healthz" | "/livez" | "/readyz") {
        return Access::Open;
    }
    if method == Method::GET || method == Method::HEAD {
        return Access::Read;
    }
    const READ_POSTS: &[&str] = &[
        "/points",
        "/points/scroll",
        "/points/count",
        "/points/search",
        "/points/query",
        "/points/search/batch",
        "/points/query/batch",
    ];
    if method == Method::POST
        && path.starts_with("/collections/")
        && READ_POSTS.iter().any(|suffix| path.ends_with(suffix))
    {
        return Access::Read;
    }
    Access::Write
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn presented_key(req: &Request) -> Option<&str> {
    let headers = req.headers();
    if let Some(v) = headers.get("api-key").and_then(|v| v.to_str().ok()) {
        return Some(v);
    }
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

/// Middleware: rejects before any handler (and so before any upload body) is read.
pub async fn enforce(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let service = &state.config.service;
    let (full, ro) = (service.api_key.as_ref(), service.read_only_api_key.as_ref());
    if full.is_none() && ro.is_none() {
        return next.run(req).await;
    }
    let need = required_access(req.method(), req.uri().path());
    if need == Access::Open {
        return next.run(req).await;
    }
    let Some(key) = presented_key(&req) else {
        return (
            StatusCode::UNAUTHORIZED,
            "Must provide an API key or an Authorization bearer token",
        )
            .into_response();
    };
    if full.is_some_and(|k| constant_time_eq(k.expose().as_bytes(), key.as_bytes())) {
        return next.run(req).await;
    }
    if ro.is_some_and(|k| constant_time_eq(k.expose().as_bytes(), key.as_bytes())) {
        if need == Access::Read {
            return next.run(req).await;
        }
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "Forbidden: Global manage access is required",
        )
        .into_response();
    }
    (StatusCode::UNAUTHORIZED, "Invalid API key or JWT").into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_writes_and_open_routes_are_classified() {
        assert_eq!(required_access(&Method::GET, "/"), Access::Open);
        assert_eq!(required_access(&Method::GET, "/healthz"), Access::Open);
        assert_eq!(
            required_access(&Method::GET, "/collections/a/snapshots/x"),
            Access::Read
        );
        assert_eq!(
            required_access(&Method::POST, "/collections/a/points/query"),
            Access::Read
        );
        assert_eq!(
            required_access(&Method::POST, "/collections/a/points"),
            Access::Read
        );
        assert_eq!(
            required_access(&Method::PUT, "/collections/a/points"),
            Access::Write
        );
        assert_eq!(
            required_access(&Method::POST, "/collections/a/points/delete"),
            Access::Write
        );
        assert_eq!(
            required_access(&Method::POST, "/collections/a/snapshots"),
            Access::Write
        );
        assert_eq!(
            required_access(&Method::POST, "/collections/a/snapshots/upload"),
            Access::Write
        );
    }
}
