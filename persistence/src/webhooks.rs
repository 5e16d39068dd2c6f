//! Webhooks: a team's endpoints, and the outbox of deliveries to them.
//!
//! Two small traits. [`WebhookStore`] keeps the endpoints (URL, event prefixes,
//! secrets). [`Outbox`] keeps one row per (endpoint, event) to deliver, written by the
//! activity sink in the same transaction as the event's activity row (so an event
//! recorded once is delivered once per endpoint, and a retried batch adds nothing:
//! the pair is unique), or by [`Outbox::enqueue`] for events that are not activity
//! rows (`team.occupied`, `team.vacated`).
//!
//! Claiming. A dispatcher takes due rows with [`Outbox::claim`], which sets a lease
//! (owner and expiry) with a conditional `UPDATE`: a row is claimed only while it is
//! pending, due and not leased, so two nodes sharing the database never hold one row at
//! once (Postgres re-checks the condition on the row it waited for). A node that dies
//! mid-delivery leaves a lease that expires, and the row is due again for any node.
//! [`Outbox::finish`] records an attempt only while the caller still holds the lease.
//! Delivery is therefore at least once: a node that sent and died before recording it
//! sends again after the lease; receivers deduplicate by the delivery id.

use std::collections::HashMap;
use std::time::Duration;

use serde::Serialize;
use teamhub_protocol::TeamId;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::activity::{ActivityEvent, ActivityRow};
use crate::error::StoreError;
use crate::timestamp;

/// How long a secret replaced by a rotation keeps signing deliveries.
pub const ROTATION_OVERLAP: time::Duration = time::Duration::hours(24);

/// One endpoint of a team.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookEndpoint {
    pub id: String,
    pub team: TeamId,
    pub url: String,
    /// Type prefixes; `"*"` or `""` matches every type.
    pub events: Vec<String>,
    pub description: String,
    pub enabled: bool,
    /// `whsec_...`.
    pub secret: String,
    /// The secret before the last rotation, still signing until `previous_until`.
    pub previous_secret: Option<String>,
    pub previous_until: Option<OffsetDateTime>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

impl WebhookEndpoint {
    /// Whether events of type `ty` go to this endpoint.
    pub fn matches(&self, ty: &str) -> bool {
        prefix_match(&self.events, ty)
    }

    /// The secrets a delivery made at `now` is signed with: the current one, and the
    /// previous one while its overlap lasts.
    pub fn signing_secrets(&self, now: OffsetDateTime) -> Vec<&str> {
        let mut secrets = vec![self.secret.as_str()];
        if let (Some(prev), Some(until)) = (&self.previous_secret, self.previous_until)
            && now < until
        {
            secrets.push(prev.as_str());
        }
        secrets
    }
}

/// A change to an endpoint; `None` keeps a field.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointUpdate {
    pub url: Option<String>,
    pub events: Option<Vec<String>>,
    pub description: Option<String>,
    pub enabled: Option<bool>,
}

/// Where webhook endpoints are kept. Implementations must pass
/// [`crate::conformance::webhooks`].
#[async_trait::async_trait]
pub trait WebhookStore: Send + Sync {
    /// Stores a new endpoint; an id already stored is [`StoreError::Rejected`].
    async fn create(&self, endpoint: &WebhookEndpoint) -> Result<(), StoreError>;

    /// The team's endpoints, oldest first.
    async fn list(&self, team: &TeamId) -> Result<Vec<WebhookEndpoint>, StoreError>;

    /// Endpoint `id` of `team`.
    async fn get(&self, team: &TeamId, id: &str) -> Result<Option<WebhookEndpoint>, StoreError>;

    /// Applies `update` (and sets `updated_at` to `now`); `None` when the team has no
    /// such endpoint.
    async fn update(
        &self,
        team: &TeamId,
        id: &str,
        update: &EndpointUpdate,
        now: OffsetDateTime,
    ) -> Result<Option<WebhookEndpoint>, StoreError>;

    /// Replaces the secret; the old one keeps signing until `now + ROTATION_OVERLAP`.
    async fn rotate(
        &self,
        team: &TeamId,
        id: &str,
        secret: &str,
        now: OffsetDateTime,
    ) -> Result<Option<WebhookEndpoint>, StoreError>;

    /// Deletes the endpoint and its deliveries; false when the team has no such one.
    async fn delete(&self, team: &TeamId, id: &str) -> Result<bool, StoreError>;
}

