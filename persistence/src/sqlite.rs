//! The embedded default backend: SQLite through sqlx.
//!
//! One file holds everything a single node needs, with no server to run. The schema is
//! `migrations/sqlite/`, embedded at compile time; its header documents the text
//! encodings (hyphenated UUID, JSON text, fixed-width UTC timestamps) that stand in for
//! Postgres' native types.
//!
//! Connection choices, and why:
//! - WAL journal: readers (activity exports) never block the writer, nor it them.
//! - `synchronous = FULL`: the activity log is an audit trail; with batching this costs
//!   one fsync per batch, not per event.
//! - busy timeout: other writers (pattern and API key stores share the file) wait for the
//!   lock instead of failing at once; a write that still times out is `Unavailable` and
//!   the activity writer retries it.
//! - `sqlite::memory:` uses one connection that never expires, because an in-memory
//!   database lives exactly as long as its connections.

use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::{MigrateError, Migrator};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite};
use teamhub_protocol::{TeamId, UserId};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::activity::{
    ActivityEvent, ActivityReader, ActivityRetention, ActivityRow, ActivitySink,
};
use crate::error::{DbErrorClass, StoreError};
use crate::query::{ActivityPage, ActivityQuery, RetentionScope};
use crate::timestamp;

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

/// How long a statement waits for another connection's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an operation waits for a free pooled connection before `Unavailable`.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections for a file database: one writer at a time is all SQLite allows; the
/// rest serve concurrent readers.
const FILE_POOL_SIZE: u32 = 4;

/// Columns per inserted row; see [`ROWS_PER_STATEMENT`].
const COLUMNS: usize = 10;
/// SQLite refuses statements with more bound parameters than SQLITE_MAX_VARIABLE_NUMBER
/// (32,766 for the bundled SQLite >= 3.32; 999 before). 512 rows x 10 columns = 5,120
/// parameters keeps each statement well inside the limit and matches the writer's
/// default batch size, so a normal batch is one statement; larger batches are split into
/// several statements inside the same transaction.
const ROWS_PER_STATEMENT: usize = 512;
const _: () = assert!(ROWS_PER_STATEMENT * COLUMNS <= 32_766);

const INSERT_PREFIX: &str = "INSERT INTO activity_logs \
    (id, team_id, user_id, action, resource_type, resource_id, metadata, ip_address, \
     user_agent, created_at) ";

/// A SQLite database: the activity log (and patterns, API keys and revocations, in `*_stores.rs`).
#[derive(Debug, Clone)]
pub(crate) struct SqliteStore {
    pub(crate) pool: SqlitePool,
}

impl SqliteStore {
    /// Opens `url` (`sqlite://path`, created if missing, or `sqlite::memory:`).
    pub(crate) async fn connect(url: &str) -> Result<Self, StoreError> {
        let in_memory = is_in_memory(url);
        let mut options = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::InvalidUrl(e.to_string()))?
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let pool_options = if in_memory {
            SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
        } else {
            options = options
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Full);
            SqlitePoolOptions::new().max_connections(FILE_POOL_SIZE)
        };
        let shown = options.get_filename().display().to_string();
        let pool = pool_options
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(|e| convert(e).context(&format!("opening SQLite database {shown}")))?;
        Ok(SqliteStore { pool })
    }

    /// Applies the embedded migrations that have not run yet.
    pub(crate) async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.pool).await.map_err(|e| match e {
            // The database could not run the statements: report why (busy, I/O, ...),
            // not as a broken migration.
            MigrateError::Execute(inner) => convert(inner),
            other => StoreError::Migration(Box::new(other)),
        })
    }

    /// Waits for in-flight operations and closes every connection.
    pub(crate) async fn close(&self) {
        self.pool.close().await;
    }
}

/// Whether a sqlite URL names an in-memory database (as sqlx interprets it).
fn is_in_memory(url: &str) -> bool {
    let rest = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    path == ":memory:" || query.split('&').any(|kv| kv == "mode=memory")
}

pub(crate) fn convert(err: sqlx::Error) -> StoreError {
    crate::error::from_sqlx(err, classify)
}

