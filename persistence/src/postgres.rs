//! The clustered backend: PostgreSQL through sqlx.
//!
//! Several hub nodes share one database, and reporting tools read `activity_logs`
//! directly (PROTOCOL.md section 7), so the schema (`migrations/postgres/`, embedded at
//! compile time) uses Postgres' own types: `UUID`, `JSONB`, `INET`, `TIMESTAMPTZ`.
//!
//! Choices, and why:
//! - One statement per batch, whatever its size: the ten columns are bound as ten
//!   arrays and expanded with `UNNEST`, so the SQL text never changes (one prepared
//!   statement per connection, cached) and no batch can reach Postgres' limit of 65,535
//!   bound parameters. It is still a multi-row `INSERT ... ON CONFLICT (id) DO NOTHING`,
//!   inside one transaction per batch.
//! - `metadata` and `ip_address` are sent as text and cast by the server
//!   (`::jsonb`, `::inet`), so no extra sqlx type features are needed and the server is
//!   the judge of what it can store: a value it refuses (e.g. a `\u0000` in JSON text)
//!   is a data error, hence [`StoreError::Rejected`], and the writer sets that event aside.
//! - Reads return `metadata::text` and `host(ip_address)`: the JSON text is parsed here,
//!   and an address reads back in its usual form, without a `/32` or `/128` suffix.
//! - The URL is handed to sqlx as is, so its parameters work: `application_name=...`,
//!   `options=-c search_path=...` (the tests run each in its own schema this way),
//!   `sslmode=...`.

use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::{MigrateError, Migrator};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::{Connection, Postgres, QueryBuilder, Row};
use teamhub_protocol::{TeamId, UserId};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::activity::{
    ActivityEvent, ActivityReader, ActivityRetention, ActivityRow, ActivitySink,
};
use crate::error::{DbErrorClass, StoreError};
use crate::query::{ActivityPage, ActivityQuery, RetentionScope};

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

/// How long an operation waits for a pooled connection (including opening a new one)
/// before it is `Unavailable`.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections per node: the activity writer uses one at a time; the rest serve reads
/// (activity pages and exports).
const POOL_SIZE: u32 = 8;

const INSERT: &str = "INSERT INTO activity_logs \
    (id, team_id, user_id, action, resource_type, resource_id, metadata, ip_address, \
     user_agent, created_at) \
    SELECT id, team_id, user_id, action, resource_type, resource_id, metadata::jsonb, \
           ip_address::inet, user_agent, created_at \
    FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
                $7::text[], $8::text[], $9::text[], $10::timestamptz[]) \
         AS batch(id, team_id, user_id, action, resource_type, resource_id, metadata, \
                  ip_address, user_agent, created_at) \
    ON CONFLICT (id) DO NOTHING";

/// A PostgreSQL database: the activity log (and patterns, API keys and revocations, in `*_stores.rs`).
#[derive(Debug, Clone)]
pub(crate) struct PostgresStore {
    pub(crate) pool: PgPool,
}

impl PostgresStore {
    /// Opens a pool on `url` (`postgres://` or `postgresql://`) and one connection at once,
    /// so an unreachable server fails at startup.
    pub(crate) async fn connect(url: &str) -> Result<Self, StoreError> {
        // sqlx's messages about a malformed URL do not repeat it, so they are safe to show.
        let options =
            PgConnectOptions::from_str(url).map_err(|e| StoreError::InvalidUrl(e.to_string()))?;
        let shown = format!(
            "{}:{}/{}",
            options.get_host(),
            options.get_port(),
            options.get_database().unwrap_or("")
        );
        let context = format!("connecting to PostgreSQL at {shown}");
        // One direct connection first: a pool that cannot connect only reports "pool
        // timed out", while this says why (refused, unknown host, authentication).
        let probe = tokio::time::timeout(ACQUIRE_TIMEOUT, PgConnection::connect_with(&options))
            .await
            .map_err(|_| {
                StoreError::Unavailable(format!("no answer within {ACQUIRE_TIMEOUT:?}").into())
                    .context(&context)
            })?
            .map_err(|e| convert(e).context(&context))?;
        // Closing the probe politely can only fail if the server went away meanwhile;
        // the pool below then reports it.
        let _ = probe.close().await;
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(|e| convert(e).context(&context))?;
        Ok(PostgresStore { pool })
    }

