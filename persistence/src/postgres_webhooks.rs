//! Webhook endpoints and the outbox on Postgres (`migrations/postgres/0006_webhooks.sql`).
//!
//! Several nodes share the database. A claim is one conditional `UPDATE ... RETURNING`
//! over the candidate rows: a row another node is updating at the same moment is
//! waited for and re-checked (READ COMMITTED re-evaluates the `WHERE` on the committed
//! row), so a row whose lease was just taken is skipped, never claimed twice.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use sqlx::postgres::PgRow;
use sqlx::{Postgres, Row, Transaction};
use teamhub_protocol::TeamId;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::activity::ActivityEvent;
use crate::error::StoreError;
use crate::postgres::{PostgresStore, convert};
use crate::timestamp;
use crate::webhooks::{
    Attempt, Claimed, Delivery, DeliveryStatus, EndpointUpdate, Outbox, OutboxStats,
    ROTATION_OVERLAP, RetryRefused, WebhookEndpoint, WebhookEvent, WebhookStore, deliveries_for,
    delivery_of, lease_until, within_room,
};

fn ts(t: OffsetDateTime) -> Result<OffsetDateTime, StoreError> {
    Ok(timestamp::normalize(t))
}

fn bad(table: &str, col: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::other(format!("{table}: bad {col}: {e}"))
}

fn text(row: &PgRow, col: &str) -> Result<String, StoreError> {
    row.try_get(col).map_err(convert)
}

fn time_of(row: &PgRow, _table: &str, col: &str) -> Result<OffsetDateTime, StoreError> {
    row.try_get(col).map_err(convert)
}

const ENDPOINT_COLUMNS: &str = "id, team_id, url, events, description, enabled, secret, \
     previous_secret, previous_until, created_at, updated_at";

fn decode_endpoint(row: &PgRow) -> Result<WebhookEndpoint, StoreError> {
    let t = "webhook_endpoints";
    let events: Vec<String> =
        serde_json::from_str(&text(row, "events")?).map_err(|e| bad(t, "events", e))?;
    let previous_until: Option<OffsetDateTime> = row.try_get("previous_until").map_err(convert)?;
    let enabled: bool = row.try_get("enabled").map_err(convert)?;
    Ok(WebhookEndpoint {
        id: text(row, "id")?,
        team: TeamId::try_from(text(row, "team_id")?).map_err(|e| bad(t, "team_id", e))?,
        url: text(row, "url")?,
        events,
        description: text(row, "description")?,
        enabled,
        secret: text(row, "secret")?,
        previous_secret: row.try_get("previous_secret").map_err(convert)?,
        previous_until,
        created_at: time_of(row, t, "created_at")?,
        updated_at: time_of(row, t, "updated_at")?,
    })
}

const DELIVERY_COLUMNS: &str = "id, endpoint_id, team_id, event_id, event_type, payload, \
     status, attempts, last_status_code, last_error, next_attempt_at, created_at";

fn decode_delivery(row: &PgRow) -> Result<Delivery, StoreError> {
    let t = "webhook_deliveries";
    let status = text(row, "status")?;
    let attempts: i32 = row.try_get("attempts").map_err(convert)?;
    let code: Option<i32> = row.try_get("last_status_code").map_err(convert)?;
    Ok(Delivery {
        id: text(row, "id")?,
        endpoint_id: text(row, "endpoint_id")?,
        team: TeamId::try_from(text(row, "team_id")?).map_err(|e| bad(t, "team_id", e))?,
        event_id: row.try_get::<Uuid, _>("event_id").map_err(convert)?,
        event_type: text(row, "event_type")?,
        payload: text(row, "payload")?,
        status: DeliveryStatus::parse(&status).ok_or_else(|| bad(t, "status", status))?,
        attempts: u32::try_from(attempts).map_err(|e| bad(t, "attempts", e))?,
        last_status_code: code.and_then(|c| u16::try_from(c).ok()),
        last_error: row.try_get("last_error").map_err(convert)?,
        next_attempt_at: time_of(row, t, "next_attempt_at")?,
        created_at: time_of(row, t, "created_at")?,
    })
}

