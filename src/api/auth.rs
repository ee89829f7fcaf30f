//! API-key enforcement for REST: each route is registered with its [`Operation`], and the
//! access that operation declares decides which key it needs.

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use crate::service::{ApiKeys, Denied, Operation, Services};

/// Middleware state: the services and the operation of the route it guards.
pub(crate) type Guard = (Services, Operation);

/// Middleware: rejects before the handler (and so before any upload body) is read.
pub(crate) async fn enforce(State((st, op)): State<Guard>, req: Request, next: Next) -> Response {
    match st.keys.check(ApiKeys::presented(req.headers()), op) {
        Ok(()) => next.run(req).await,
        Err(Denied::Unauthenticated(m)) => {
            ApiError::new(StatusCode::UNAUTHORIZED, m).into_response()
        }
        Err(Denied::Forbidden(m)) => {
            ApiError::new(StatusCode::FORBIDDEN, format!("Forbidden: {m}")).into_response()
        }
    }
}
