//! The WebSocket handshake: drain check, Origin, token, then the upgrade.
//!
//! Everything that can be refused is refused here, with an HTTP status and no upgrade
//! (503 draining, 403 origin, 401 token), except a seed client without a role in its
//! team, which the contract wants upgraded and then closed with 1008.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use teamhub_protocol::{CloseCode, ErrorCode, SUBPROTOCOL, TeamId};

use super::ApiError;
pub use super::edge::authenticate;
use crate::auth::Identity;
use crate::metrics;
use crate::node::{ClientInfo, Node};
use crate::registry::Framing;
use crate::session::Session;
use crate::user_cap::UserSlot;

/// `GET /ws`
pub async fn connect(
    State(node): State<Arc<Node>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let (identity, slot, ws) = match admit(&node, &headers, query.as_deref(), ws).await {
        Ok(ok) => ok,
        Err(refused) => return refused.into_response(),
    };
    let client = client_info(peer, &headers);
    upgrade(&node, ws).on_upgrade(move |socket| {
        let session = Session::new(node.clone(), identity, slot, client, Framing::Full);
        node.sessions.track_future(session.run(socket, None))
    })
}

/// `GET /ws/{team}`: the seed-compatible endpoint.
pub async fn connect_seed(
    State(node): State<Arc<Node>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(team): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let team = match TeamId::new(&team) {
        Ok(t) => t,
        Err(e) => return ApiError::new(ErrorCode::BadRequest, e.to_string()).into_response(),
    };
    let (identity, slot, ws) = match admit(&node, &headers, query.as_deref(), ws).await {
        Ok(ok) => ok,
        Err(refused) => return refused.into_response(),
    };
    let client = client_info(peer, &headers);
    // A role in the team, not revoked there: the same check as a `join` on `/ws`.
    let member = node
        .authorize(&identity, &team, teamhub_protocol::Action::Join)
        .is_ok();
    upgrade(&node, ws).on_upgrade(move |socket| async move {
        if member {
            let session = Session::new(node.clone(), identity, slot, client, Framing::Seed);
            node.sessions
                .track_future(session.run(socket, Some(team)))
                .await;
        } else {
            drop(slot);
            close(socket, CloseCode::NotMember, "not a team member").await;
        }
    })
}

/// Bytes read from the socket per read call (tungstenite's buffer, kept per connection).
const READ_BUFFER: usize = 512;

/// Frames are buffered up to this many bytes before a write, and always on flush.
const WRITE_BUFFER: usize = 16 * 1024;

fn upgrade(node: &Node, ws: WebSocketUpgrade) -> WebSocketUpgrade {
    let max = node.limits.max_frame_bytes;
    // Small buffers: most connections are idle most of the time, and tungstenite's
    // 128 KiB defaults would dominate a node's memory. The read buffer stays allocated
    // for the connection's life; 512 bytes hold an ordinary client frame in one read
    // (larger ones take several reads, and inbound frames are rate-limited anyway). The write buffer lets a session
    // feed a whole batch of frames and hand it to the kernel in one write on flush
    // (a buffer of 0 would mean one `send` per frame).
    ws.protocols([SUBPROTOCOL])
        .max_message_size(max)
        .max_frame_size(max)
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
}

/// The checks before an upgrade, in the contract's order of precedence. The user's
/// slot under `--max-connections-per-user` is taken last and travels with the upgrade:
/// dropped with it when the upgrade fails, with the session when it ends.
async fn admit(
    node: &Node,
    headers: &HeaderMap,
    query: Option<&str>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<(Identity, UserSlot, WebSocketUpgrade), ApiError> {
    let refuse = |reason: &'static str, e: ApiError| {
        ::metrics::counter!(metrics::HANDSHAKES_REJECTED, "reason" => reason).increment(1);
        Err(e)
    };
    if node.is_draining() {
        return refuse(
            "draining",
            ApiError::new(
                ErrorCode::Unavailable,
                "node is draining; connect to another node",
            ),
        );
    }
    let ws = match ws {
        Ok(ws) => ws,
        Err(e) => {
            return refuse(
                "not_websocket",
                ApiError::new(
                    ErrorCode::BadRequest,
                    format!("expected a WebSocket upgrade: {e}"),
                ),
            );
        }
    };
    let origin = headers
        .get(header::ORIGIN)
        .map(|o| o.to_str().unwrap_or("\u{fffd}"));
    if !node.origins.admit(origin) {
        return refuse(
            "origin",
            ApiError::new(ErrorCode::Forbidden, "origin not allowed"),
        );
    }
    let token = bearer(headers)
        .or_else(|| query_token(query))
        .unwrap_or_default();
    let identity = match node.identify(&token).await {
        Ok(identity) => identity,
        Err(e) if e.code == ErrorCode::Unauthorized => return refuse("token", e.into()),
        // The key store could not answer: a 503, so the client retries, not a 401.
        Err(e) => return refuse("unavailable", e.into()),
    };
    let Some(slot) = node.user_cap.try_acquire(&identity.user) else {
        metrics::counter_inc(metrics::USER_CAP_REFUSED);
        let max = node.user_cap.max().unwrap_or_default();
        return refuse(
            "user_connections",
            ApiError::new(
                ErrorCode::RateLimited,
                format!(
                    "{} holds the maximum of {max} connections to this node; close one first",
                    identity.user
                ),
            ),
        );
    };
    Ok((identity, slot, ws))
}

/// The token of an `Authorization: Bearer` header.
pub fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
}

fn query_token(query: Option<&str>) -> Option<String> {
    url::form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
}

pub fn client_info(peer: SocketAddr, headers: &HeaderMap) -> ClientInfo {
    ClientInfo {
        ip: Some(peer.ip()),
        user_agent: headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.chars().take(512).collect()),
    }
}

async fn close(mut socket: WebSocket, code: CloseCode, reason: &'static str) {
    metrics::closed(code.as_u16());
    let frame = CloseFrame {
        code: code.as_u16(),
        reason: reason.into(),
    };
    let _ = socket.send(Message::Close(Some(frame))).await;
    // Wait for the peer's close reply (bounded) so the close frame is not lost in a reset.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), async {
        while socket.recv().await.is_some() {}
    })
    .await;
}