    /// Applies the embedded migrations that have not run yet. sqlx serialises
    /// concurrent migrators (several nodes starting at once) with an advisory lock.
    pub(crate) async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.pool).await.map_err(|e| match e {
            MigrateError::Execute(inner) => convert(inner),
            other => StoreError::Migration(Box::new(other)),
        })
    }

    /// Waits for in-flight operations and closes every connection.
    pub(crate) async fn close(&self) {
        self.pool.close().await;
    }
}

pub(crate) fn convert(err: sqlx::Error) -> StoreError {
    crate::error::from_sqlx(err, classify)
}

/// Sorts SQLSTATE codes (<https://www.postgresql.org/docs/current/errcodes-appendix.html>)
/// by what a caller can do about them, mostly by class (the first two characters).
fn classify(err: &dyn sqlx::error::DatabaseError) -> DbErrorClass {
    let Some(code) = err.code() else {
        return DbErrorClass::Other;
    };
    match code.get(..2).unwrap_or("") {
        // 08 connection exception, 53 insufficient resources (disk full, too many
        // connections), 57 operator intervention (admin shutdown, a terminated backend,
        // a cancelled or timed-out statement, the server starting up), 58 system error
        // (I/O), 40 transaction rollback (serialization failure, deadlock): a retry
        // later may succeed.
        "08" | "53" | "57" | "58" | "40" => DbErrorClass::Unavailable,
        // 55P03 lock not available.
        "55" if code == "55P03" => DbErrorClass::Unavailable,
        // 22 data exception (invalid JSON, an unstorable character, a bad address),
        // 23 integrity constraint violation: this data can never be stored.
        "22" | "23" => DbErrorClass::Rejected,
        _ => DbErrorClass::Other,
    }
}

#[async_trait::async_trait]
impl ActivitySink for PostgresStore {
    async fn write_batch(&self, events: &[ActivityEvent]) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        let n = events.len();
        let mut ids = Vec::with_capacity(n);
        let mut teams = Vec::with_capacity(n);
        let mut users = Vec::with_capacity(n);
        let mut actions = Vec::with_capacity(n);
        let mut resource_types = Vec::with_capacity(n);
        let mut resource_ids = Vec::with_capacity(n);
        let mut metadata = Vec::with_capacity(n);
        let mut ips = Vec::with_capacity(n);
        let mut user_agents = Vec::with_capacity(n);
        let mut created: Vec<OffsetDateTime> = Vec::with_capacity(n);
        for e in events {
            ids.push(e.id);
            teams.push(e.team.as_str());
            users.push(e.user.as_str());
            actions.push(e.action.as_str());
            resource_types.push(e.resource_type.as_deref());
            resource_ids.push(e.resource_id.as_deref());
            metadata.push(e.metadata.get());
            ips.push(e.ip.map(|ip| ip.to_string()));
            user_agents.push(e.user_agent.as_deref());
            created.push(e.created_at);
        }

        // One transaction per batch, like SQLite: all of it lands or none. (A single
        // statement is atomic anyway; the explicit transaction keeps that true if a
        // batch is ever split into several statements.)
        let mut tx = self.pool.begin().await.map_err(convert)?;
        sqlx::query(INSERT)
            .bind(ids)
            .bind(teams)
            .bind(users)
            .bind(actions)
            .bind(resource_types)
            .bind(resource_ids)
            .bind(metadata)
            .bind(ips)
            .bind(user_agents)
            .bind(created)
            .execute(&mut *tx)
            .await
            .map_err(convert)?;
        // The webhook outbox in the same transaction: an event's deliveries exist
        // exactly when its row does.
        crate::postgres_webhooks::enqueue_batch(&mut tx, events).await?;
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
impl ActivityReader for PostgresStore {
    async fn recent(&self, team: &TeamId, limit: u32) -> Result<Vec<ActivityRow>, StoreError> {
        // Served by activity_logs_team_time: (team_id, created_at DESC, id DESC).
        let mut query = QueryBuilder::<Postgres>::new(
            "SELECT id, team_id, user_id, action, resource_type, resource_id, \
                    metadata::text AS metadata, host(ip_address) AS ip_address, \
                    user_agent, created_at \
             FROM activity_logs WHERE team_id = ",
        );
        query
            .push_bind(team.as_str())
            .push(" ORDER BY created_at DESC, id DESC LIMIT ")
            .push_bind(i64::from(limit));
        let rows = query.build().fetch_all(&self.pool).await.map_err(convert)?;
        rows.iter().map(decode_row).collect()
    }

