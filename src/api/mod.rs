//! The REST API: Qdrant's routes for collections, points, aliases and snapshots.
//!
//! Handlers only parse requests into the service layer's types and shape its results as
//! Qdrant's JSON; the rules live in [`crate::service`].

pub(crate) mod auth;
pub(crate) mod collections;
pub(crate) mod dashboard;
pub(crate) mod error;
pub(crate) mod health;
pub(crate) mod observe;
pub(crate) mod points;
pub(crate) mod snapshots;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post, put, MethodRouter};
use axum::{middleware, Router};

use crate::service::{Operation as Op, Services};

/// A route's handler guarded by the access its operation declares.
fn guarded(st: &Services, op: Op, handler: MethodRouter<Services>) -> MethodRouter<Services> {
    handler.route_layer(middleware::from_fn_with_state(
        (st.clone(), op),
        auth::enforce,
    ))
}

/// Builds the router with auth and body limits applied.
pub fn router(state: Services) -> Router {
    let st = &state;
    let g = |op, h| guarded(st, op, h);
    let json_limit = (state.config.service.max_request_size_mb as usize).saturating_mul(1 << 20);
    Router::new()
        .route("/", g(Op::Version, get(health::root)))
        .route("/healthz", g(Op::Health, get(health::healthz)))
        .route("/livez", g(Op::Health, get(health::livez)))
        .route("/readyz", g(Op::Health, get(health::readyz)))
        .route("/metrics", g(Op::Metrics, get(observe::metrics)))
        .route("/dashboard", g(Op::Dashboard, get(dashboard::root)))
        .route("/dashboard/", g(Op::Dashboard, get(dashboard::index)))
        .route(
            "/dashboard/session",
            g(Op::Session, get(dashboard::session)),
        )
        .route("/dashboard/{file}", g(Op::Dashboard, get(dashboard::file)))
        .route(
            "/collections",
            g(Op::ListCollections, get(collections::list)),
        )
        .route(
            "/collections/aliases",
            g(Op::UpdateAliases, post(collections::update_aliases)),
        )
        .route(
            "/aliases",
            g(Op::ListAliases, get(collections::list_aliases)),
        )
        .route(
            "/collections/{name}",
            g(Op::GetCollection, get(collections::get))
                .merge(g(Op::CreateCollection, put(collections::create)))
                .merge(g(
                    Op::DeleteCollection,
                    axum::routing::delete(collections::delete),
                ))
                .merge(g(
                    Op::UpdateCollection,
                    axum::routing::patch(collections::update),
                )),
        )
        .route(
            "/collections/{name}/exists",
            g(Op::CollectionExists, get(collections::exists)),
        )
        .route(
            "/collections/{name}/aliases",
            g(
                Op::ListCollectionAliases,
                get(collections::collection_aliases),
            ),
        )
        .route(
            "/collections/{name}/index",
            g(Op::CreateFieldIndex, put(collections::create_index)),
        )
        .route(
            "/collections/{name}/index/{field}",
            g(
                Op::DeleteFieldIndex,
                axum::routing::delete(collections::delete_index),
            ),
        )
        .route(
            "/collections/{name}/points",
            g(Op::Upsert, put(points::upsert)).merge(g(Op::GetPoints, post(points::retrieve))),
        )
        .route(
            "/collections/{name}/points/{id}",
            g(Op::GetPoints, get(points::get_point)),
        )
        .route(
            "/collections/{name}/points/delete",
            g(Op::DeletePoints, post(points::delete)),
        )
        .route(
            "/collections/{name}/points/payload",
            g(Op::SetPayload, post(points::set_payload))
                .merge(g(Op::OverwritePayload, put(points::overwrite_payload))),
        )
        .route(
            "/collections/{name}/points/payload/delete",
            g(Op::DeletePayload, post(points::delete_payload)),
        )
        .route(
            "/collections/{name}/points/payload/clear",
            g(Op::ClearPayload, post(points::clear_payload)),
        )
        .route(
            "/collections/{name}/points/batch",
            g(Op::UpdateBatch, post(points::batch_update)),
        )
        .route(
            "/collections/{name}/points/scroll",
            g(Op::Scroll, post(points::scroll)),
        )
        .route(
            "/collections/{name}/points/count",
            g(Op::Count, post(points::count)),
        )
        .route(
            "/collections/{name}/points/query",
            g(Op::Query, post(points::query)),
        )
        .route(
            "/collections/{name}/points/query/batch",
            g(Op::QueryBatch, post(points::query_batch)),
        )
        .route(
            "/collections/{name}/points/search",
            g(Op::Search, post(points::search)),
        )
        .route(
            "/collections/{name}/points/search/batch",
            g(Op::SearchBatch, post(points::search_batch)),
        )
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
