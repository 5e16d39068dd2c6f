//! The one error type of the persistence layer.
//!
//! Callers decide what to do from the variant alone, without knowing sqlx (architecture
//! invariant: only `persistence` knows sqlx): the activity writer retries
//! [`StoreError::Unavailable`], sets aside data that hit [`StoreError::Rejected`], and
//! startup fails on [`StoreError::Migration`] and [`StoreError::InvalidUrl`]. Driver errors
//! are carried as boxed errors so no sqlx type leaks into the public API.

use std::error::Error as StdError;

/// A boxed driver error, kept for its message.
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// What went wrong talking to the database. Each variant's message includes the
/// driver's own description.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached or cannot serve right now: connection refused or
    /// lost, pool exhausted or closed, SQLite busy/locked, I/O failure, disk full.
    /// Retrying the same operation later may succeed; `/readyz` should report not ready.
    #[error("database unavailable: {0}")]
    Unavailable(BoxError),
    /// The database refused the data itself (a constraint, a value it cannot store).
    /// Retrying the same data cannot succeed.
    #[error("database rejected the data: {0}")]
    Rejected(BoxError),
    /// Applying the schema failed (a broken or locally modified migration, or a database
    /// migrated by a newer version). The node must not start.
    #[error("database migration failed: {0}")]
    Migration(BoxError),
    /// The database URL cannot be used: malformed, unknown scheme, or a backend that is
    /// not built in. The message never repeats the URL's credentials.
    #[error("invalid database URL: {0}")]
    InvalidUrl(String),
    /// Anything else, e.g. a row that does not decode. Not expected to go away by retrying.
    #[error("database error: {0}")]
    Other(BoxError),
}

impl StoreError {
    /// Whether retrying the same operation later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }

    /// Prefixes the message with `context` (e.g. which file was being opened), keeping
    /// the variant.
    pub(crate) fn context(self, context: &str) -> StoreError {
        let wrap = |e: BoxError| -> BoxError { format!("{context}: {e}").into() };
        match self {
            StoreError::Unavailable(e) => StoreError::Unavailable(wrap(e)),
            StoreError::Rejected(e) => StoreError::Rejected(wrap(e)),
            StoreError::Migration(e) => StoreError::Migration(wrap(e)),
            StoreError::InvalidUrl(m) => StoreError::InvalidUrl(format!("{context}: {m}")),
            StoreError::Other(e) => StoreError::Other(wrap(e)),
        }
    }

    /// An error that has no driver error underneath.
    pub(crate) fn other(message: impl Into<String>) -> StoreError {
        StoreError::Other(message.into().into())
    }
}

/// How a backend classifies a database-reported error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DbErrorClass {
    Unavailable,
    Rejected,
    Other,
}

/// Maps a sqlx error to a [`StoreError`]. `classify_db` sorts errors reported by the
/// database itself, whose codes are backend-specific; everything else is the same for
/// every backend.
pub(crate) fn from_sqlx(
    err: sqlx::Error,
    classify_db: fn(&dyn sqlx::error::DatabaseError) -> DbErrorClass,
) -> StoreError {
    use sqlx::Error as E;
    match err {
        E::Database(ref db) => match classify_db(db.as_ref()) {
            DbErrorClass::Unavailable => StoreError::Unavailable(Box::new(err)),
            DbErrorClass::Rejected => StoreError::Rejected(Box::new(err)),
            DbErrorClass::Other => StoreError::Other(Box::new(err)),
        },
        E::Io(_)
        | E::Tls(_)
        | E::Protocol(_)
        | E::PoolTimedOut
        | E::PoolClosed
        | E::WorkerCrashed
        | E::BeginFailed => StoreError::Unavailable(Box::new(err)),
        E::Encode(_) => StoreError::Rejected(Box::new(err)),
        E::Configuration(_) | E::ConfigFile(_) => StoreError::InvalidUrl(err.to_string()),
        E::Migrate(_) => StoreError::Migration(Box::new(err)),
        other => StoreError::Other(Box::new(other)),
    }
}
