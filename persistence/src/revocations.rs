//! Member revocations: "tokens of this user issued before this time no longer count in
//! this team".
//!
//! A JWT cannot be recalled, so a revocation is a time: the hub refuses tokens whose
//! `iat` is not after it. A revocation is needed until every token issued before it has
//! expired; with a bound on token lifetimes the hub prunes older ones
//! ([`RevocationStore::prune`]). Those of API keys (users `apikey:...`) are kept, since
//! a key never expires. Every node keeps them all in memory; the database is where they
//! survive restarts and how the nodes of a cluster share them.

use teamhub_protocol::{TeamId, UserId};
use time::OffsetDateTime;

use crate::error::StoreError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    pub team: TeamId,
    pub user: UserId,
    /// UTC, microsecond precision.
    pub revoked_at: OffsetDateTime,
    pub revoked_by: UserId,
}

/// Where revocations are kept. Implementations must pass
/// [`crate::conformance::revocations`].
#[async_trait::async_trait]
pub trait RevocationStore: Send + Sync {
    /// Records a revocation and returns the one now in force for that team and user:
    /// the latest of the stored and the new one (a revocation never moves back in time).
    async fn revoke(&self, revocation: &Revocation) -> Result<Revocation, StoreError>;

    /// Every revocation, for a node's in-memory cache.
    async fn all(&self) -> Result<Vec<Revocation>, StoreError>;

    /// Deletes the revocations made before `before`, except those of API keys (users
    /// starting with [`API_KEY_USER_PREFIX`]); returns how many went.
    async fn prune(&self, before: OffsetDateTime) -> Result<u64, StoreError>;
}

/// The user id prefix of API key identities, whose revocations are never pruned.
pub const API_KEY_USER_PREFIX: &str = "apikey:";
