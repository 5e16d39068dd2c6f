//! Usage per team per UTC day: messages, API calls, peak connections and webhook
//! deliveries, which the platform bills by.
//!
//! Nodes count in memory and add their counts in batches ([`UsageStore::add`]). A batch
//! carries an id; adding the same batch twice (a retry after a timeout whose commit
//! did land) changes nothing, so a node retries a failed flush with the same id and
//! nothing is counted twice. Counts are summed; peaks are the maximum, since each node
//! reports the team's cluster-wide connection count as it saw it.
//!
//! `sqlite.rs` and `postgres.rs` implement it (`migrations/*/0005_usage.sql`); both
//! pass [`crate::conformance::usage`].

mod postgres;
mod sqlite;

use teamhub_protocol::TeamId;
use time::{Date, OffsetDateTime};
use uuid::Uuid;

use crate::error::StoreError;

/// One team's use in one UTC day (or what one batch adds to it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UsageCounts {
    pub messages: u64,
    pub api_calls: u64,
    pub peak_connections: u64,
    pub webhook_deliveries: u64,
}

impl UsageCounts {
    /// Folds `other` in: counts add up, peaks take the larger.
    pub fn merge(&mut self, other: &UsageCounts) {
        self.messages += other.messages;
        self.api_calls += other.api_calls;
        self.peak_connections = self.peak_connections.max(other.peak_connections);
        self.webhook_deliveries += other.webhook_deliveries;
    }

    pub fn is_empty(&self) -> bool {
        *self == UsageCounts::default()
    }
}

/// What a batch adds to one team's day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageDelta {
    pub team: TeamId,
    pub day: Date,
    pub counts: UsageCounts,
}

/// One day of a team's use, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageDay {
    pub day: Date,
    pub counts: UsageCounts,
}

/// Where usage is kept. Implementations must pass [`crate::conformance::usage`].
#[async_trait::async_trait]
pub trait UsageStore: Send + Sync {
    /// Adds a batch atomically: all of its rows or none. A batch id already added is
    /// ignored (answers `Ok`), so a retry with the same id counts nothing twice.
    async fn add(&self, batch: Uuid, node: &str, rows: &[UsageDelta]) -> Result<(), StoreError>;

    /// `team`'s days from `from` to `to`, both inclusive, oldest first; days without
    /// any use are absent.
    async fn days(&self, team: &TeamId, from: Date, to: Date) -> Result<Vec<UsageDay>, StoreError>;

    /// Forgets the ids of batches added before `before` (a batch is retried within
    /// moments, not days); returns how many went.
    async fn prune_batches(&self, before: OffsetDateTime) -> Result<u64, StoreError>;
}

fn count(n: u64) -> Result<i64, StoreError> {
    i64::try_from(n).map_err(|_| StoreError::other(format!("usage count {n} out of range")))
}

fn uncount(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}
