//! The one error type of the client library.
//!
//! Variants are split by what a caller does about them: fix the input
//! ([`ClientError::InvalidUrl`], [`ClientError::InvalidId`]), get a new token or give up
//! ([`ClientError::Http`]), fix the TLS set-up ([`ClientError::Tls`]), react to the server's answer ([`ClientError::Server`]), or
//! reconnect ([`ClientError::Closed`], [`ClientError::Io`], [`ClientError::WebSocket`]).

use std::time::Duration;

use teamhub_protocol::{CloseCode, ErrorCode, IdError, Reconnect};
use tokio_tungstenite::tungstenite;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The URL is not a `ws://host[:port]/path` URL this client can open.
    #[error("invalid url {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },

    /// A team id or message type that the contract would refuse anyway.
    #[error(transparent)]
    InvalidId(#[from] IdError),

    /// The server answered the upgrade request with an HTTP status instead of switching
    /// protocols: 401 for a missing or bad token, 403 for a refused `Origin`. `body` is
    /// what arrived with the response head (possibly truncated, often empty).
    #[error("handshake refused with HTTP {status}: {body}")]
    Http { status: u16, body: String },

    /// The TLS handshake failed: the server's certificate does not verify against the
    /// trusted roots or does not name the host, or the CA file is unusable. Not
    /// transient: the same server is refused again until the configuration changes.
    #[error("TLS: {reason}")]
    Tls { reason: String },

    /// Resolving, binding or connecting the TCP socket failed.
    #[error("connection failed: {0}")]
    Io(#[from] std::io::Error),

    /// The WebSocket layer failed (protocol violation, frame over the configured
    /// maximum, ...). The connection should be considered dead.
    #[error("websocket error: {0}")]
    WebSocket(#[source] Box<tungstenite::Error>),

    /// A value could not be encoded as JSON.
    #[error("cannot encode JSON: {0}")]
    Json(#[from] serde_json::Error),

    /// The server answered the request with an `error` frame.
    #[error("server refused the request: {code}: {message}")]
    Server { code: ErrorCode, message: String },

    /// No answer arrived within the request timeout. The request may still have been
    /// acted on; a late answer is discarded.
    #[error("no answer within {after:?}")]
    Timeout { after: Duration },

    /// The connection is closed. `code` is the close code the server sent, if any (see
    /// [`ClientError::close_code`] for what to do about it).
    #[error("connection closed (code {code:?}, reason {reason:?})")]
    Closed { code: Option<u16>, reason: String },

    /// The server answered with a frame that does not fit the request (a publish reply
    /// to a join, say). Indicates a server bug or a contract mismatch.
    #[error("unexpected answer to {request}: {answer}")]
    UnexpectedReply {
        request: &'static str,
        answer: String,
    },

    /// A token could not be signed.
    #[error("cannot sign token: {0}")]
    Token(#[from] jsonwebtoken::errors::Error),
}

impl From<tungstenite::Error> for ClientError {
    fn from(e: tungstenite::Error) -> Self {
        ClientError::WebSocket(Box::new(e))
    }
}

impl ClientError {
    /// The server's error code, for [`ClientError::Server`].
    pub fn server_code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Server { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// The contract's close code, for [`ClientError::Closed`] with a known code; its
    /// [`CloseCode::reconnect`] says whether and how to reconnect.
    pub fn close_code(&self) -> Option<CloseCode> {
        match self {
            ClientError::Closed {
                code: Some(code), ..
            } => CloseCode::from_u16(*code),
            _ => None,
        }
    }

    /// Whether trying again later may succeed: what [`crate::Client::reconnect`] retries.
    ///
    /// Transient: the network ([`ClientError::Io`], [`ClientError::WebSocket`],
    /// [`ClientError::Timeout`]), an upgrade refused with 5xx (a draining node answers
    /// 503) or 429, and a close whose code the contract says to reconnect after
    /// (1012 at once; 1000, 1001, 1011, 1013 with backoff) or that carried no code.
    /// A request refused with `unavailable`, `rate_limited` or `internal` is transient
    /// too. Not transient: 401/403 and 4001 (get a new token first), 1002, 1007, 1008, 1009, 4008
    /// (the same connection would be refused again), any other refusal, and every error
    /// of the caller's input.
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Io(_) | ClientError::WebSocket(_) | ClientError::Timeout { .. } => true,
            ClientError::Http { status, .. } => *status >= 500 || *status == 429,
            ClientError::Closed { code: None, .. } => true,
            ClientError::Closed {
                code: Some(code), ..
            } => CloseCode::from_u16(*code).is_none_or(|c| {
                matches!(
                    c.reconnect(),
                    Reconnect::Immediately | Reconnect::WithBackoff
                )
            }),
            ClientError::Server { code, .. } => matches!(
                code,
                ErrorCode::Unavailable | ErrorCode::RateLimited | ErrorCode::Internal
            ),
            ClientError::InvalidUrl { .. }
            | ClientError::InvalidId(_)
            | ClientError::Json(_)
            | ClientError::UnexpectedReply { .. }
            | ClientError::Token(_)
            | ClientError::Tls { .. } => false,
        }
    }
}
