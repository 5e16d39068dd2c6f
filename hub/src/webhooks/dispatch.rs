//! The dispatcher: one task per node that claims due deliveries from the outbox and
//! sends them.
//!
//! Every poll (or sooner, when an attempt finishes) it claims what the node has room
//! for: at most [`MAX_IN_FLIGHT`] attempts at once, at most [`PER_ENDPOINT`] per
//! endpoint, so one slow receiver cannot hold up the others. Each claim is a lease of
//! the timeout plus [`LEASE_MARGIN`]; an attempt is recorded with
//! [`Outbox::finish`], which also releases it. Outcomes:
//! - a 2xx within `--webhook-timeout`: delivered;
//! - `410 Gone`: the delivery fails and the endpoint is disabled;
//! - anything else (other statuses, timeouts, refused connections, refused addresses,
//!   redirects): the next attempt after the schedule's next delay, with up to 10%
//!   added at random so a receiver that comes back is not hit by every retry at once;
//!   a `Retry-After` (seconds) on a 429 or 503 pushes it later when it asks for more;
//!   after the last delay the delivery fails.
//!
//! A database that cannot be reached stops claims (retried every poll) and the
//! recording of attempts (retried while the lease lasts). An attempt whose record is
//! lost is sent again once its lease expires: delivery is at least once, and
//! receivers deduplicate by `webhook-id`. A drain aborts attempts in flight; their
//! leases expire and they are sent again, by this node after a restart or by another.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use teamhub_persistence::webhooks::{Attempt, Claimed, DeliveryStatus, Outbox};
use time::OffsetDateTime;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{WebhookConfig, guard, metric, sign};

/// Attempts one node makes at once.
pub const MAX_IN_FLIGHT: usize = 64;
/// Attempts to one endpoint at once, per node.
pub const PER_ENDPOINT: usize = 4;
/// How long a claim outlives the timeout: the time to record the attempt.
pub const LEASE_MARGIN: Duration = Duration::from_secs(5);
/// Longest wait between two claims.
const POLL: Duration = Duration::from_millis(250);
/// Longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// Attempts in flight per endpoint. A std mutex, never held across `.await`.
type InFlight = Arc<Mutex<HashMap<String, usize>>>;

pub struct Dispatcher {
    pub node: Arc<str>,
    pub outbox: Arc<dyn Outbox>,
    pub config: WebhookConfig,
    pub client: reqwest::Client,
    /// Where a delivered webhook is counted in the team's usage.
    pub usage: Arc<crate::usage::Usage>,
}

impl Dispatcher {
    fn lease(&self) -> Duration {
        self.config.timeout + LEASE_MARGIN
    }

    /// Runs until `shutdown`, then aborts what is in flight.
    pub async fn run(self, shutdown: CancellationToken) {
        let this = Arc::new(self);
        let in_flight: InFlight = Arc::default();
        let mut tasks = JoinSet::new();
        let mut last_error_log: Option<Instant> = None;
        loop {
            let free = MAX_IN_FLIGHT.saturating_sub(tasks.len());
            if free > 0 {
                let room: HashMap<String, usize> = in_flight
                    .lock()
                    .unwrap()
                    .iter()
                    .map(|(e, n)| (e.clone(), PER_ENDPOINT.saturating_sub(*n)))
                    .collect();
                let now = teamhub_persistence::now_utc();
                match this
                    .outbox
                    .claim(&this.node, now, this.lease(), free, &room, PER_ENDPOINT)
                    .await
                {
                    Ok(claimed) => {
                        for c in claimed {
                            *in_flight
                                .lock()
                                .unwrap()
                                .entry(c.endpoint.id.clone())
                                .or_default() += 1;
                            let (this, in_flight) = (this.clone(), in_flight.clone());
                            tasks.spawn(async move {
                                let endpoint = c.endpoint.id.clone();
                                this.attempt(c).await;
                                let mut map = in_flight.lock().unwrap();
                                if let Some(n) = map.get_mut(&endpoint) {
                                    *n -= 1;
                                    if *n == 0 {
                                        map.remove(&endpoint);
                                    }
                                }
                            });
                        }
                    }
                    Err(e) => {
                        if last_error_log.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                            tracing::warn!(error = %e, "webhook outbox unavailable; retrying");
                            last_error_log = Some(Instant::now());
                        }
                    }
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                () = tokio::time::sleep(POLL) => {}
            }
        }
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }

    /// One attempt of one delivery, recorded.
    async fn attempt(&self, c: Claimed) {
        let Claimed { delivery, endpoint } = c;
        let started = Instant::now();
        let now = teamhub_persistence::now_utc();
        let sent = self
            .send(&endpoint, &delivery.id, &delivery.payload, now)
            .await;
        let seconds = started.elapsed().as_secs_f64();
        let attempts = delivery.attempts + 1;
        let (attempt, result) = decide(&self.config.schedule, sent, attempts, now);
        metrics::counter!(metric::DELIVERIES, "result" => result).increment(1);
        metrics::histogram!(metric::SECONDS).record(seconds);
        if attempt.status == DeliveryStatus::Delivered {
            // The one place a successful delivery is counted (usage: once per event).
            self.usage.webhook_delivered(&delivery.team);
        }
        if attempt.disable_endpoint {
            tracing::warn!(
                team = delivery.team.as_str(),
                endpoint = endpoint.id,
                "webhook endpoint answered 410 Gone; disabled"
            );
        }
        self.record(&delivery.id, &attempt).await;
    }

    /// Sends one attempt: the status code, with `Retry-After` in seconds if any, or
    /// what went wrong.
    async fn send(
        &self,
        endpoint: &teamhub_persistence::WebhookEndpoint,
        id: &str,
        payload: &str,
        now: OffsetDateTime,
    ) -> Result<(u16, Option<u64>), String> {
        let url = url::Url::parse(&endpoint.url).map_err(|e| format!("bad URL: {e}"))?;
        if !self.config.allow_private {
            guard::check_literal(&url).map_err(|e| e.to_string())?;
        }
        let timestamp = now.unix_timestamp();
        let secrets = endpoint.signing_secrets(now);
        let signature = sign::header(&secrets, id, timestamp, payload.as_bytes());
        let response = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(payload.to_owned())
            .send()
            .await
            .map_err(describe)?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        Ok((status, retry_after))
    }
}

/// The record of attempt number `attempts` (from 1), and its `result` label.
fn decide(
    schedule: &[Duration],
    sent: Result<(u16, Option<u64>), String>,
    attempts: u32,
    now: OffsetDateTime,
) -> (Attempt, &'static str) {
    let (code, error, retry_after) = match sent {
        Ok((code, _)) if (200..300).contains(&code) => {
            let done = Attempt {
                status: DeliveryStatus::Delivered,
                status_code: Some(code),
                error: None,
                next_attempt_at: now,
                disable_endpoint: false,
            };
            return (done, "delivered");
        }
        Ok((410, _)) => {
            let gone = Attempt {
                status: DeliveryStatus::Failed,
                status_code: Some(410),
                error: Some("410 Gone: endpoint disabled".to_owned()),
                next_attempt_at: now,
                disable_endpoint: true,
            };
            return (gone, "gone");
        }
        Ok((code, retry_after)) => {
            let honoured = if matches!(code, 429 | 503) {
                retry_after
            } else {
                None
            };
            (Some(code), format!("HTTP {code}"), honoured)
        }
        Err(e) => (None, e, None),
    };
    let index = usize::try_from(attempts.max(1)).unwrap_or(usize::MAX) - 1;
    match schedule.get(index) {
        Some(delay) => {
            let mut delay = jitter(*delay);
            if let Some(secs) = retry_after {
                delay = delay.max(Duration::from_secs(secs).min(MAX_RETRY_AFTER));
            }
            let retry = Attempt {
                status: DeliveryStatus::Pending,
                status_code: code,
                error: Some(error),
                next_attempt_at: now + time::Duration::try_from(delay).unwrap_or_default(),
                disable_endpoint: false,
            };
            (retry, "retry")
        }
        None => {
            let failed = Attempt {
                status: DeliveryStatus::Failed,
                status_code: code,
                error: Some(error),
                next_attempt_at: now,
                disable_endpoint: false,
            };
            (failed, "failed")
        }
    }
}

