//! Everything of teamhub that touches a database.
//!
//! Architecture invariant: only this crate knows sqlx. The hub sees small traits
//! ([`ActivitySink`], [`ActivityReader`]), plain record types ([`ActivityEvent`],
//! [`ActivityRow`]) and one error enum ([`StoreError`]), so a backend can be swapped
//! (SQLite as the embedded default, Postgres for clustered deployments) without the hub
//! changing, and the hub's tests never need a database driver.
//!
//! Architecture invariant: the hot path never awaits the database. Connections record
//! activity through [`ActivityWriter::record`], which only enqueues (or, when the queue
//! is full and a spill file is configured, appends one line to a local file); the
//! [`writer`] task batches, retries, replays the spill and writes.
//!
//! Map:
//! - [`activity`]: the event and row types and the two traits, with their contract.
//! - [`query`]: activity filters, keyset cursors and retention scopes.
//! - [`patterns`], [`keys`], [`revocations`]: the pattern library (versioned, with
//!   compare-and-set writes), API keys (stored as hashes) and member revocations, each a
//!   small trait; `sqlite_stores` and `postgres_stores` implement them.
//! - [`usage`]: usage per team per UTC day, added in idempotent batches.
//! - [`webhooks`]: webhook endpoints ([`WebhookStore`]) and the outbox of deliveries
//!   ([`Outbox`]), which the activity sinks fill in the transaction of each batch;
//!   `sqlite_webhooks` and `postgres_webhooks` implement them.
//! - [`writer`]: the bounded queue and batching, retrying background writer.
//! - `sqlite`: the SQLite backend (`migrations/sqlite/`).
//! - `postgres`: the PostgreSQL backend (`migrations/postgres/`, the same shape in
//!   Postgres' own types).
//! - `spill`: the writer's local overflow file (NDJSON), used when its queue is full.
//! - [`conformance`]: the contract as runnable checks every backend must pass.

pub mod activity;
pub mod conformance;
pub mod control_log;
mod error;
mod journal;
pub mod keys;
pub mod patterns;
mod postgres;
mod postgres_stores;
mod postgres_webhooks;
pub mod query;
pub mod revocations;
mod spill;
mod sqlite;
mod sqlite_stores;
mod sqlite_webhooks;
#[cfg(feature = "testing")]
pub mod testing;
mod timestamp;
pub mod usage;
pub mod webhooks;
pub mod writer;

use std::sync::Arc;

pub use activity::{ActivityEvent, ActivityReader, ActivityRetention, ActivityRow, ActivitySink};
pub use control_log::{ControlLog, LoggedCommand};
pub use error::{BoxError, StoreError};
pub use keys::{ApiKeyRecord, KeyStore};
pub use patterns::{Changes, Expect, Pattern, PatternError, PatternStore};
pub use query::{ActivityPage, ActivityQuery, BadCursor, Cursor, MAX_PAGE, RetentionScope};
pub use revocations::{API_KEY_USER_PREFIX, Revocation, RevocationStore};
pub use usage::{UsageCounts, UsageDay, UsageDelta, UsageStore};
pub use webhooks::{Outbox, WebhookEndpoint, WebhookStore};
pub use writer::{
    ActivityWriter, WriterConfig, WriterError, WriterStats, WriterTask, spawn_writer,
};

use postgres::PostgresStore;
use sqlite::SqliteStore;

/// An open database: the one place that knows which backend is in use.
///
/// Cheap to clone (a shared handle). Shut down in order: stop the activity writer
/// ([`WriterTask::shutdown`], which flushes), then [`Database::close`].
#[derive(Clone)]
pub struct Database {
    backend: Backend,
}

#[derive(Clone)]
enum Backend {
    Sqlite(Arc<SqliteStore>),
    Postgres(Arc<PostgresStore>),
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("backend", &self.backend_name())
            .finish()
    }
}

