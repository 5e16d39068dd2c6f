//! Usage on PostgreSQL: days as `DATE`, batch ids as `UUID`.

use sqlx::Row;
use teamhub_protocol::TeamId;
use time::{Date, OffsetDateTime};
use uuid::Uuid;

use super::{UsageCounts, UsageDay, UsageDelta, UsageStore, count, uncount};
use crate::error::StoreError;
use crate::postgres::{PostgresStore, convert};

#[async_trait::async_trait]
impl UsageStore for PostgresStore {
    async fn add(&self, batch: Uuid, node: &str, rows: &[UsageDelta]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(convert)?;
        // Two nodes retrying one id cannot both pass: the second waits on the first's
        // uncommitted row, then finds the conflict.
        let fresh = sqlx::query(
            "INSERT INTO usage_batches (id, node_id, added_at) VALUES ($1, $2, $3) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(batch)
        .bind(node)
        .bind(crate::now_utc())
        .execute(&mut *tx)
        .await
        .map_err(convert)?
        .rows_affected()
            == 1;
        if !fresh {
            return Ok(());
        }
        // Rows in one order (team, day), so concurrent batches lock them in the same
        // order and cannot deadlock.
        let mut rows: Vec<&UsageDelta> = rows.iter().collect();
        rows.sort_by(|a, b| (a.team.as_str(), a.day).cmp(&(b.team.as_str(), b.day)));
        for row in rows {
            let c = &row.counts;
            sqlx::query(
                "INSERT INTO usage_days \
                     (team_id, day, messages, api_calls, peak_connections, webhook_deliveries) \
                 VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (team_id, day) DO UPDATE SET \
                     messages = usage_days.messages + EXCLUDED.messages, \
                     api_calls = usage_days.api_calls + EXCLUDED.api_calls, \
                     peak_connections = GREATEST(usage_days.peak_connections, EXCLUDED.peak_connections), \
                     webhook_deliveries = usage_days.webhook_deliveries + EXCLUDED.webhook_deliveries",
            )
            .bind(row.team.as_str())
            .bind(row.day)
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
             FROM usage_days WHERE team_id = $1 AND day >= $2 AND day <= $3 ORDER BY day",
        )
        .bind(team.as_str())
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await
        .map_err(convert)?;
        rows.iter()
            .map(|r| {
                let get = |col: &str| r.try_get::<i64, _>(col).map(uncount).map_err(convert);
                Ok(UsageDay {
                    day: r.try_get("day").map_err(convert)?,
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
        let done = sqlx::query("DELETE FROM usage_batches WHERE added_at < $1")
            .bind(before)
            .execute(&self.pool)
            .await
            .map_err(convert)?;
        Ok(done.rows_affected())
    }
}