impl Dispatcher {
    /// Records an attempt, retrying while the lease lasts (the database may be down).
    async fn record(&self, id: &str, attempt: &Attempt) {
        let give_up = Instant::now() + self.lease();
        let mut backoff = Duration::from_millis(50);
        loop {
            match self.outbox.finish(id, &self.node, attempt).await {
                Ok(true) => return,
                Ok(false) => {
                    tracing::info!(
                        delivery = id,
                        "webhook lease lost before the attempt was recorded"
                    );
                    return;
                }
                Err(e) if Instant::now() + backoff < give_up => {
                    tracing::debug!(delivery = id, error = %e, "recording a webhook attempt; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
                Err(e) => {
                    tracing::warn!(
                        delivery = id,
                        error = %e,
                        "could not record a webhook attempt; it is sent again after its lease"
                    );
                    return;
                }
            }
        }
    }
}

/// `delay` plus up to 10% at random.
fn jitter(delay: Duration) -> Duration {
    let extra = delay.mul_f64(rand::random::<f64>() * 0.1);
    delay + extra
}

/// A send error in a few words: timeouts and refusals are told apart.
fn describe(e: reqwest::Error) -> String {
    if e.is_timeout() {
        return "timed out".to_owned();
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    text
}

/// Keeps the outbox gauges current: pending deliveries and the oldest one's age.
pub async fn gauges(outbox: Arc<dyn Outbox>, every: Duration, shutdown: CancellationToken) {
    loop {
        if let Ok(stats) = outbox.stats().await {
            #[allow(clippy::cast_precision_loss)]
            metrics::gauge!(metric::QUEUE_DEPTH).set(stats.pending as f64);
            let age = stats.oldest_pending.map_or(0.0, |t| {
                (teamhub_persistence::now_utc() - t)
                    .as_seconds_f64()
                    .max(0.0)
            });
            metrics::gauge!(metric::OLDEST_PENDING).set(age);
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_adds_at_most_a_tenth() {
        for _ in 0..100 {
            let d = jitter(Duration::from_secs(10));
            assert!(
                d >= Duration::from_secs(10) && d <= Duration::from_secs(11),
                "{d:?}"
            );
        }
    }

    #[test]
    fn outcomes() {
        let now = teamhub_persistence::now_utc();
        let schedule = [Duration::from_secs(5), Duration::from_secs(300)];
        let (a, r) = decide(&schedule, Ok((204, None)), 1, now);
        assert_eq!((a.status, r), (DeliveryStatus::Delivered, "delivered"));
        let (a, r) = decide(&schedule, Ok((410, None)), 1, now);
        assert_eq!(
            (a.status, r, a.disable_endpoint),
            (DeliveryStatus::Failed, "gone", true)
        );

        let (a, r) = decide(&schedule, Ok((500, Some(999))), 1, now);
        assert_eq!((a.status, r), (DeliveryStatus::Pending, "retry"));
        let wait = a.next_attempt_at - now;
        assert!(
            wait >= time::Duration::seconds(5) && wait <= time::Duration::milliseconds(5500),
            "the first delay, Retry-After ignored on a 500: {wait}"
        );
        let (a, _) = decide(&schedule, Ok((429, Some(60))), 1, now);
        assert_eq!(
            a.next_attempt_at - now,
            time::Duration::seconds(60),
            "Retry-After on 429"
        );
        let (a, _) = decide(&schedule, Ok((503, Some(1))), 2, now);
        assert!(
            a.next_attempt_at - now >= time::Duration::seconds(300),
            "never sooner than the schedule"
        );

        let (a, r) = decide(&schedule, Err("timed out".into()), 3, now);
        assert_eq!(
            (a.status, r),
            (DeliveryStatus::Failed, "failed"),
            "one attempt plus one per delay"
        );
        assert_eq!(a.error.as_deref(), Some("timed out"));
        assert_eq!(a.status_code, None);
        let (a, _) = decide(&[], Ok((500, None)), 1, now);
        assert_eq!(a.status, DeliveryStatus::Failed, "no schedule: one attempt");
    }
}
