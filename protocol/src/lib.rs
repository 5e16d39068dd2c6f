//! The teamhub wire contract as Rust types.
//!
//! Everything a client, the hub and the load generator must agree on lives here:
//! validated identifiers ([`TeamId`], [`UserId`], [`MessageType`]), roles and the one
//! permission function ([`permits`]), error and close codes, the frames of `/ws`
//! ([`ClientFrame`], [`ServerFrame`]), JWT claims and the REST bodies.
//!
//! This crate does no I/O on purpose: it is shared by the server, the client library and
//! third-party tools, and must stay cheap to depend on.

mod claims;
mod codes;
mod frames;
mod ids;
pub mod json;
#[cfg(feature = "openapi")]
mod openapi;
pub mod rest;
mod role;

pub use claims::Claims;
pub use codes::{CloseCode, ErrorCode, Reconnect};
pub use frames::client::{
    ClientFrame, ClientOp, DecodeError, Join, Leave, MetaError, PresenceRequest, Publish, Refresh,
    SeedPublish, Since, decode_client_frame,
};
pub use frames::server::{
    ErrorFrame, JoinReply, KickReason, Kicked, MessageFrame, PresenceDiff, PresenceEntry,
    PresenceReply, PublishReply, RefreshReply, Reply, ReplyBody, SeedFrame, ServerFrame,
};
pub use ids::{IdError, MessageType, PatternName, TeamId, UserId};
pub use role::{Action, Role, permits};

/// Subprotocol a client may offer; the server selects it when offered.
pub const SUBPROTOCOL: &str = "teamhub.v1";

/// Largest `meta` object a `join` may carry, in bytes of JSON.
pub const MAX_META_BYTES: usize = 1024;

/// Message type prefixes only the server may publish.
pub const RESERVED_TYPE_PREFIXES: [&str; 3] = ["presence.", "pattern.", "system."];

/// Whether a message type is reserved for the server (`presence.`, `pattern.`, `system.`).
pub fn is_reserved_type(ty: &str) -> bool {
    RESERVED_TYPE_PREFIXES.iter().any(|p| ty.starts_with(p))
}
