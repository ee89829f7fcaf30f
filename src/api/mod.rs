//! The HTTP API: Qdrant's REST routes for collections, points, aliases and snapshots.

pub mod auth;
pub mod collections;
pub mod error;
pub mod points;
pub mod service;
pub mod snapshots;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post, put};
use axum::{middleware, Router};

use crate::config::Config;
use crate::registry::Registry;
use crate::snapshot::SnapshotService;

/// Shared state of every handler.
#[derive(Clone, Debug)]
pub struct AppState {
    /// Validated configuration.
    pub config: Arc<Config>,
    /// Collections and aliases.
    pub registry: Arc<Registry>,
    /// Snapshot creation, listing and recovery.
    pub snapshots: Arc<SnapshotService>,
}

/// Builds the router with auth and body limits applied.
pub fn router(state: AppState) -> Router {
    let json_limit = (state.config.service.max_request_size_mb as usize).saturating_mul(1 << 20);
    let snapshot_routes = snapshots::routes();
    Router::new()
        .route("/", get(service::root))
        .route("/healthz", get(service::healthz))
        .route("/livez", get(service::livez))
        .route("/readyz", get(service::readyz))
        .route("/collections", get(collections::list))
        .route("/collections/aliases", post(collections::update_aliases))
        .route("/aliases", get(collections::list_aliases))
        .route(
            "/collections/{name}",
            get(collections::get)
                .put(collections::create)
                .delete(collections::delete)
                .patch(collections::update),
        )
        .route("/collections/{name}/exists", get(collections::exists))
        .route(
            "/collections/{name}/aliases",
            get(collections::collection_aliases),
        )
        .route("/collections/{name}/index", put(collections::create_index))
        .route(
            "/collections/{name}/index/{field}",
            axum::routing::delete(collections::delete_index),
        )
        .route(
            "/collections/{name}/points",
            put(points::upsert).post(points::retrieve),
        )
        .route("/collections/{name}/points/{id}", get(points::get_point))
        .route("/collections/{name}/points/delete", post(points::delete))
        .route(
            "/collections/{name}/points/payload",
            post(points::set_payload).put(points::overwrite_payload),
        )
        .route("/collections/{name}/points/scroll", post(points::scroll))
        .route("/collections/{name}/points/count", post(points::count))
        .route("/collections/{name}/points/query", post(points::query))
        .route("/collections/{name}/points/search", post(points::search))
        .layer(DefaultBodyLimit::max(json_limit))
        // Uploads stream through the unpacker and are not limited.
        .merge(snapshot_routes)
        .fallback(|| async {
            error::ApiError::new(
                axum::http::StatusCode::NOT_FOUND,
                "Not found: no such endpoint",
            )
        })
        .layer(middleware::from_fn_with_state(state.clone(), auth::enforce))
        .with_state(state)
}
