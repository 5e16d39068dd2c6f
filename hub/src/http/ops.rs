//! `/healthz`, `/readyz` and `/metrics`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use teamhub_protocol::ErrorCode;

use super::ApiError;
use crate::node::Node;

/// 200 while the process runs.
pub async fn healthz() -> &'static str {
    "ok"
}

/// 200 only while the node takes connections and its broker and database answer.
pub async fn readyz(State(node): State<Arc<Node>>) -> Response {
    match node.readiness().await {
        Ok(()) => (StatusCode::OK, "ready").into_response(),
        Err(why) => {
            ApiError::new(ErrorCode::Unavailable, format!("not ready: {why}")).into_response()
        }
    }
}

pub async fn metrics(State(node): State<Arc<Node>>) -> Response {
    node.metrics.run_upkeep();
    node.auth.record_metrics();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        node.metrics.render(),
    )
        .into_response()
}
