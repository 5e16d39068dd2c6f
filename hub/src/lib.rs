//! teamhub: a real-time collaboration hub node.
//!
//! See `ARCHITECTURE.md` at the repository root for the map; in short, a message
//! travels `http::ws` (handshake) -> `session` (decode, dispatch) -> `node::publish`
//! (permission) -> `broker` (offset, history) -> `fanout` -> `registry` -> `outbox`
//! -> `session` (write).

pub mod apikeys;
pub mod auth;
pub mod bootstrap;
pub mod broker;
pub mod config;
pub mod control;
pub mod error;
pub mod event;
mod fanout;
mod hosting;
pub mod http;
pub mod library;
pub mod listen;
pub mod metrics;
pub mod node;
pub mod origin;
pub mod outbox;
pub mod plans;
pub mod quota;
pub mod registry;
pub mod retention;
pub mod revocation;
mod server;
mod serving;
mod session;
pub mod tls;
pub mod usage;
pub mod user_cap;
pub mod webhooks;

pub use server::{DrainReport, Running, start, start_on};
