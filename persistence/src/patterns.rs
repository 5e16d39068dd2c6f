//! The pattern library: named JSON documents per team, versioned by ONE counter per
//! team, so "everything changed after version V" is a change feed.
//!
//! Every write is a compare-and-set decided inside one transaction that holds the
//! team's counter: of two writers racing from the same version, exactly one wins,
//! also when they run on different nodes sharing a database. A deletion leaves a
//! tombstone (`deleted: true`, content `null`) with a new version, so the feed reports
//! it; a tombstoned name can be created again.

use serde_json::value::RawValue;
use teamhub_protocol::{PatternName, TeamId, UserId};
use time::OffsetDateTime;

use crate::error::StoreError;

/// One pattern (or tombstone) as stored.
#[derive(Debug, Clone)]
pub struct Pattern {
    pub name: PatternName,
    /// The team counter's value at this pattern's last change.
    pub version: u64,
    /// JSON; `null` for a tombstone.
    pub content: Box<RawValue>,
    pub updated_by: UserId,
    /// UTC, microsecond precision.
    pub updated_at: OffsetDateTime,
    pub deleted: bool,
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        // Content compares as JSON values: Postgres' JSONB does not keep the text.
        let json = |c: &RawValue| serde_json::from_str::<serde_json::Value>(c.get()).ok();
        self.name == other.name
            && self.version == other.version
            && json(&self.content) == json(&other.content)
            && self.updated_by == other.updated_by
            && self.updated_at == other.updated_at
            && self.deleted == other.deleted
    }
}

/// What a write expects to find.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// No live pattern of that name (`If-None-Match: *`); a tombstone counts as absent.
    Absent,
    /// The live pattern at exactly this version (`If-Match: "<version>"`).
    Version(u64),
}

/// The patterns of a team changed after some version.
#[derive(Debug, Clone, PartialEq)]
pub struct Changes {
    /// The team's latest version (0 before its first change).
    pub version: u64,
    /// Oldest change first; tombstones included.
    pub patterns: Vec<Pattern>,
}

/// Why a write did not happen. Nothing was written in any of these cases.
#[derive(Debug, thiserror::Error)]
pub enum PatternError {
    /// The precondition does not hold: the pattern exists (create), or is at another
    /// version or was deleted (update, delete). Carries what is stored now.
    #[error("pattern changed: now at version {}", .0.version)]
    Conflict(Box<Pattern>),
    /// There is no pattern of that name, live or tombstoned (update, delete), or only a
    /// tombstone (delete).
    #[error("no such pattern")]
    NotFound,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Storage of the pattern library. Implementations must pass
/// [`crate::conformance::patterns`].
#[async_trait::async_trait]
pub trait PatternStore: Send + Sync {
    /// The pattern or tombstone of that name.
    async fn get(&self, team: &TeamId, name: &PatternName) -> Result<Option<Pattern>, StoreError>;

    /// Every pattern and tombstone changed after `since`, with the team's latest version.
    /// Versions of returned patterns never exceed the returned `version`.
    async fn changes(&self, team: &TeamId, since: u64) -> Result<Changes, StoreError>;

    /// Creates or updates a pattern if `expect` holds, with the team's next version.
    async fn put(
        &self,
        team: &TeamId,
        name: &PatternName,
        content: &RawValue,
        expect: Expect,
        by: &UserId,
    ) -> Result<Pattern, PatternError>;

    /// Replaces the live pattern at `version` with a tombstone at the team's next
    /// version, and returns the tombstone.
    async fn delete(
        &self,
        team: &TeamId,
        name: &PatternName,
        version: u64,
        by: &UserId,
    ) -> Result<Pattern, PatternError>;
}

/// Decides a write from what is stored: `Ok(())` to go ahead.
pub(crate) fn check(current: Option<Pattern>, expect: Expect) -> Result<(), PatternError> {
    match (current, expect) {
        (None, Expect::Absent) => Ok(()),
        (Some(p), Expect::Absent) if p.deleted => Ok(()),
        (Some(p), Expect::Absent) => Err(PatternError::Conflict(Box::new(p))),
        (None, Expect::Version(_)) => Err(PatternError::NotFound),
        (Some(p), Expect::Version(v)) if !p.deleted && p.version == v => Ok(()),
        (Some(p), Expect::Version(_)) => Err(PatternError::Conflict(Box::new(p))),
    }
}

/// Decides a deletion: only a live pattern at `version` can go; a tombstone is gone.
pub(crate) fn check_delete(current: Option<Pattern>, version: u64) -> Result<(), PatternError> {
    match current {
        None => Err(PatternError::NotFound),
        Some(p) if p.deleted => Err(PatternError::NotFound),
        Some(p) if p.version == version => Ok(()),
        Some(p) => Err(PatternError::Conflict(Box::new(p))),
    }
}

/// `null`, the content of a tombstone.
pub(crate) fn null() -> Box<RawValue> {
    RawValue::from_string("null".to_owned()).expect("`null` is valid JSON")
}
