//! `GET /origin-check?origin=O`: would the handshake accept a browser from origin `O`?
//!
//! A browser tells a page nothing about a refused WebSocket handshake (no status, no
//! body: only a close 1006, exactly like a node that is down), so a page whose origin
//! is not on `--allowed-origins` would say "reconnecting" forever. The browser library
//! asks this after a socket that never opened. It takes the origin as a parameter
//! because a same-origin `GET` carries no `Origin` header, and it is open to every
//! origin (CORS `*`, no token) because it tells nothing a forged handshake would not:
//! one yes or no, never the allowed list (that is in the node's log).

use std::sync::Arc;

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use teamhub_protocol::ErrorCode;

use super::ApiError;
use crate::node::Node;

#[derive(Serialize)]
struct OriginCheck {
    origin: String,
    allowed: bool,
}

/// `GET /origin-check?origin=O`: 200 `{"origin","allowed"}`, 400 without `origin`.
pub async fn check(State(node): State<Arc<Node>>, RawQuery(query): RawQuery) -> Response {
    let origin = url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(k, _)| k == "origin")
        .map(|(_, v)| v.into_owned())
        .filter(|o| !o.is_empty());
    let response = match origin {
        Some(origin) => Json(OriginCheck {
            allowed: node.origins.allows(Some(&origin)),
            origin,
        })
        .into_response(),
        None => ApiError::new(
            ErrorCode::BadRequest,
            "expected ?origin=<scheme://host[:port]>",
        )
        .into_response(),
    };
    let mut response = response;
    response.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    response
}