/// Where a delivery is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    Pending,
    Delivered,
    Failed,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(DeliveryStatus::Pending),
            "delivered" => Some(DeliveryStatus::Delivered),
            "failed" => Some(DeliveryStatus::Failed),
            _ => None,
        }
    }
}

/// One event to deliver to one endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// `msg_...`: the `webhook-id` of every attempt.
    pub id: String,
    pub endpoint_id: String,
    pub team: TeamId,
    pub event_id: Uuid,
    pub event_type: String,
    /// The request body, the same bytes on every attempt.
    pub payload: String,
    pub status: DeliveryStatus,
    /// Attempts recorded so far.
    pub attempts: u32,
    pub last_status_code: Option<u16>,
    pub last_error: Option<String>,
    pub next_attempt_at: OffsetDateTime,
    pub created_at: OffsetDateTime,
}

/// A delivery claimed for an attempt, with its endpoint as it is now.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub delivery: Delivery,
    pub endpoint: WebhookEndpoint,
}

/// An event that is not an activity row, for [`Outbox::enqueue`].
#[derive(Debug, Clone)]
pub struct WebhookEvent {
    /// The same id for the same event on every node, so a second enqueue adds nothing.
    pub id: Uuid,
    pub team: TeamId,
    pub ty: String,
    pub at: OffsetDateTime,
    pub data: serde_json::Value,
}

/// What an attempt decided, for [`Outbox::finish`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// `Pending` (retry at `next_attempt_at`), `Delivered` or `Failed`.
    pub status: DeliveryStatus,
    pub status_code: Option<u16>,
    pub error: Option<String>,
    pub next_attempt_at: OffsetDateTime,
    /// Disable the endpoint too (it answered `410 Gone`).
    pub disable_endpoint: bool,
}

/// Why [`Outbox::retry`] did not queue a delivery again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryRefused {
    NotFound,
    NotFailed,
}

/// The outbox's state, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OutboxStats {
    pub pending: u64,
    /// `created_at` of the oldest pending delivery.
    pub oldest_pending: Option<OffsetDateTime>,
}

/// The deliveries. Implementations must pass [`crate::conformance::webhooks`].
#[async_trait::async_trait]
pub trait Outbox: Send + Sync {
    /// Creates a pending delivery of `event` for every enabled endpoint of its team
    /// that matches its type, unless the endpoint already has one for the event's id.
    /// Returns how many were created.
    async fn enqueue(&self, event: &WebhookEvent) -> Result<u64, StoreError>;

    /// Claims up to `limit` due deliveries of enabled endpoints for `owner` until
    /// `now + lease`, oldest due first, at most `room(endpoint)` of each endpoint.
    async fn claim(
        &self,
        owner: &str,
        now: OffsetDateTime,
        lease: Duration,
        limit: usize,
        room: &HashMap<String, usize>,
        default_room: usize,
    ) -> Result<Vec<Claimed>, StoreError>;

    /// Records an attempt of a delivery `owner` holds and releases the lease; false
    /// when the lease is no longer `owner`'s (it expired and another node took it).
    async fn finish(&self, id: &str, owner: &str, attempt: &Attempt) -> Result<bool, StoreError>;

    /// The endpoint's deliveries, newest first, at most `limit`.
    async fn deliveries(
        &self,
        team: &TeamId,
        endpoint: &str,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError>;

    /// Makes a failed delivery pending again, due at `now`.
    async fn retry(
        &self,
        team: &TeamId,
        endpoint: &str,
        id: &str,
        now: OffsetDateTime,
    ) -> Result<Result<Delivery, RetryRefused>, StoreError>;

    /// Pending deliveries and the oldest one's age.
    async fn stats(&self) -> Result<OutboxStats, StoreError>;
}

/// A new delivery id: `msg_` and a time-ordered UUID in hex.
pub fn new_delivery_id() -> String {
    format!("msg_{}", Uuid::now_v7().simple())
}

/// The body of a delivery: `{"type","timestamp","data"}`.
pub fn payload(ty: &str, at: OffsetDateTime, data: &impl Serialize) -> String {
    #[derive(Serialize)]
    struct Body<'a, D: Serialize> {
        #[serde(rename = "type")]
        ty: &'a str,
        timestamp: String,
        data: &'a D,
    }
    let timestamp = timestamp::format(at).unwrap_or_else(|_| at.to_string());
    serde_json::to_string(&Body {
        ty,
        timestamp,
        data,
    })
    .unwrap_or_else(|_| "{}".to_owned())
}