/// Sorts SQLite result codes (<https://www.sqlite.org/rescode.html>) by what a caller
/// can do about them. sqlx reports the extended code; the primary code is its low byte.
fn classify(err: &dyn sqlx::error::DatabaseError) -> DbErrorClass {
    let Some(code) = err.code().and_then(|c| c.parse::<i32>().ok()) else {
        return DbErrorClass::Other;
    };
    match code & 0xff {
        // BUSY, LOCKED, NOMEM, READONLY (permissions, fixable while running), IOERR,
        // FULL, CANTOPEN, PROTOCOL
        5 | 6 | 7 | 8 | 10 | 13 | 14 | 15 => DbErrorClass::Unavailable,
        // TOOBIG, CONSTRAINT, MISMATCH, RANGE: this data can never be stored.
        18 | 19 | 20 | 25 => DbErrorClass::Rejected,
        _ => DbErrorClass::Other,
    }
}

#[async_trait::async_trait]
impl ActivitySink for SqliteStore {
    async fn write_batch(&self, events: &[ActivityEvent]) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        // Encode the timestamps first, so an unstorable event is rejected before a
        // transaction is opened.
        let created: Vec<String> = events
            .iter()
            .map(|e| timestamp::format(e.created_at))
            .collect::<Result<_, _>>()
            .map_err(|e| StoreError::Rejected(Box::new(e)))?;

        // One transaction per batch: the batch lands entirely or not at all, and the
        // journal is synced once.
        let mut tx = self.pool.begin().await.map_err(convert)?;
        for (chunk, created) in events
            .chunks(ROWS_PER_STATEMENT)
            .zip(created.chunks(ROWS_PER_STATEMENT))
        {
            let mut insert = QueryBuilder::<Sqlite>::new(INSERT_PREFIX);
            insert.push_values(chunk.iter().zip(created), |mut row, (e, at)| {
                row.push_bind(e.id.hyphenated())
                    .push_bind(e.team.as_str())
                    .push_bind(e.user.as_str())
                    .push_bind(e.action.as_str())
                    .push_bind(e.resource_type.as_deref())
                    .push_bind(e.resource_id.as_deref())
                    .push_bind(e.metadata.get())
                    .push_bind(e.ip.map(|ip| ip.to_string()))
                    .push_bind(e.user_agent.as_deref())
                    .push_bind(at.as_str());
            });
            // A retry of a batch that did land (or overlaps one) must not add rows; the
            // first stored version of an id wins.
            insert.push(" ON CONFLICT(id) DO NOTHING");
            insert
                .build()
                // Batch sizes vary, so each row count is a different statement; caching
                // them all would only churn the per-connection statement cache.
                .persistent(false)
                .execute(&mut *tx)
                .await
                .map_err(convert)?;
        }
        // The webhook outbox in the same transaction: an event's deliveries exist
        // exactly when its row does.
        crate::sqlite_webhooks::enqueue_batch(&mut tx, events).await?;
        tx.commit().await.map_err(convert)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(drop)
            .map_err(convert)
    }
}

#[async_trait::async_trait]
impl ActivityReader for SqliteStore {
    async fn recent(&self, team: &TeamId, limit: u32) -> Result<Vec<ActivityRow>, StoreError> {
        // Served by activity_logs_team_time: (team_id, created_at DESC, id DESC).
        let rows = sqlx::query(
            "SELECT id, team_id, user_id, action, resource_type, resource_id, metadata, \
                    ip_address, user_agent, created_at \
             FROM activity_logs \
             WHERE team_id = ?1 \
             ORDER BY created_at DESC, id DESC \
             LIMIT ?2",
        )
        .bind(team.as_str())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(convert)?;
        rows.iter().map(decode_row).collect()
    }

    async fn page(&self, q: &ActivityQuery) -> Result<ActivityPage, StoreError> {
        let Some((since, until)) = q.clamped() else {
            return Ok(ActivityPage::default());
        };
        let stamp =
            |t: OffsetDateTime| timestamp::format(t).map_err(|e| StoreError::Rejected(Box::new(e)));
        let limit = q.page_size();
        // Served by activity_logs_team_user_time when `user` is given, else by
        // activity_logs_team_time: equality on the leading columns, then a range on
        // (created_at, id) walked in index order, so the LIMIT stops the scan.
        let mut query = QueryBuilder::<Sqlite>::new(SELECT_ROWS);
        query.push(" WHERE team_id = ").push_bind(q.team.as_str());
        if let Some(user) = &q.user {
            query.push(" AND user_id = ").push_bind(user.as_str());
        }
        if let Some(action) = &q.action {
            query.push(" AND action = ").push_bind(action.as_str());
        }
        if let Some(resource_type) = &q.resource_type {
            query
                .push(" AND resource_type = ")
                .push_bind(resource_type.as_str());
        }
        if let Some(since) = since {
            query.push(" AND created_at >= ").push_bind(stamp(since)?);
        }
        if let Some(until) = until {
            query.push(" AND created_at < ").push_bind(stamp(until)?);
        }
        if let Some(after) = &q.after {
            query
                .push(" AND (created_at, id) < (")
                .push_bind(stamp(after.created_at)?)
                .push(", ")
                .push_bind(after.id.hyphenated().to_string())
                .push(")");
        }
        query
            .push(" ORDER BY created_at DESC, id DESC LIMIT ")
            .push_bind(i64::from(limit) + 1);
        let rows = query
            .build()
            .persistent(false)
            .fetch_all(&self.pool)
            .await
            .map_err(convert)?;
        let rows = rows.iter().map(decode_row).collect::<Result<_, _>>()?;
        Ok(ActivityPage::from_rows(rows, limit))
    }
}