async fn insert_delivery(
    tx: &mut Transaction<'_, Postgres>,
    d: &Delivery,
) -> Result<u64, StoreError> {
    sqlx::query(
        "INSERT INTO webhook_deliveries (id, endpoint_id, team_id, event_id, event_type, \
         payload, status, attempts, next_attempt_at, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, 'pending', 0, $7, $8) \
         ON CONFLICT (endpoint_id, event_id) DO NOTHING",
    )
    .bind(&d.id)
    .bind(&d.endpoint_id)
    .bind(d.team.as_str())
    .bind(d.event_id)
    .bind(&d.event_type)
    .bind(&d.payload)
    .bind(ts(d.next_attempt_at)?)
    .bind(ts(d.created_at)?)
    .execute(&mut **tx)
    .await
    .map(|r| r.rows_affected())
    .map_err(convert)
}

/// Enabled endpoints of `teams`: (id, team, prefixes).
async fn enabled_endpoints(
    tx: &mut Transaction<'_, Postgres>,
    teams: &[&str],
) -> Result<Vec<(String, TeamId, Vec<String>)>, StoreError> {
    let rows = sqlx::query(
        "SELECT id, team_id, events FROM webhook_endpoints \
         WHERE enabled AND team_id = ANY($1)",
    )
    .bind(teams)
    .fetch_all(&mut **tx)
    .await
    .map_err(convert)?;
    rows.iter()
        .map(|row| {
            let t = "webhook_endpoints";
            Ok((
                text(row, "id")?,
                TeamId::try_from(text(row, "team_id")?).map_err(|e| bad(t, "team_id", e))?,
                serde_json::from_str(&text(row, "events")?).map_err(|e| bad(t, "events", e))?,
            ))
        })
        .collect()
}

/// The outbox rows of an activity batch, inside the batch's transaction.
pub(crate) async fn enqueue_batch(
    tx: &mut Transaction<'_, Postgres>,
    events: &[ActivityEvent],
) -> Result<(), StoreError> {
    let teams: HashSet<&str> = events.iter().map(|e| e.team.as_str()).collect();
    let teams: Vec<&str> = teams.into_iter().collect();
    let endpoints = enabled_endpoints(tx, &teams).await?;
    for d in deliveries_for(events, &endpoints, crate::now_utc()) {
        insert_delivery(tx, &d).await?;
    }
    Ok(())
}

impl PostgresStore {
    async fn endpoint_by_id(&self, id: &str) -> Result<Option<WebhookEndpoint>, StoreError> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(convert)?
        .map(|r| decode_endpoint(&r))
        .transpose()
    }

    async fn delivery_by_id(&self, id: &str) -> Result<Option<Delivery>, StoreError> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(convert)?
        .map(|r| decode_delivery(&r))
        .transpose()
    }
}

