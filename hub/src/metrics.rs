//! Prometheus metrics: names in one place, recorded through the `metrics` facade.
//!
//! Hot paths record per batch (one `increment(n)` per fan-out), never per receiver.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

pub const CONNECTIONS: &str = "teamhub_connections";
pub const CONNECTIONS_TOTAL: &str = "teamhub_connections_total";
pub const HANDSHAKES_REJECTED: &str = "teamhub_handshakes_rejected_total";
pub const JOINS: &str = "teamhub_joins_total";
pub const FRAMES_IN: &str = "teamhub_frames_in_total";
pub const MESSAGES_PUBLISHED: &str = "teamhub_messages_published_total";
pub const DELIVERIES: &str = "teamhub_deliveries_total";
pub const FRAMES_OUT: &str = "teamhub_frames_out_total";
pub const OUTBOX_OVERFLOWS: &str = "teamhub_outbox_overflows_total";
pub const RATE_LIMITED: &str = "teamhub_rate_limited_total";
pub const CLOSES: &str = "teamhub_closes_total";
pub const API_RATE_LIMITED: &str = "teamhub_api_rate_limited_total";
pub const USER_CAP_REFUSED: &str = "teamhub_user_connections_refused_total";
pub const QUOTA_REFUSED: &str = "teamhub_quota_refusals_total";
pub const TOKENS_REFUSED: &str = "teamhub_tokens_refused_total";

/// Which of a plan's quotas refused something.
#[derive(Debug, Clone, Copy)]
pub enum QuotaKind {
    /// `max_connections`: a join.
    Connections,
    /// `messages_per_day`: a publish.
    Messages,
}

impl QuotaKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            QuotaKind::Connections => "connections",
            QuotaKind::Messages => "messages",
        }
    }
}

/// A join or publish refused by its team's plan (`quota_exceeded`).
pub fn quota_refused(plan: &crate::plans::PlanName, kind: QuotaKind) {
    metrics::counter!(QUOTA_REFUSED, "plan" => plan.to_string(), "kind" => kind.as_str())
        .increment(1);
}

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder once (several in-process nodes share it).
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder was installed first; then ours stays unused.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            crate::tls::describe();
            handle
        })
        .clone()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge};
    describe_gauge!(CONNECTIONS, "Open WebSocket connections");
    describe_counter!(CONNECTIONS_TOTAL, "WebSocket connections accepted");
    describe_counter!(
        HANDSHAKES_REJECTED,
        "WebSocket handshakes refused, by reason"
    );
    describe_counter!(JOINS, "Team joins");
    describe_counter!(FRAMES_IN, "Inbound client frames");
    describe_counter!(
        MESSAGES_PUBLISHED,
        "Messages published (WebSocket and REST)"
    );
    describe_counter!(
        DELIVERIES,
        "Events queued for delivery to local connections"
    );
    describe_counter!(FRAMES_OUT, "Frames written to sockets");
    describe_counter!(
        OUTBOX_OVERFLOWS,
        "Connections closed with 1013 because their outbound queue overflowed"
    );
    describe_counter!(
        RATE_LIMITED,
        "Inbound frames refused by the per-connection rate limit"
    );
    describe_counter!(CLOSES, "Connections closed by the server, by close code");
    describe_counter!(
        API_RATE_LIMITED,
        "REST requests refused by the per-caller rate limit (429 rate_limited)"
    );
    describe_counter!(
        QUOTA_REFUSED,
        "Joins (kind=connections) and publishes (kind=messages) refused with quota_exceeded, by team plan"
    );
    describe_counter!(
        USER_CAP_REFUSED,
        "WebSocket handshakes refused because the user holds --max-connections-per-user sockets on this node"
    );
    describe_counter!(
        crate::retention::DELETED,
        "Activity rows deleted by retention (older than their team's plan keeps)"
    );
    describe_counter!(
        TOKENS_REFUSED,
        "JWTs refused (handshakes, refresh, REST), by reason"
    );
    crate::auth::jwks::metric::describe();
    teamhub_persistence::writer::describe_metrics();
    crate::webhooks::describe_metrics();
}

pub fn deliveries(n: u64) {
    metrics::counter!(DELIVERIES).increment(n);
}

pub fn outbox_overflows(n: u64) {
    metrics::counter!(OUTBOX_OVERFLOWS).increment(n);
}

pub fn frames_out(n: u64) {
    metrics::counter!(FRAMES_OUT).increment(n);
}

pub fn closed(code: u16) {
    metrics::counter!(CLOSES, "code" => code.to_string()).increment(1);
}

pub fn counter_inc(name: &'static str) {
    metrics::counter!(name).increment(1);
}
