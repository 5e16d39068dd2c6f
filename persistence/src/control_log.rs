//! The control log: every command the nodes of a cluster must apply (a revocation, a
//! deleted API key), kept for a while in the shared database.
//!
//! Commands travel between nodes by Redis pub/sub, which delivers at most once: a
//! command sent while Redis is unreachable, or while a node's subscription is being
//! re-established, never arrives. So the node that makes a change also appends the
//! command here, and every node reads what was appended recently (every second) and
//! applies what it has not applied yet. Pub/sub stays the fast path; this log makes
//! delivery at least once (nodes skip a sequence number they have already applied).
//!
//! Entries are pruned after an hour: by then every running node has read them, and a
//! node that starts later loads the state they describe from the database itself
//! (revocations at start; API keys are looked up on every handshake).

use time::OffsetDateTime;

use crate::error::StoreError;

/// One logged command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedCommand {
    /// Increasing per database; unique.
    pub seq: i64,
    /// The command in its wire form (JSON), opaque here.
    pub command: String,
    /// When it was appended (UTC, microsecond precision).
    pub created_at: OffsetDateTime,
}

/// Where the control log is kept. Implementations must pass
/// [`crate::conformance::control_log`].
#[async_trait::async_trait]
pub trait ControlLog: Send + Sync {
    /// Appends a command and returns its sequence number.
    async fn append(&self, command: &str) -> Result<i64, StoreError>;

    /// Entries appended at or after `since`, in sequence order, at most `limit`.
    ///
    /// By time, not by sequence: a sequence number is taken when a transaction
    /// starts its insert, so a reader can see 8 before 7 commits; reading a window of
    /// time again and skipping what was applied never misses the late one.
    async fn since(
        &self,
        since: OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<LoggedCommand>, StoreError>;

    /// Deletes the entries appended before `before`; returns how many.
    async fn prune(&self, before: OffsetDateTime) -> Result<u64, StoreError>;
}
