//! API keys: long-lived credentials of services, each acting with one role in one team.
//!
//! Only a hash of a key is stored (the hub computes it; keys are 256 random bits, so a
//! plain SHA-256 is enough and lookups stay one indexed equality). A key's plaintext
//! is shown once, when it is created, and never again.

use teamhub_protocol::{Role, TeamId, UserId};
use time::OffsetDateTime;

use crate::error::StoreError;

/// An API key as stored: everything except the key itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    /// Short and in the id alphabet, so `apikey:<id>` is a valid user id.
    pub id: String,
    pub team: TeamId,
    pub name: String,
    pub role: Role,
    /// The first characters of the key, so people can tell keys apart in a list.
    pub prefix: String,
    pub created_by: UserId,
    /// UTC, microsecond precision.
    pub created_at: OffsetDateTime,
}

/// The credential store of API keys. Implementations must pass
/// [`crate::conformance::keys`].
#[async_trait::async_trait]
pub trait KeyStore: Send + Sync {
    /// Stores a new key under the hash of its plaintext (lower-case hex SHA-256).
    /// An id or hash that is already stored is [`StoreError::Rejected`].
    async fn create(&self, key: &ApiKeyRecord, hash: &str) -> Result<(), StoreError>;

    /// The team's keys, oldest first.
    async fn list(&self, team: &TeamId) -> Result<Vec<ApiKeyRecord>, StoreError>;

    /// The key whose plaintext hashes to `hash`, if it exists (and was not deleted).
    async fn find_by_hash(&self, hash: &str) -> Result<Option<ApiKeyRecord>, StoreError>;

    /// Deletes key `id` of `team`; `None` when the team has no such key. After this
    /// returns, [`KeyStore::find_by_hash`] no longer finds it, on any node sharing the
    /// database.
    async fn delete(&self, team: &TeamId, id: &str) -> Result<Option<ApiKeyRecord>, StoreError>;
}
