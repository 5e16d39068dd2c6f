//! Patterns, API keys and revocations on SQLite (`migrations/sqlite/0003_*`).
//!
//! A pattern write is one transaction whose FIRST statement writes (it creates the
//! team's counter row if missing), so it takes SQLite's write lock before it reads
//! anything: concurrent writers queue on the busy timeout instead of failing to upgrade
//! a read lock, and each sees the state the previous one committed.

use serde_json::value::RawValue;
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqliteConnection};
use teamhub_protocol::{PatternName, Role, TeamId, UserId};
use time::OffsetDateTime;

use crate::error::StoreError;
use crate::keys::{ApiKeyRecord, KeyStore};
use crate::patterns::{self, Changes, Expect, Pattern, PatternError, PatternStore};
use crate::revocations::{API_KEY_USER_PREFIX, Revocation, RevocationStore};
use crate::sqlite::{SqliteStore, convert};
use crate::timestamp;

fn ts(t: OffsetDateTime) -> Result<String, StoreError> {
    timestamp::format(t).map_err(|e| StoreError::Rejected(Box::new(e)))
}

fn bad(table: &str, col: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::other(format!("{table}: bad {col}: {e}"))
}

fn get_text(row: &SqliteRow, col: &str) -> Result<String, StoreError> {
    row.try_get(col).map_err(convert)
}

fn get_time(row: &SqliteRow, table: &str, col: &str) -> Result<OffsetDateTime, StoreError> {
    timestamp::parse(&get_text(row, col)?).map_err(|e| bad(table, col, e))
}

fn decode_key(row: &SqliteRow) -> Result<ApiKeyRecord, StoreError> {
    let t = "api_keys";
    let role = get_text(row, "role")?;
    Ok(ApiKeyRecord {
        id: get_text(row, "id")?,
        team: TeamId::try_from(get_text(row, "team_id")?).map_err(|e| bad(t, "team_id", e))?,
        name: get_text(row, "name")?,
        role: Role::parse(&role).ok_or_else(|| bad(t, "role", role))?,
        prefix: get_text(row, "prefix")?,
        created_by: UserId::try_from(get_text(row, "created_by")?)
            .map_err(|e| bad(t, "created_by", e))?,
        created_at: get_time(row, t, "created_at")?,
    })
}

const KEY_COLUMNS: &str = "id, team_id, name, role, prefix, created_by, created_at";

#[async_trait::async_trait]
impl KeyStore for SqliteStore {
    async fn create(&self, key: &ApiKeyRecord, hash: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO api_keys (id, team_id, name, role, prefix, key_hash, created_by, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )
        .bind(&key.id)
        .bind(key.team.as_str())
        .bind(&key.name)
        .bind(key.role.as_str())
        .bind(&key.prefix)
        .bind(hash)
        .bind(key.created_by.as_str())
        .bind(ts(key.created_at)?)
        .execute(&self.pool)
        .await
        .map(drop)
        .map_err(convert)
    }

    async fn list(&self, team: &TeamId) -> Result<Vec<ApiKeyRecord>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE team_id = ?1 ORDER BY created_at, id"
        )))
        .bind(team.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(convert)?;
        rows.iter().map(decode_key).collect()
    }

    async fn find_by_hash(&self, hash: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE key_hash = ?1"
        )))
        .bind(hash)
        .fetch_optional(&self.pool)
        .await
        .map_err(convert)?;
        row.as_ref().map(decode_key).transpose()
    }

    async fn delete(&self, team: &TeamId, id: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM api_keys WHERE team_id = ?1 AND id = ?2 RETURNING {KEY_COLUMNS}"
        )))
        .bind(team.as_str())
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(convert)?;
        row.as_ref().map(decode_key).transpose()
    }
}

fn decode_revocation(row: &SqliteRow) -> Result<Revocation, StoreError> {
    let t = "member_revocations";
    Ok(Revocation {
        team: TeamId::try_from(get_text(row, "team_id")?).map_err(|e| bad(t, "team_id", e))?,
        user: UserId::try_from(get_text(row, "user_id")?).map_err(|e| bad(t, "user_id", e))?,
        revoked_at: get_time(row, t, "revoked_at")?,
        revoked_by: UserId::try_from(get_text(row, "revoked_by")?)
            .map_err(|e| bad(t, "revoked_by", e))?,
    })
}