#[async_trait::async_trait]
impl WebhookStore for PostgresStore {
    async fn create(&self, e: &WebhookEndpoint) -> Result<(), StoreError> {
        let events =
            serde_json::to_string(&e.events).map_err(|e| StoreError::other(e.to_string()))?;
        sqlx::query(
            "INSERT INTO webhook_endpoints (id, team_id, url, events, description, enabled, \
             secret, previous_secret, previous_until, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(&e.id)
        .bind(e.team.as_str())
        .bind(&e.url)
        .bind(events)
        .bind(&e.description)
        .bind(e.enabled)
        .bind(&e.secret)
        .bind(e.previous_secret.as_deref())
        .bind(e.previous_until.map(ts).transpose()?)
        .bind(ts(e.created_at)?)
        .bind(ts(e.updated_at)?)
        .execute(&self.pool)
        .await
        .map(drop)
        .map_err(convert)
    }

    async fn list(&self, team: &TeamId) -> Result<Vec<WebhookEndpoint>, StoreError> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE team_id = $1 \
             ORDER BY created_at, id"
        )))
        .bind(team.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(convert)?
        .iter()
        .map(decode_endpoint)
        .collect()
    }

    async fn get(&self, team: &TeamId, id: &str) -> Result<Option<WebhookEndpoint>, StoreError> {
        Ok(self.endpoint_by_id(id).await?.filter(|e| e.team == *team))
    }

    async fn update(
        &self,
        team: &TeamId,
        id: &str,
        u: &EndpointUpdate,
        now: OffsetDateTime,
    ) -> Result<Option<WebhookEndpoint>, StoreError> {
        let events = u
            .events
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| StoreError::other(e.to_string()))?;
        let done = sqlx::query(
            "UPDATE webhook_endpoints SET url = COALESCE($3, url), \
             events = COALESCE($4, events), description = COALESCE($5, description), \
             enabled = COALESCE($6, enabled), updated_at = $7 \
             WHERE team_id = $1 AND id = $2",
        )
        .bind(team.as_str())
        .bind(id)
        .bind(u.url.as_deref())
        .bind(events)
        .bind(u.description.as_deref())
        .bind(u.enabled)
        .bind(ts(now)?)
        .execute(&self.pool)
        .await
        .map_err(convert)?;
        if done.rows_affected() == 0 {
            return Ok(None);
        }
        self.get(team, id).await
    }

    async fn rotate(
        &self,
        team: &TeamId,
        id: &str,
        secret: &str,
        now: OffsetDateTime,
    ) -> Result<Option<WebhookEndpoint>, StoreError> {
        let done = sqlx::query(
            "UPDATE webhook_endpoints SET previous_secret = secret, previous_until = $4, \
             secret = $3, updated_at = $5 WHERE team_id = $1 AND id = $2",
        )
        .bind(team.as_str())
        .bind(id)
        .bind(secret)
        .bind(ts(now + ROTATION_OVERLAP)?)
        .bind(ts(now)?)
        .execute(&self.pool)
        .await
        .map_err(convert)?;
        if done.rows_affected() == 0 {
            return Ok(None);
        }
        self.get(team, id).await
    }

    async fn delete(&self, team: &TeamId, id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM webhook_endpoints WHERE team_id = $1 AND id = $2")
            .bind(team.as_str())
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(convert)?;
        Ok(done.rows_affected() > 0)
    }
}

