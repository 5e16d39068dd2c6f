//! The HTTP surface: WebSocket endpoints, the REST API and the operations endpoints.

mod activity;
mod api;
mod assets;
mod error;
mod openapi;
mod ops;
mod ws;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};

use crate::node::Node;

pub use error::ApiError;

pub fn router(node: Arc<Node>) -> Router {
    let body_limit = node.limits.max_frame_bytes;
    Router::new()
        .route("/", get(assets::index))
        .route("/app.js", get(assets::app_js))
        .route("/app.css", get(assets::app_css))
        .route("/teamhub.js", get(assets::library))
        .route("/teamhub.d.ts", get(assets::types))
        .route("/ws", get(ws::connect))
        .route("/ws/{team}", get(ws::connect_seed))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/api/v1/teams/{team}/messages", post(api::publish))
        .route("/api/v1/teams/{team}/presence", get(api::presence))
        .route("/api/v1/teams/{team}/history", get(api::history))
        .route("/api/v1/teams/{team}/activity", get(activity::activity))
        .route("/api/v1/openapi.json", get(openapi::serve))
        .fallback(error::not_found)
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(node)
}
