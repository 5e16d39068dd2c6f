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
//!   the last position seen, so [`Client::reconnect`] can open a new connection and
//!   re-join every team with `since`. IDE plugins and most tests want this one.
//! - [`Backoff`] paces reconnect attempts (exponential, full jitter, optional attempt
//!   limit); seed it ([`Backoff::delays_seeded`]) for repeatable waits.
//! - [`token`] signs HS256 tokens for tests and load runs.
//!
//! The wire types themselves come from `teamhub-protocol`, re-exported as
//! [`protocol`], so a client cannot drift from what the hub decodes.
//!
//! A reconnect loop looks like this (the caller decides when to give up):
//!
//! ```no_run
//! # async fn listen(opts: teamhub_client::ConnectOptions) -> Result<(), teamhub_client::ClientError> {
//! use teamhub_client::{Backoff, Client, Event, JoinOptions};
//! let policy = Backoff::default();
//! let mut client = Client::connect(opts.clone()).await?;
//! client.join("design", JoinOptions::default()).await?;
//! loop {
//!     let mut events = client.events();
//!     while let Some(event) = events.recv().await {
//!         match event {
//!             Event::Message(m) => println!("{} {}", m.offset, m.data),
//!             Event::Closed { .. } => break,
//!             _ => {}
//!         }
//!     }
//!     let next = client.reconnect(&opts, &mut policy.delays()).await?;
//!     for team in &next.teams {
//!         if let Ok(reply) = &team.result {
//!             reply.missed.iter().for_each(|m| println!("{} {}", m.offset, m.data));
//!         }
//!     }
//!     client = next.client;
//! }
//! # }
//! ```
//!
//! `wss://` URLs speak TLS (rustls, pure Rust), trusting the system's roots or the CA
//! of a [`TlsConfig`]. Not here: the REST API (the Python package has helpers for it).

mod backoff;
mod client;
mod connection;
mod error;
mod tls;
pub mod token;

pub use backoff::{Backoff, Delays};
pub use client::{Client, ClientOptions, Event, JoinOptions, Reconnected, Rejoined};
pub use connection::{ConnectOptions, Connection, Incoming, RawIncoming, TokenPlacement};
pub use error::ClientError;
pub use teamhub_protocol as protocol;
pub use tls::TlsConfig;
pub use token::{ClaimsBuilder, claims_for, mint_hs256};
