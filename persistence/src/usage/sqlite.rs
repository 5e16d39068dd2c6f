//! Usage on SQLite: days as `YYYY-MM-DD` text, batch ids as text.

use sqlx::Row;
use teamhub_protocol::TeamId;
use time::{Date, OffsetDateTime};
use uuid::Uuid;

use super::{UsageCounts, UsageDay, UsageDelta, UsageStore, count, uncount};
use crate::error::StoreError;
use crate::sqlite::{SqliteStore, convert};
use crate::timestamp;

const DAY: &[time::format_description::BorrowedFormatItem<'_>] =
    time::macros::format_description!("[year]-[month]-[day]");

fn day_text(d: Date) -> Result<String, StoreError> {
    d.format(DAY).map_err(|e| StoreError::Rejected(Box::new(e)))
}

#[async_trait::async_trait]
impl UsageStore for SqliteStore {
    async fn add(&self, batch: Uuid, node: &str, rows: &[UsageDelta]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(convert)?;
        // The first statement writes, so the transaction holds the write lock from the
        // start (no read lock to upgrade under a concurrent writer).
        let now =
            timestamp::format(crate::now_utc()).map_err(|e| StoreError::Rejected(Box::new(e)))?;
        let fresh = sqlx::query(
            "INSERT INTO usage_batches (id, node_id, added_at) VALUES (?1, ?2, ?3) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(batch.to_string())
        .bind(node)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(convert)?
        .rows_affected()
            == 1;
        if !fresh {
            return Ok(());
        }
        for row in rows {
            let c = &row.counts;
            sqlx::query(
                "INSERT INTO usage_days \
                     (team_id, day, messages, api_calls, peak_connections, webhook_deliveries) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                 ON CONFLICT (team_id, day) DO UPDATE SET \
                     messages = messages + excluded.messages, \
                     api_calls = api_calls + excluded.api_calls, \
                     peak_connections = max(peak_connections, excluded.peak_connections), \
                     webhook_deliveries = webhook_deliveries + excluded.webhook_deliveries",
            )
            .bind(row.team.as_str())
            .bind(day_text(row.day)?)
            .bind(count(c.messages)?)
            .bind(count(c.api_calls)?)
            .bind(count(c.peak_connections)?)
            .bind(count(c.webhook_deliveries)?)
            .execute(&mut *tx)
            .await
            .map_err(convert)?;
        }
        tx.commit().await.map_err(convert)
    }

    async fn days(&self, team: &TeamId, from: Date, to: Date) -> Result<Vec<UsageDay>, StoreError> {
        let rows = sqlx::query(
            "SELECT day, messages, api_calls, peak_connections, webhook_deliveries \
             FROM usage_days WHERE team_id = ?1 AND day >= ?2 AND day <= ?3 ORDER BY day",
        )
        .bind(team.as_str())
        .bind(day_text(from)?)
        .bind(day_text(to)?)
        .fetch_all(&self.pool)
        .await
        .map_err(convert)?;
        rows.iter()
            .map(|r| {
                let day: String = r.try_get("day").map_err(convert)?;
                let day = Date::parse(&day, DAY)
                    .map_err(|e| StoreError::other(format!("usage_days: bad day {day:?}: {e}")))?;
                let get = |col: &str| r.try_get::<i64, _>(col).map(uncount).map_err(convert);
                Ok(UsageDay {
                    day,
                    counts: UsageCounts {
                        messages: get("messages")?,
                        api_calls: get("api_calls")?,
                        peak_connections: get("peak_connections")?,
                        webhook_deliveries: get("webhook_deliveries")?,
                    },
                })
            })
            .collect()
    }

    async fn prune_batches(&self, before: OffsetDateTime) -> Result<u64, StoreError> {
        let before = timestamp::format(before).map_err(|e| StoreError::Rejected(Box::new(e)))?;
        let done = sqlx::query("DELETE FROM usage_batches WHERE added_at < ?1")
            .bind(before)
            .execute(&self.pool)
            .await
            .map_err(convert)?;
        Ok(done.rows_affected())
    }
}
