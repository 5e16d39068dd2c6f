//! Presence: which users are connected to which team, across nodes.
//!
//! The contract speaks of *users*, not connections: a user joins a team when their first
//! connection joins and leaves when their last one goes. [`TeamPresence`] does that
//! aggregation as plain data (unit-tested without any I/O); a [`PresenceStore`] keeps it
//! somewhere (this process, or Redis for a cluster) and announces every user-level change
//! as a [`PresenceEvent`].
//!
//! Architecture invariant: a store emits its own events, in the order of its `version`
//! counter, from inside the same critical section that changed the state. Callers never
//! announce presence themselves, so two racing changes can never reach clients in the
//! wrong order.

pub mod conformance;
mod memory;
mod redis;
mod team;

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use teamhub_protocol::{PresenceEntry, TeamId, UserId};

pub use memory::MemoryPresence;
pub use redis::{CATCH_UP_CONN, RedisPresence};
pub use team::{Change, Occupancy, TeamPresence};

/// Identifies one connection across the whole cluster: the node that holds it and a
/// number unique on that node.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnKey {
    pub node: Arc<str>,
    pub conn: u64,
}

impl fmt::Debug for ConnKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.node, self.conn)
    }
}

/// What a connection tells presence about itself when it joins a team.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnInfo {
    pub key: ConnKey,
    pub user: UserId,
    pub name: Option<String>,
    pub meta: Option<serde_json::Map<String, serde_json::Value>>,
}

/// A user-level change in one team, numbered by the team's presence `version`.
///
/// `origin` is the connection whose join or leave caused it, so the hub can spare that
/// connection a diff about itself.
#[derive(Debug, Clone, PartialEq)]
pub struct PresenceEvent {
    pub team: TeamId,
    pub version: u64,
    pub origin: ConnKey,
    pub joins: Vec<PresenceEntry>,
    pub leaves: Vec<PresenceEntry>,
    /// Set when this change made the team occupied or vacated (`None` on events a
    /// node made up to catch up after a resubscription).
    pub occupancy: Option<Occupancy>,
}

/// The team as it is at `version`: every change with a higher version happened after.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub version: u64,
    pub entries: Vec<PresenceEntry>,
}

#[derive(Debug, thiserror::Error)]
pub enum PresenceError {
    /// The backing service cannot be reached; nothing was changed.
    #[error("presence store unavailable: {0}")]
    Unavailable(String),
}

/// Where presence lives.
///
/// Contract for implementations (checked by the conformance tests):
/// - `join` and `leave` are atomic and bump the team's `version` when the user-level
///   view changes, and emit exactly one [`PresenceEvent`] for that change, in version
///   order, before returning.
/// - `join` of a key already present only updates its info (no event); `leave` of an
///   unknown key is a no-op (no event). So retries are harmless.
/// - `snapshot` returns the users sorted by id and the version they reflect.
/// - Events reach this node for the teams it [hosts](PresenceStore::host): the node's
///   hosting owner (the hub's `Hosting`, which also holds the registry and the broker
///   subscription) calls `host` before a team's first local join and `unhost` after its
///   last local leave, one call at a time per team. A store that sees every change
///   anyway (the in-process one) has nothing to do there.
#[async_trait]
pub trait PresenceStore: Send + Sync + 'static {
    /// This node now hosts `team`: from when this returns, every event of the team
    /// reaches the node, including those of the joins about to be made.
    async fn host(&self, team: &TeamId) -> Result<(), PresenceError>;
    /// This node no longer hosts `team` (its last local connection has left): its
    /// events may stop. Never fails: a store that cannot stop listening drops what
    /// still arrives.
    async fn unhost(&self, team: &TeamId);
    async fn join(&self, team: &TeamId, conn: ConnInfo) -> Result<Change, PresenceError>;
    async fn leave(&self, team: &TeamId, key: &ConnKey) -> Result<Change, PresenceError>;
    async fn snapshot(&self, team: &TeamId) -> Result<Snapshot, PresenceError>;
}