/// The body of the delivery of an activity event: `data` is its activity row.
pub fn activity_payload(event: &ActivityEvent) -> String {
    payload(
        &event.action,
        event.created_at,
        &ActivityRow::from_event(event),
    )
}

/// The deliveries an activity batch creates: for every event, one per matching
/// endpoint (`endpoints` are the enabled endpoints of the batch's teams). Used by the
/// sinks inside the batch's transaction.
pub(crate) fn deliveries_for(
    events: &[ActivityEvent],
    endpoints: &[(String, TeamId, Vec<String>)],
    now: OffsetDateTime,
) -> Vec<Delivery> {
    let mut out = Vec::new();
    if endpoints.is_empty() {
        return out;
    }
    for event in events {
        let mut body: Option<String> = None;
        for (id, team, prefixes) in endpoints {
            if *team != event.team || !prefix_match(prefixes, &event.action) {
                continue;
            }
            let payload = body.get_or_insert_with(|| activity_payload(event)).clone();
            out.push(Delivery {
                id: new_delivery_id(),
                endpoint_id: id.clone(),
                team: event.team.clone(),
                event_id: event.id,
                event_type: event.action.clone(),
                payload,
                status: DeliveryStatus::Pending,
                attempts: 0,
                last_status_code: None,
                last_error: None,
                next_attempt_at: now,
                created_at: now,
            });
        }
    }
    out
}

/// The delivery of a [`WebhookEvent`] to one endpoint.
pub(crate) fn delivery_of(event: &WebhookEvent, endpoint: &str, now: OffsetDateTime) -> Delivery {
    Delivery {
        id: new_delivery_id(),
        endpoint_id: endpoint.to_owned(),
        team: event.team.clone(),
        event_id: event.id,
        event_type: event.ty.clone(),
        payload: payload(&event.ty, event.at, &event.data),
        status: DeliveryStatus::Pending,
        attempts: 0,
        last_status_code: None,
        last_error: None,
        next_attempt_at: now,
        created_at: now,
    }
}

pub(crate) fn prefix_match(prefixes: &[String], ty: &str) -> bool {
    prefixes
        .iter()
        .any(|p| p.is_empty() || p == "*" || ty.starts_with(p.as_str()))
}

/// Picks, from candidates `(delivery id, endpoint id)` in due order, at most `limit`
/// ids and at most the room of each endpoint.
pub(crate) fn within_room(
    candidates: Vec<(String, String)>,
    limit: usize,
    room: &HashMap<String, usize>,
    default_room: usize,
) -> Vec<String> {
    let mut taken: HashMap<String, usize> = HashMap::new();
    let mut out = Vec::new();
    for (id, endpoint) in candidates {
        if out.len() >= limit {
            break;
        }
        let cap = room.get(&endpoint).copied().unwrap_or(default_room);
        let n = taken.entry(endpoint).or_default();
        if *n < cap {
            *n += 1;
            out.push(id);
        }
    }
    out
}

pub(crate) fn lease_until(now: OffsetDateTime, lease: Duration) -> OffsetDateTime {
    now + time::Duration::try_from(lease).unwrap_or(time::Duration::hours(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_bounds_each_endpoint_and_the_total() {
        let c = |d: &str, e: &str| (d.to_owned(), e.to_owned());
        let candidates = vec![
            c("1", "a"),
            c("2", "a"),
            c("3", "b"),
            c("4", "a"),
            c("5", "c"),
        ];
        let room = HashMap::from([("c".to_owned(), 0)]);
        assert_eq!(
            within_room(candidates.clone(), 10, &room, 2),
            ["1", "2", "3"]
        );
        assert_eq!(within_room(candidates, 2, &HashMap::new(), 1), ["1", "3"]);
    }

    #[test]
    fn prefixes() {
        let p = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert!(prefix_match(&p(&["*"]), "x"));
        assert!(prefix_match(&p(&[""]), "x"));
        assert!(prefix_match(&p(&["doc."]), "doc.edit"));
        assert!(!prefix_match(&p(&["doc."]), "presence.joined"));
        assert!(!prefix_match(&p(&[]), "x"));
    }
}
