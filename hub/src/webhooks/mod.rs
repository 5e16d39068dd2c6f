//! Webhooks (contract section 10): a team's events delivered over HTTP to its backend,
//! signed as the Standard Webhooks specification says.
//!
//! - this module: the operations behind the REST endpoints (create, list, change,
//!   delete, rotate, deliveries, retry), each checked for `admin` in the team;
//! - `sign`: secrets and `webhook-signature`;
//! - `guard`: the SSRF guard (at creation and at every connection);
//! - `dispatch`: the task that claims due deliveries from the outbox and sends them.
//!
//! Where deliveries come from: the activity sink writes them into the outbox in the
//! transaction that writes the activity rows (`teamhub_persistence::webhooks`), so the
//! hot path is untouched (it only hands events to the activity writer, as before) and
//! an event is delivered once per endpoint however often its batch is retried.
//! `team.occupied` / `team.vacated` come from presence (`occupancy`).

pub mod dispatch;
pub mod guard;
pub mod occupancy;
pub mod sign;

use std::time::Duration;

use teamhub_persistence::webhooks::{Delivery, EndpointUpdate, RetryRefused, WebhookEndpoint};
use teamhub_protocol::{Action, ErrorCode, TeamId};

use crate::auth::Identity;
use crate::error::OpError;
use crate::node::Node;

/// How deliveries are made (`--webhook-*` flags).
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    pub timeout: Duration,
    /// Delays between attempts: one attempt, then one per delay.
    pub schedule: Vec<Duration>,
    pub allow_private: bool,
}

/// Metric names.
pub mod metric {
    /// Counter: attempts by `result` (`delivered`, `retry`, `failed`, `gone`).
    pub const DELIVERIES: &str = "teamhub_webhook_deliveries_total";
    /// Histogram: seconds per attempt.
    pub const SECONDS: &str = "teamhub_webhook_delivery_seconds";
    /// Gauge: pending deliveries in the outbox (all nodes).
    pub const QUEUE_DEPTH: &str = "teamhub_webhook_queue_depth";
    /// Gauge: age in seconds of the oldest pending delivery.
    pub const OLDEST_PENDING: &str = "teamhub_webhook_oldest_pending_seconds";
}

pub fn describe_metrics() {
    metrics::describe_counter!(metric::DELIVERIES, "Webhook delivery attempts, by result");
    metrics::describe_histogram!(
        metric::SECONDS,
        metrics::Unit::Seconds,
        "Duration of one webhook delivery attempt"
    );
    metrics::describe_gauge!(metric::QUEUE_DEPTH, "Pending webhook deliveries");
    metrics::describe_gauge!(
        metric::OLDEST_PENDING,
        metrics::Unit::Seconds,
        "Age of the oldest pending webhook delivery"
    );
}

/// Endpoints one team may have.
pub const MAX_ENDPOINTS: usize = 50;
/// Longest URL.
const MAX_URL: usize = 2048;
/// Longest description.
const MAX_DESCRIPTION: usize = 256;
/// Entries of `events`.
const MAX_PREFIXES: usize = 64;
/// Deliveries listed when `limit` is not given, and the most.
pub const DEFAULT_DELIVERIES: usize = 50;
pub const MAX_DELIVERIES: usize = 1000;

/// An endpoint as created: the record, whose `secret` is shown only this once.
#[derive(Debug)]
pub struct Created(pub WebhookEndpoint);

fn not_found(team: &TeamId, id: &str) -> OpError {
    OpError::new(
        ErrorCode::NotFound,
        format!("team {team} has no webhook {id:?}"),
    )
}

