//! Qdrant's response envelope and the one conversion from errors to HTTP responses.

use std::time::Instant;

use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::json;

use crate::error::Error;

/// An error answered as `{"status":{"error":"..."},"time":...}`.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
    /// For a 5xx: the request id and the full cause chain, logged by [`log_failures`] and
    /// never sent.
    cause: Option<InternalCause>,
}

/// The cause of a 5xx answer, carried to the logging middleware in a response extension
/// so that converting an error has no side effects.
#[derive(Clone, Debug)]
pub(crate) struct InternalCause {
    id: String,
    chain: String,
}

impl ApiError {
    /// An error with an explicit status and full message.
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            cause: None,
        }
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let (status, message) = match &e {
            Error::BadInput(m) => (StatusCode::BAD_REQUEST, format!("Wrong input: {m}")),
            Error::BadRequest(m) => (StatusCode::BAD_REQUEST, format!("Bad request: {m}")),
            Error::InvalidField { field, message } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("Validation error: {field}: {message}"),
            ),
            Error::NotFound(m) => (StatusCode::NOT_FOUND, format!("Not found: {m}")),
            Error::AlreadyExists(m) => (StatusCode::CONFLICT, format!("Wrong input: {m}")),
            Error::Forbidden(m) => (StatusCode::FORBIDDEN, format!("Forbidden: {m}")),
            Error::Upstream(m) => (StatusCode::BAD_GATEWAY, format!("Qdrant: {m}")),
            Error::ChecksumMismatch { expected, actual } => (
                StatusCode::BAD_REQUEST,
                format!("Checksum mismatch: expected {expected}, actual {actual}"),
            ),
            _ => {
                let id = uuid::Uuid::new_v4().simple().to_string();
                let message = format!(
                    "Service internal error: {} (request id {id})",
                    e.public_message()
                );
                return ApiError {
                    status: StatusCode::INTERNAL_SERVER_ERROR,
                    message,
                    cause: Some(InternalCause {
                        id,
                        chain: e.chain(),
                    }),
                };
            }
        };
        ApiError::new(status, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (
            self.status,
            Json(json!({"status": {"error": self.message}, "time": 0.0})),
        )
            .into_response();
        if let Some(cause) = self.cause {
            resp.extensions_mut().insert(cause);
        }
        resp
    }
}

/// Middleware: an error answered by the framework itself (405 for a wrong method, 413 for
/// an oversized body, a rejected header) has a plain-text or empty body; it gets Qdrant's
/// envelope like every other error.
pub(crate) async fn envelope_bare_errors(req: Request, next: axum::middleware::Next) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let message = match status {
        StatusCode::METHOD_NOT_ALLOWED => "Method not allowed on this endpoint".to_string(),
        StatusCode::PAYLOAD_TOO_LARGE => "Payload too large: the request body exceeds the limit \
             (service.max_request_size_mb)"
            .to_string(),
        other => other
            .canonical_reason()
            .unwrap_or("Request failed")
            .to_string(),
    };
    let (mut parts, _) = resp.into_parts();
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    let mut fresh = ApiError::new(status, message).into_response();
    // Keep headers such as `Allow` on a 405.
    for (k, v) in parts.headers.iter() {
        if k != axum::http::header::CONTENT_TYPE {
            fresh.headers_mut().entry(k).or_insert_with(|| v.clone());
        }
    }
    fresh.extensions_mut().extend(parts.extensions);
    fresh
}

/// Middleware: logs the cause of every 5xx answer with its request id.
pub(crate) async fn log_failures(req: Request, next: axum::middleware::Next) -> Response {
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let resp = next.run(req).await;
    if let Some(cause) = resp.extensions().get::<InternalCause>() {
        tracing::error!(request_id = %cause.id, %method, %path, error = %cause.chain, "request failed");
    }
    resp
}

/// The result type of handlers.
pub(crate) type ApiResult = Result<Response, ApiError>;

/// Captures the start of a handler so responses can carry Qdrant's `time` field.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timer(Instant);

impl<S: Send + Sync> FromRequestParts<S> for Timer {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(_: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Timer(Instant::now()))
    }
}

impl Timer {
    /// `200 {"result": ..., "status": "ok", "time": ...}`.
    pub(crate) fn ok<T: Serialize>(&self, result: T) -> ApiResult {
        // Serialized straight into the body: no intermediate `Value` (see `api::points`).
        #[derive(Serialize)]
        struct Envelope<T> {
            result: T,
            status: &'static str,
            time: f64,
        }
        Ok(Json(Envelope {
            result,
            status: "ok",
            time: self.0.elapsed().as_secs_f64(),
        })
        .into_response())
    }

    /// `202 {"result": ..., "status": "accepted", "time": ...}`: started in the background,
    /// with what to follow it by.
    pub(crate) fn accepted_with(&self, result: serde_json::Value) -> Response {
        (
            StatusCode::ACCEPTED,
            Json(json!({
                "result": result,
                "status": "accepted",
                "time": self.0.elapsed().as_secs_f64()
            })),
        )
            .into_response()
    }

    /// `202 {"status": "accepted", "time": ...}`, as Qdrant answers `wait=false`.
    pub(crate) fn accepted(&self) -> Response {
        (
            StatusCode::ACCEPTED,
            Json(json!({"status": "accepted", "time": self.0.elapsed().as_secs_f64()})),
        )
            .into_response()
    }
}

/// A JSON body parsed whatever its content type, answering errors in the envelope.
pub(crate) struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e: BytesRejection| {
                let status = e.status();
                if status == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::new(
                        status,
                        "Payload error: request body is larger than service.max_request_size_mb",
                    )
                } else {
                    ApiError::new(status, format!("Bad request: {}", e.body_text()))
                }
            })?;
        let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        serde_json::from_slice(bytes).map(ApiJson).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("Format error in JSON body: {e}"),
            )
        })
    }
}

/// Query parameters, answering errors in the envelope.
pub(crate) struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| ApiQuery(q.0))
            .map_err(|e: QueryRejection| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("Format error in query parameters: {}", e.body_text()),
                )
            })
    }
}

/// Percent-decoded path parameters, answering errors in the envelope.
pub(crate) struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| ApiPath(p.0))
            .map_err(|e: PathRejection| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("Format error in path parameters: {}", e.body_text()),
                )
            })
    }
}

/// An optional JSON body: its default when empty (or only whitespace), else parsed, a 400
/// saying it is not `what` when it does not parse.
pub(crate) fn optional_body<T: serde::de::DeserializeOwned + Default>(
    body: &[u8],
    what: &str,
) -> Result<T, Error> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body)
        .map_err(|e| Error::BadRequest(format!("the body is not {what}: {e}")))
}