#[async_trait::async_trait]
impl ActivityRetention for SqliteStore {
    async fn delete_expired(
        &self,
        scope: RetentionScope<'_>,
        before: OffsetDateTime,
        max_rows: u32,
    ) -> Result<u64, StoreError> {
        let before = timestamp::format(before).map_err(|e| StoreError::Rejected(Box::new(e)))?;
        // One statement, so one short write transaction: SQLite has a single writer,
        // and the activity writer waits (busy timeout) only for this batch.
        let mut query = QueryBuilder::<Sqlite>::new(
            "DELETE FROM activity_logs WHERE id IN (SELECT id FROM activity_logs WHERE created_at < ",
        );
        query.push_bind(before);
        match scope {
            // activity_logs_team_time
            RetentionScope::Team(team) => {
                query.push(" AND team_id = ").push_bind(team.as_str());
            }
            // activity_logs_time
            RetentionScope::AllExcept(teams) if !teams.is_empty() => {
                query.push(" AND team_id NOT IN (");
                let mut list = query.separated(", ");
                for team in teams {
                    list.push_bind(team.as_str());
                }
                query.push(")");
            }
            RetentionScope::AllExcept(_) => {}
        }
        query
            .push(" ORDER BY created_at LIMIT ")
            .push_bind(i64::from(max_rows))
            .push(")");
        let done = query
            .build()
            .persistent(false)
            .execute(&self.pool)
            .await
            .map_err(convert)?;
        Ok(done.rows_affected())
    }
}

const SELECT_ROWS: &str = "SELECT id, team_id, user_id, action, resource_type, resource_id, \
    metadata, ip_address, user_agent, created_at FROM activity_logs";

/// Decodes one `activity_logs` row. Other tools write this table too, so a value that
/// breaks the schema's encodings is reported (naming the row and column), not trusted.
fn decode_row(row: &SqliteRow) -> Result<ActivityRow, StoreError> {
    let text = |col: &str| -> Result<String, StoreError> { row.try_get(col).map_err(convert) };
    let opt_text =
        |col: &str| -> Result<Option<String>, StoreError> { row.try_get(col).map_err(convert) };

    let id_text = text("id")?;
    let bad = |col: &str, e: &dyn std::fmt::Display| {
        StoreError::other(format!("activity_logs row {id_text:?}: bad {col}: {e}"))
    };
    let id = Uuid::parse_str(&id_text).map_err(|e| bad("id", &e))?;
    let team = TeamId::try_from(text("team_id")?).map_err(|e| bad("team_id", &e))?;
    let user = UserId::try_from(text("user_id")?).map_err(|e| bad("user_id", &e))?;
    let metadata = serde_json::from_str(&text("metadata")?).map_err(|e| bad("metadata", &e))?;
    let created_at = timestamp::parse(&text("created_at")?).map_err(|e| bad("created_at", &e))?;
    Ok(ActivityRow {
        id,
        team,
        user,
        action: text("action")?,
        resource_type: opt_text("resource_type")?,
        resource_id: opt_text("resource_id")?,
        metadata,
        ip: opt_text("ip_address")?,
        user_agent: opt_text("user_agent")?,
        created_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_in_memory_urls() {
        assert!(is_in_memory("sqlite::memory:"));
        assert!(is_in_memory("sqlite://:memory:"));
        assert!(is_in_memory("sqlite://?mode=memory&cache=shared"));
        assert!(!is_in_memory("sqlite://teamhub.db"));
        assert!(!is_in_memory("sqlite://data/memory.db?mode=rwc"));
    }
}
