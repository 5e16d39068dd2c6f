//! The HTTP surface: WebSocket endpoints, the REST API and the operations endpoints.

mod activity;
mod api;
mod assets;
pub(crate) mod edge;
mod error;
mod etag;
mod keys;
mod members;
mod openapi;
mod ops;
mod origin;
mod patterns;
mod usage;
mod webhooks;
mod ws;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};

use crate::node::Node;

pub use edge::{ApiLimiter, CallerKey};
pub use error::ApiError;

pub fn router(node: Arc<Node>) -> Router {
    let body_limit = node.limits.max_frame_bytes;
    Router::new()
        .merge(api(node.clone()))
        .route("/", get(assets::index))
        .route("/app.js", get(assets::app_js))
        .route("/app.css", get(assets::app_css))
        .route("/teamhub.js", get(assets::library))
        .route("/teamhub.d.ts", get(assets::types))
        .route("/ws", get(ws::connect))
        .route("/ws/{team}", get(ws::connect_seed))
        .route("/origin-check", get(origin::check))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .fallback(error::not_found)
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(node)
}

/// The REST API, every route behind [`edge::edge`] (caller, rate limit, API calls).
fn api(node: Arc<Node>) -> Router<Arc<Node>> {
    Router::new()
        .route("/api/v1/teams/{team}/messages", post(api::publish))
        .route("/api/v1/teams/{team}/presence", get(api::presence))
        .route("/api/v1/teams/{team}/history", get(api::history))
        .route("/api/v1/teams/{team}/activity", get(activity::activity))
        .route("/api/v1/openapi.json", get(openapi::serve))
        .route(
            "/api/v1/teams/{team}/api-keys",
            post(keys::create).get(keys::list),
        )
        .route(
            "/api/v1/teams/{team}/api-keys/{id}",
            axum::routing::delete(keys::delete),
        )
        .route(
            "/api/v1/teams/{team}/members/{user}/revoke",
            post(members::revoke),
        )
        .route("/api/v1/teams/{team}/usage", get(usage::usage))
        .route("/api/v1/teams/{team}/patterns", get(patterns::list))
        .route(
            "/api/v1/teams/{team}/patterns/{name}",
            get(patterns::get)
                .put(patterns::put)
                .delete(patterns::delete),
        )
        .route(
            "/api/v1/teams/{team}/webhooks",
            post(webhooks::create).get(webhooks::list),
        )
        .route(
            "/api/v1/teams/{team}/webhooks/{id}",
            axum::routing::patch(webhooks::update).delete(webhooks::delete),
        )
        .route(
            "/api/v1/teams/{team}/webhooks/{id}/rotate-secret",
            post(webhooks::rotate),
        )
        .route(
            "/api/v1/teams/{team}/webhooks/{id}/deliveries",
            get(webhooks::deliveries),
        )
        .route(
            "/api/v1/teams/{team}/webhooks/{id}/deliveries/{delivery}/retry",
            post(webhooks::retry),
        )
        .route_layer(axum::middleware::from_fn_with_state(node, edge::edge))
}
