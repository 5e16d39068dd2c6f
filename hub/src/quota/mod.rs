//! The team quota seam: connections joined to a team at once, counted across the
//! cluster, so a plan's `max_connections` holds whichever nodes the connections use.
//!
//! One implementation per file: [`memory`] for a single node, [`redis`] for a cluster;
//! both pass [`conformance`], and `bootstrap` picks one. The other quota,
//! `messages_per_day`, is not here: it is counted by the broker in the same atomic step
//! that assigns the message's offset (see `broker/mod.rs`), because that step is
//! already the one place every publish of a team passes through, on every node, once.
//! A budget leased to each node would save no round trip there, and could not be
//! exact at the boundary (one node refusing while another still holds unused budget).

pub mod conformance;
pub mod memory;
pub mod redis;

use async_trait::async_trait;
use teamhub_presence::ConnKey;
use teamhub_protocol::TeamId;

#[derive(Debug, Clone, thiserror::Error)]
pub enum QuotaError {
    /// The backing service is unreachable; nothing was counted.
    #[error("quota store unavailable: {0}")]
    Unavailable(String),
}

/// What [`QuotaStore::take`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    /// The connection counts now; the team has this many joined (itself included).
    Yes(u64),
    /// The team already has `max` connections; nothing changed.
    Full,
}

/// Where the connections joined to each team are counted.
///
/// Contract (checked by [`conformance`]):
/// - `take` is atomic: it counts the connection unless the team already has `max`
///   (`None`: no cap) connections, and answers the count after. Taking a connection
///   already counted changes nothing and answers `Yes` with the count, so a repeated
///   join of one socket is one connection, and a retry is harmless.
/// - `release` of a connection not counted is a no-op.
/// - A connection of a node that stops (killed, cut off) stops counting within the
///   store's expiry (the Redis store's entries expire unless their node refreshes them;
///   the in-process store dies with its node).
#[async_trait]
pub trait QuotaStore: Send + Sync + 'static {
    async fn take(
        &self,
        team: &TeamId,
        conn: &ConnKey,
        max: Option<u64>,
    ) -> Result<Taken, QuotaError>;
    async fn release(&self, team: &TeamId, conn: &ConnKey) -> Result<(), QuotaError>;
    /// The team's connections now.
    async fn count(&self, team: &TeamId) -> Result<u64, QuotaError>;
}