#[async_trait::async_trait]
impl RevocationStore for SqliteStore {
    async fn revoke(&self, r: &Revocation) -> Result<Revocation, StoreError> {
        // Fixed-width text times compare in time order, so max() is the later one.
        let row = sqlx::query(
            "INSERT INTO member_revocations (team_id, user_id, revoked_at, revoked_by) \
             VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (team_id, user_id) DO UPDATE SET \
                 revoked_by = CASE WHEN excluded.revoked_at > revoked_at \
                                   THEN excluded.revoked_by ELSE revoked_by END, \
                 revoked_at = max(revoked_at, excluded.revoked_at) \
             RETURNING team_id, user_id, revoked_at, revoked_by",
        )
        .bind(r.team.as_str())
        .bind(r.user.as_str())
        .bind(ts(r.revoked_at)?)
        .bind(r.revoked_by.as_str())
        .fetch_one(&self.pool)
        .await
        .map_err(convert)?;
        decode_revocation(&row)
    }

    async fn all(&self) -> Result<Vec<Revocation>, StoreError> {
        let rows =
            sqlx::query("SELECT team_id, user_id, revoked_at, revoked_by FROM member_revocations")
                .fetch_all(&self.pool)
                .await
                .map_err(convert)?;
        rows.iter().map(decode_revocation).collect()
    }

    async fn prune(&self, before: OffsetDateTime) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "DELETE FROM member_revocations WHERE revoked_at < ?1 AND substr(user_id, 1, ?2) <> ?3",
        )
        .bind(ts(before)?)
        .bind(API_KEY_USER_PREFIX.len() as i64)
        .bind(API_KEY_USER_PREFIX)
        .execute(&self.pool)
        .await
        .map_err(convert)?;
        Ok(done.rows_affected())
    }
}

const PATTERN_COLUMNS: &str = "name, version, content, updated_by, updated_at, deleted";

fn decode_pattern(row: &SqliteRow) -> Result<Pattern, StoreError> {
    let t = "patterns";
    let version: i64 = row.try_get("version").map_err(convert)?;
    let deleted: i64 = row.try_get("deleted").map_err(convert)?;
    Ok(Pattern {
        name: PatternName::try_from(get_text(row, "name")?).map_err(|e| bad(t, "name", e))?,
        version: u64::try_from(version).map_err(|e| bad(t, "version", e))?,
        content: RawValue::from_string(get_text(row, "content")?)
            .map_err(|e| bad(t, "content", e))?,
        updated_by: UserId::try_from(get_text(row, "updated_by")?)
            .map_err(|e| bad(t, "updated_by", e))?,
        updated_at: get_time(row, t, "updated_at")?,
        deleted: deleted != 0,
    })
}

async fn current(
    conn: &mut SqliteConnection,
    team: &TeamId,
    name: &PatternName,
) -> Result<Option<Pattern>, StoreError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {PATTERN_COLUMNS} FROM patterns WHERE team_id = ?1 AND name = ?2"
    )))
    .bind(team.as_str())
    .bind(name.as_str())
    .fetch_optional(conn)
    .await
    .map_err(convert)?;
    row.as_ref().map(decode_pattern).transpose()
}

impl SqliteStore {
    /// Runs one pattern write: lock the team's counter, check, bump, upsert.
    async fn write_pattern(
        &self,
        team: &TeamId,
        name: &PatternName,
        content: &RawValue,
        deleted: bool,
        by: &UserId,
        decide: impl FnOnce(Option<Pattern>) -> Result<(), PatternError> + Send,
    ) -> Result<Pattern, PatternError> {
        let now = timestamp::normalize(OffsetDateTime::now_utc());
        let at = ts(now)?;
        let mut tx = self.pool.begin().await.map_err(convert)?;
        // The first statement writes: it takes the database's write lock (see above).
        sqlx::query(
            "INSERT INTO pattern_versions (team_id, version) VALUES (?1, 0) \
             ON CONFLICT (team_id) DO UPDATE SET version = version",
        )
        .bind(team.as_str())
        .execute(&mut *tx)
        .await
        .map_err(convert)?;
        decide(current(&mut tx, team, name).await?)?;
        let version: i64 = sqlx::query_scalar(
            "UPDATE pattern_versions SET version = version + 1 WHERE team_id = ?1 RETURNING version",
        )
        .bind(team.as_str())
        .fetch_one(&mut *tx)
        .await
        .map_err(convert)?;
        sqlx::query(
            "INSERT INTO patterns (team_id, name, version, content, updated_by, updated_at, deleted) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
             ON CONFLICT (team_id, name) DO UPDATE SET version = excluded.version, \
                 content = excluded.content, updated_by = excluded.updated_by, \
                 updated_at = excluded.updated_at, deleted = excluded.deleted",
        )
        .bind(team.as_str())
        .bind(name.as_str())
        .bind(version)
        .bind(content.get())
        .bind(by.as_str())
        .bind(&at)
        .bind(i64::from(deleted))
        .execute(&mut *tx)
        .await
        .map_err(convert)?;
        tx.commit().await.map_err(convert)?;
        Ok(Pattern {
            name: name.clone(),
            version: version as u64,
            content: content.to_owned(),
            updated_by: by.clone(),
            updated_at: now,
            deleted,
        })
    }
}