fn check_events(events: &[String]) -> Result<(), OpError> {
    if events.is_empty() || events.len() > MAX_PREFIXES {
        return Err(OpError::bad_request(format!(
            "events must hold 1 to {MAX_PREFIXES} type prefixes (\"*\" for every type)"
        )));
    }
    for p in events {
        let ok = p == "*"
            || (p.len() <= 64
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.:-".contains(c)));
        if !ok {
            return Err(OpError::bad_request(format!(
                "event prefix {p:?}: at most 64 characters of A-Z a-z 0-9 _ . : -, or \"*\""
            )));
        }
    }
    Ok(())
}

fn check_description(d: &str) -> Result<String, OpError> {
    let d = d.trim();
    if d.chars().count() > MAX_DESCRIPTION || d.chars().any(char::is_control) {
        return Err(OpError::bad_request(format!(
            "description: at most {MAX_DESCRIPTION} characters without control characters"
        )));
    }
    Ok(d.to_owned())
}

impl Node {
    async fn check_webhook_url(&self, url: &str) -> Result<String, OpError> {
        if url.len() > MAX_URL {
            return Err(OpError::bad_request(format!(
                "url: at most {MAX_URL} characters"
            )));
        }
        guard::check_url(url, self.webhook_config.allow_private)
            .await
            .map(|u| u.to_string())
            .map_err(|e| OpError::bad_request(format!("url refused: {e}")))
    }

    pub async fn create_webhook(
        &self,
        caller: &Identity,
        team: &TeamId,
        url: &str,
        events: Vec<String>,
        description: Option<&str>,
    ) -> Result<Created, OpError> {
        self.authorize(caller, team, Action::ManageWebhooks)?;
        check_events(&events)?;
        let description = check_description(description.unwrap_or(""))?;
        let url = self.check_webhook_url(url).await?;
        if self.webhooks.list(team).await?.len() >= MAX_ENDPOINTS {
            return Err(OpError::bad_request(format!(
                "a team has at most {MAX_ENDPOINTS} webhooks"
            )));
        }
        let now = teamhub_persistence::now_utc();
        let endpoint = WebhookEndpoint {
            id: format!("wh_{}", uuid::Uuid::now_v7().simple()),
            team: team.clone(),
            url,
            events,
            description,
            enabled: true,
            secret: sign::generate_secret(),
            previous_secret: None,
            previous_until: None,
            created_at: now,
            updated_at: now,
        };
        self.webhooks.create(&endpoint).await?;
        Ok(Created(endpoint))
    }

    pub async fn list_webhooks(
        &self,
        caller: &Identity,
        team: &TeamId,
    ) -> Result<Vec<WebhookEndpoint>, OpError> {
        self.authorize(caller, team, Action::ManageWebhooks)?;
        Ok(self.webhooks.list(team).await?)
    }

    pub async fn update_webhook(
        &self,
        caller: &Identity,
        team: &TeamId,
        id: &str,
        mut update: EndpointUpdate,
    ) -> Result<WebhookEndpoint, OpError> {
        self.authorize(caller, team, Action::ManageWebhooks)?;
        if let Some(events) = &update.events {
            check_events(events)?;
        }
        if let Some(d) = &update.description {
            update.description = Some(check_description(d)?);
        }
        if let Some(url) = &update.url {
            update.url = Some(self.check_webhook_url(url).await?);
        }
        let now = teamhub_persistence::now_utc();
        self.webhooks
            .update(team, id, &update, now)
            .await?
            .ok_or_else(|| not_found(team, id))
    }

    pub async fn delete_webhook(
        &self,
        caller: &Identity,
        team: &TeamId,
        id: &str,
    ) -> Result<(), OpError> {
        self.authorize(caller, team, Action::ManageWebhooks)?;
        if self.webhooks.delete(team, id).await? {
            Ok(())
        } else {
            Err(not_found(team, id))
        }
    }

    /// A new secret; the old one keeps signing for 24 h.
    pub async fn rotate_webhook_secret(
        &self,
        caller: &Identity,
        team: &TeamId,
        id: &str,
    ) -> Result<String, OpError> {
        self.authorize(caller, team, Action::ManageWebhooks)?;
        let secret = sign::generate_secret();
        let now = teamhub_persistence::now_utc();
        self.webhooks
            .rotate(team, id, &secret, now)
            .await?
            .ok_or_else(|| not_found(team, id))?;
        Ok(secret)
    }

    pub async fn webhook_deliveries(
        &self,
        caller: &Identity,
        team: &TeamId,
        id: &str,
        limit: usize,
    ) -> Result<Vec<Delivery>, OpError> {
        self.authorize(caller, team, Action::ManageWebhooks)?;
        if self.webhooks.get(team, id).await?.is_none() {
            return Err(not_found(team, id));
        }
        Ok(self.outbox.deliveries(team, id, limit).await?)
    }

    /// Queues a failed delivery again, due now.
    pub async fn retry_webhook_delivery(
        &self,
        caller: &Identity,
        team: &TeamId,
        id: &str,
        delivery: &str,
    ) -> Result<Delivery, OpError> {
        self.authorize(caller, team, Action::ManageWebhooks)?;
        let now = teamhub_persistence::now_utc();
        match self.outbox.retry(team, id, delivery, now).await? {
            Ok(d) => Ok(d),
            Err(RetryRefused::NotFound) => Err(OpError::new(
                ErrorCode::NotFound,
                format!("webhook {id:?} of team {team} has no delivery {delivery:?}"),
            )),
            Err(RetryRefused::NotFailed) => Err(OpError::new(
                ErrorCode::Conflict,
                format!("delivery {delivery:?} has not failed; only a failed delivery is retried"),
            )),
        }
    }
}
