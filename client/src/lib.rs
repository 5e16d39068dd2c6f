//! A Rust client for the teamhub wire contract (`docs/protocol.md`).
//!
//! Three kinds of users share it, which is why it has two layers:
//!
//! - [`Connection`] is one socket and nothing else: the caller sends and receives
//!   frames itself, including invalid ones. The hub's integration tests use it to check
//!   the contract at the byte level (bad JSON, close codes, HTTP 401/403 at the
//!   handshake), and the load generator uses it to avoid a task per socket.
//! - [`Client`] owns a connection in a background task, correlates requests with their
//!   replies by `id`, delivers everything else as [`Event`]s and remembers, per team,
//!   the last position seen, so a caller can reconnect and recover with `since`. IDE
//!   plugins and most tests want this one.
//! - [`token`] signs HS256 tokens for tests and load runs.
//!
//! The wire types themselves come from `teamhub-protocol`, re-exported as
//! [`protocol`], so a client cannot drift from what the hub decodes.
//!
//! Not here yet: automatic reconnection (`src/client.rs` explains where it goes),
//! TLS (`wss://`; terminate TLS in front of the hub), and the REST API.

mod client;
mod connection;
mod error;
pub mod token;

pub use client::{Client, ClientOptions, Event, JoinOptions};
pub use connection::{ConnectOptions, Connection, Incoming, TokenPlacement};
pub use error::ClientError;
pub use teamhub_protocol as protocol;
pub use token::{ClaimsBuilder, claims_for, mint_hs256};