/// Opens the database named by `url`:
/// - `sqlite://path` (relative or absolute; the file is created if missing, its
///   directory is not), in WAL mode with a busy timeout;
/// - `sqlite::memory:`, a private in-memory database (tests, demos);
/// - `postgres://...` or `postgresql://...`, a PostgreSQL server; URL parameters such as
///   `sslmode`, `application_name` and `options=-c search_path=...` are honoured.
///
/// Connects eagerly, so a bad path or unreachable server fails here, at startup
/// ([`StoreError::Unavailable`]). Does not apply the schema: call [`Database::migrate`].
pub async fn connect(url: &str) -> Result<Database, StoreError> {
    let scheme = url.split_once(':').map_or("", |(scheme, _)| scheme);
    match scheme {
        "sqlite" => Ok(Database {
            backend: Backend::Sqlite(Arc::new(SqliteStore::connect(url).await?)),
        }),
        "postgres" | "postgresql" => Ok(Database {
            backend: Backend::Postgres(Arc::new(PostgresStore::connect(url).await?)),
        }),
        // Only the scheme is echoed: the rest of a URL may hold a password.
        _ => Err(StoreError::InvalidUrl(format!(
            "unsupported scheme {scheme:?}; expected sqlite://PATH, sqlite::memory: or postgres://..."
        ))),
    }
}

impl Database {
    /// Applies the schema migrations not applied yet (idempotent; `teamhub migrate` and
    /// `serve` both call it).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Sqlite(store) => store.migrate().await,
            Backend::Postgres(store) => store.migrate().await,
        }
    }

    /// Where activity events go (wrap it in [`spawn_writer`]; do not call it on a hot
    /// path).
    pub fn activity_sink(&self) -> Arc<dyn ActivitySink> {
        match &self.backend {
            Backend::Sqlite(store) => store.clone(),
            Backend::Postgres(store) => store.clone(),
        }
    }

    /// Reads the activity log back.
    pub fn activity_reader(&self) -> Arc<dyn ActivityReader> {
        match &self.backend {
            Backend::Sqlite(store) => store.clone(),
            Backend::Postgres(store) => store.clone(),
        }
    }

    /// Deletes expired activity (the hub's retention job).
    pub fn activity_retention(&self) -> Arc<dyn ActivityRetention> {
        match &self.backend {
            Backend::Sqlite(store) => store.clone(),
            Backend::Postgres(store) => store.clone(),
        }
    }

    /// The pattern library.
    pub fn pattern_store(&self) -> Arc<dyn PatternStore> {
        match &self.backend {
            Backend::Sqlite(store) => store.clone(),
            Backend::Postgres(store) => store.clone(),
        }
    }

    /// API keys (hashes and metadata).
    pub fn key_store(&self) -> Arc<dyn KeyStore> {
        match &self.backend {
            Backend::Sqlite(store) => store.clone(),
            Backend::Postgres(store) => store.clone(),
        }
    }

    /// Member revocations.
    pub fn revocation_store(&self) -> Arc<dyn RevocationStore> {
        match &self.backend {
            Backend::Sqlite(store) => store.clone(),
            Backend::Postgres(store) => store.clone(),
        }
    }

    /// Usage per team per UTC day.
    pub fn usage_store(&self) -> Arc<dyn UsageStore> {
        match &self.backend {
            Backend::Sqlite(store) => store.clone(),
            Backend::Postgres(store) => store.clone(),
        }
    }

    /// The control log (commands for every node, kept for a while).
    pub fn control_log(&self) -> Arc<dyn ControlLog> {
        match &self.backend {
            Backend::Sqlite(store) => store.clone(),
            Backend::Postgres(store) => store.clone(),
        }
    }

    /// Webhook endpoints.
    pub fn webhook_store(&self) -> Arc<dyn WebhookStore> {
        match &self.backend {
            Backend::Sqlite(store) => store.clone(),
            Backend::Postgres(store) => store.clone(),
        }
    }

    /// The outbox of webhook deliveries.
    pub fn outbox(&self) -> Arc<dyn Outbox> {
        match &self.backend {
            Backend::Sqlite(store) => store.clone(),
            Backend::Postgres(store) => store.clone(),
        }
    }

    /// `"sqlite"` or `"postgres"`, for logs and metrics.
    pub fn backend_name(&self) -> &'static str {
        match &self.backend {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// Waits for in-flight operations and closes every connection. Later operations fail
    /// with [`StoreError::Unavailable`].
    pub async fn close(&self) {
        match &self.backend {
            Backend::Sqlite(store) => store.close().await,
            Backend::Postgres(store) => store.close().await,
        }
    }
}

/// The current time as every backend stores it: UTC, microsecond precision.
pub fn now_utc() -> time::OffsetDateTime {
    timestamp::normalize(time::OffsetDateTime::now_utc())
}