#[async_trait::async_trait]
impl PatternStore for SqliteStore {
    async fn get(&self, team: &TeamId, name: &PatternName) -> Result<Option<Pattern>, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(convert)?;
        current(&mut conn, team, name).await
    }

    async fn changes(&self, team: &TeamId, since: u64) -> Result<Changes, StoreError> {
        let since = i64::try_from(since).unwrap_or(i64::MAX);
        // One read transaction: a consistent snapshot of counter and rows.
        let mut tx = self.pool.begin().await.map_err(convert)?;
        let version: Option<i64> =
            sqlx::query_scalar("SELECT version FROM pattern_versions WHERE team_id = ?1")
                .bind(team.as_str())
                .fetch_optional(&mut *tx)
                .await
                .map_err(convert)?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {PATTERN_COLUMNS} FROM patterns WHERE team_id = ?1 AND version > ?2 \
             ORDER BY version"
        )))
        .bind(team.as_str())
        .bind(since)
        .fetch_all(&mut *tx)
        .await
        .map_err(convert)?;
        tx.commit().await.map_err(convert)?;
        let patterns = rows
            .iter()
            .map(decode_pattern)
            .collect::<Result<Vec<_>, _>>()?;
        let version = version.unwrap_or(0) as u64;
        let version = patterns.iter().map(|p| p.version).fold(version, u64::max);
        Ok(Changes { version, patterns })
    }

    async fn put(
        &self,
        team: &TeamId,
        name: &PatternName,
        content: &RawValue,
        expect: Expect,
        by: &UserId,
    ) -> Result<Pattern, PatternError> {
        self.write_pattern(team, name, content, false, by, |cur| {
            patterns::check(cur, expect)
        })
        .await
    }

    async fn delete(
        &self,
        team: &TeamId,
        name: &PatternName,
        version: u64,
        by: &UserId,
    ) -> Result<Pattern, PatternError> {
        let null = patterns::null();
        self.write_pattern(team, name, &null, true, by, |cur| {
            patterns::check_delete(cur, version)
        })
        .await
    }
}

#[async_trait::async_trait]
impl crate::control_log::ControlLog for SqliteStore {
    async fn append(&self, command: &str) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "INSERT INTO control_log (command, created_at) VALUES (?1, ?2) RETURNING seq",
        )
        .bind(command)
        .bind(ts(crate::now_utc())?)
        .fetch_one(&self.pool)
        .await
        .map_err(convert)?;
        row.try_get("seq").map_err(convert)
    }

    async fn since(
        &self,
        since: OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<crate::control_log::LoggedCommand>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, command, created_at FROM control_log WHERE created_at >= ?1 \
             ORDER BY seq LIMIT ?2",
        )
        .bind(ts(since)?)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(convert)?;
        rows.iter()
            .map(|row| {
                Ok(crate::control_log::LoggedCommand {
                    seq: row.try_get("seq").map_err(convert)?,
                    command: get_text(row, "command")?,
                    created_at: get_time(row, "control_log", "created_at")?,
                })
            })
            .collect()
    }

    async fn prune(&self, before: OffsetDateTime) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM control_log WHERE created_at < ?1")
            .bind(ts(before)?)
            .execute(&self.pool)
            .await
            .map_err(convert)?;
        Ok(done.rows_affected())
    }
}
