//! The REST API: Qdrant's routes for collections, points, aliases and snapshots.
//!
//! Handlers only parse requests into the service layer's types and shape its results as
//! Qdrant's JSON; the rules live in [`crate::service`].

pub(crate) mod auth;
mod backups;
mod call;
pub(crate) mod collections;
pub(crate) mod dashboard;
pub(crate) mod error;
pub(crate) mod health;
pub(crate) mod observe;
pub(crate) mod points;
mod repository;
pub(crate) mod snapshots;

use axum::extract::DefaultBodyLimit;
use axum::routing::MethodRouter;
use axum::{middleware, Router};

use crate::service::{Operation as Op, Services};

/// A route's handler guarded by the access its operation declares.
fn guarded(st: &Services, op: Op, handler: MethodRouter<Services>) -> MethodRouter<Services> {
    handler.route_layer(middleware::from_fn_with_state(
        (st.clone(), op),
        auth::enforce,
    ))
}

/// Builds the router with auth and body limits applied: one route table per area.
pub fn router(state: Services) -> Router {
    let st = &state;
    let json_limit = (state.config.service.max_request_size_mb as usize).saturating_mul(1 << 20);
    Router::new()
        .merge(health::routes(st))
        .merge(dashboard::routes(st))
        .merge(collections::routes(st))
        .merge(points::routes(st))
        .merge(backups::routes(st))
        .merge(repository::routes(st))
        .layer(DefaultBodyLimit::max(json_limit))
        // Uploads stream through the unpacker and are not limited.
        .merge(snapshots::routes(st))
        .fallback(|| async {
            error::ApiError::new(
                axum::http::StatusCode::NOT_FOUND,
                "Not found: no such endpoint",
            )
        })
        .layer(middleware::from_fn(error::envelope_bare_errors))
        .layer(middleware::from_fn(error::log_failures))
        .layer(middleware::from_fn(observe::record))
        .with_state(state)
}