#[async_trait::async_trait]
impl Outbox for PostgresStore {
    async fn enqueue(&self, event: &WebhookEvent) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await.map_err(convert)?;
        let endpoints = enabled_endpoints(&mut tx, &[event.team.as_str()]).await?;
        let now = crate::now_utc();
        let mut created = 0;
        for (id, _, prefixes) in &endpoints {
            if crate::webhooks::prefix_match(prefixes, &event.ty) {
                created += insert_delivery(&mut tx, &delivery_of(event, id, now)).await?;
            }
        }
        tx.commit().await.map_err(convert)?;
        Ok(created)
    }

    async fn claim(
        &self,
        owner: &str,
        now: OffsetDateTime,
        lease: Duration,
        limit: usize,
        room: &HashMap<String, usize>,
        default_room: usize,
    ) -> Result<Vec<Claimed>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let candidates = sqlx::query(
            "SELECT d.id, d.endpoint_id FROM webhook_deliveries d \
             JOIN webhook_endpoints e ON e.id = d.endpoint_id \
             WHERE d.status = 'pending' AND e.enabled AND d.next_attempt_at <= $1 \
               AND (d.lease_until IS NULL OR d.lease_until <= $1) \
             ORDER BY d.next_attempt_at, d.id LIMIT $2",
        )
        .bind(now)
        .bind(i64::try_from(limit.saturating_mul(4)).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(convert)?
        .iter()
        .map(|r| Ok((text(r, "id")?, text(r, "endpoint_id")?)))
        .collect::<Result<Vec<_>, StoreError>>()?;
        let ids = within_room(candidates, limit, room, default_room);
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE webhook_deliveries SET lease_owner = $2, lease_until = $3 \
             WHERE id = ANY($1) AND status = 'pending' \
               AND (lease_until IS NULL OR lease_until <= $4) \
             RETURNING {DELIVERY_COLUMNS}"
        )))
        .bind(&ids)
        .bind(owner)
        .bind(lease_until(now, lease))
        .bind(now)
        .fetch_all(&self.pool)
        .await
        .map_err(convert)?;
        let mut claimed = Vec::new();
        let mut endpoints: HashMap<String, Option<WebhookEndpoint>> = HashMap::new();
        for row in &rows {
            let delivery = decode_delivery(row)?;
            let endpoint = match endpoints.get(&delivery.endpoint_id) {
                Some(e) => e.clone(),
                None => {
                    let e = self.endpoint_by_id(&delivery.endpoint_id).await?;
                    endpoints.insert(delivery.endpoint_id.clone(), e.clone());
                    e
                }
            };
            if let Some(endpoint) = endpoint {
                claimed.push(Claimed { delivery, endpoint });
            }
        }
        // Due order, as the candidates were chosen.
        claimed.sort_by(|a, b| {
            (a.delivery.next_attempt_at, &a.delivery.id)
                .cmp(&(b.delivery.next_attempt_at, &b.delivery.id))
        });
        Ok(claimed)
    }

    async fn finish(&self, id: &str, owner: &str, a: &Attempt) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await.map_err(convert)?;
        let done = sqlx::query(
            "UPDATE webhook_deliveries SET status = $3, attempts = attempts + 1, \
             last_status_code = $4, last_error = $5, next_attempt_at = $6, \
             lease_owner = NULL, lease_until = NULL \
             WHERE id = $1 AND lease_owner = $2",
        )
        .bind(id)
        .bind(owner)
        .bind(a.status.as_str())
        .bind(a.status_code.map(i32::from))
        .bind(a.error.as_deref())
        .bind(ts(a.next_attempt_at)?)
        .execute(&mut *tx)
        .await
        .map_err(convert)?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        if a.disable_endpoint {
            sqlx::query(
                "UPDATE webhook_endpoints SET enabled = FALSE \
                 WHERE id = (SELECT endpoint_id FROM webhook_deliveries WHERE id = $1)",
            )
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(convert)?;
        }
        tx.commit().await.map_err(convert)?;
        Ok(true)
    }

    async fn deliveries(
        &self,
        team: &TeamId,
        endpoint: &str,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries \
             WHERE team_id = $1 AND endpoint_id = $2 \
             ORDER BY created_at DESC, id DESC LIMIT $3"
        )))
        .bind(team.as_str())
        .bind(endpoint)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(convert)?
        .iter()
        .map(decode_delivery)
        .collect()
    }

    async fn retry(
        &self,
        team: &TeamId,
        endpoint: &str,
        id: &str,
        now: OffsetDateTime,
    ) -> Result<Result<Delivery, RetryRefused>, StoreError> {
        let Some(d) = self
            .delivery_by_id(id)
            .await?
            .filter(|d| d.team == *team && d.endpoint_id == endpoint)
        else {
            return Ok(Err(RetryRefused::NotFound));
        };
        let done = sqlx::query(
            "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = $2 \
             WHERE id = $1 AND status = 'failed'",
        )
        .bind(id)
        .bind(ts(now)?)
        .execute(&self.pool)
        .await
        .map_err(convert)?;
        if done.rows_affected() == 0 {
            return Ok(Err(RetryRefused::NotFailed));
        }
        Ok(Ok(Delivery {
            status: DeliveryStatus::Pending,
            next_attempt_at: now,
            ..d
        }))
    }

    async fn stats(&self) -> Result<OutboxStats, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n, MIN(created_at) AS oldest FROM webhook_deliveries \
             WHERE status = 'pending'",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(convert)?;
        let n: i64 = row.try_get("n").map_err(convert)?;
        let oldest: Option<OffsetDateTime> = row.try_get("oldest").map_err(convert)?;
        Ok(OutboxStats {
            pending: u64::try_from(n).unwrap_or(0),
            oldest_pending: oldest,
        })
    }
}