    async fn page(&self, q: &ActivityQuery) -> Result<ActivityPage, StoreError> {
        let Some((since, until)) = q.clamped() else {
            return Ok(ActivityPage::default());
        };
        let limit = q.page_size();
        // Only the filters given become predicates, so each combination is its own
        // statement with its own plan: activity_logs_team_user_time when `user` is
        // given, else activity_logs_team_time, walked in index order from the row
        // comparison on (created_at, id), which the btree serves as a range start.
        let mut query = QueryBuilder::<Postgres>::new(SELECT_ROWS);
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
            query.push(" AND created_at >= ").push_bind(since);
        }
        if let Some(until) = until {
            query.push(" AND created_at < ").push_bind(until);
        }
        if let Some(after) = &q.after {
            query
                .push(" AND (created_at, id) < (")
                .push_bind(after.created_at)
                .push(", ")
                .push_bind(after.id)
                .push(")");
        }
        query
            .push(" ORDER BY created_at DESC, id DESC LIMIT ")
            .push_bind(i64::from(limit) + 1);
        let rows = query.build().fetch_all(&self.pool).await.map_err(convert)?;
        let rows = rows.iter().map(decode_row).collect::<Result<_, _>>()?;
        Ok(ActivityPage::from_rows(rows, limit))
    }
}

#[async_trait::async_trait]
impl ActivityRetention for PostgresStore {
    async fn delete_expired(
        &self,
        scope: RetentionScope<'_>,
        before: OffsetDateTime,
        max_rows: u32,
    ) -> Result<u64, StoreError> {
        // Row locks only, on rows nobody writes again: inserts of new rows never wait.
        // SKIP LOCKED lets two nodes run the job at once without queueing on each other.
        let mut query = QueryBuilder::<Postgres>::new(
            "DELETE FROM activity_logs WHERE id IN (SELECT id FROM activity_logs WHERE created_at < ",
        );
        query.push_bind(before);
        match scope {
            // activity_logs_team_time
            RetentionScope::Team(team) => {
                query.push(" AND team_id = ").push_bind(team.as_str());
            }
            // activity_logs_time
            RetentionScope::AllExcept(teams) => {
                let teams: Vec<&str> = teams.iter().map(TeamId::as_str).collect();
                query
                    .push(" AND team_id <> ALL(")
                    .push_bind(teams)
                    .push(")");
            }
        }
        query
            .push(" ORDER BY created_at LIMIT ")
            .push_bind(i64::from(max_rows))
            .push(" FOR UPDATE SKIP LOCKED)");
        let done = query.build().execute(&self.pool).await.map_err(convert)?;
        Ok(done.rows_affected())
    }
}

const SELECT_ROWS: &str = "SELECT id, team_id, user_id, action, resource_type, resource_id, \
    metadata::text AS metadata, host(ip_address) AS ip_address, user_agent, created_at \
    FROM activity_logs";

/// Decodes one `activity_logs` row. Other tools write this table too, so a value that
/// breaks the contract (an id that is not a valid team id, say) is reported, naming the
/// row and column, not trusted.
fn decode_row(row: &PgRow) -> Result<ActivityRow, StoreError> {
    let text = |col: &str| -> Result<String, StoreError> { row.try_get(col).map_err(convert) };
    let opt_text =
        |col: &str| -> Result<Option<String>, StoreError> { row.try_get(col).map_err(convert) };

    let id: Uuid = row.try_get("id").map_err(convert)?;
    let bad = |col: &str, e: &dyn std::fmt::Display| {
        StoreError::other(format!("activity_logs row {id}: bad {col}: {e}"))
    };
    let team = TeamId::try_from(text("team_id")?).map_err(|e| bad("team_id", &e))?;
    let user = UserId::try_from(text("user_id")?).map_err(|e| bad("user_id", &e))?;
    let metadata = serde_json::from_str(&text("metadata")?).map_err(|e| bad("metadata", &e))?;
    let created_at: OffsetDateTime = row.try_get("created_at").map_err(convert)?;
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
