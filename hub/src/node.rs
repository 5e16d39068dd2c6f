//! The node: shared state every connection and request handler holds a handle to, and
//! the operations both the WebSocket and the REST paths perform (so the two cannot
//! disagree on permissions or side effects).

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::value::RawValue;
use teamhub_persistence::{
    ActivityEvent, ActivityWriter, ControlLog, Database, KeyStore, Outbox, PatternStore,
    RevocationStore, WebhookStore,
};
use teamhub_presence::{ConnKey, PresenceStore, Snapshot};
use teamhub_protocol::{
    Action, CloseCode, KickReason, MessageType, Role, TeamId, UserId, is_reserved_type, permits,
};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::{Authenticator, Identity, is_api_key};
use crate::broker::{Broker, BrokerError, History, Publication, Published};
use crate::control::{Applied, Command, Control, ControlEvent, Logged};
use crate::error::OpError;
use crate::event::MessageParts;
use crate::hosting::Hosting;
use crate::http::ApiLimiter;
use crate::metrics;
pub use crate::origin::OriginPolicy;
use crate::plans::PlanBook;
use crate::quota::QuotaStore;
use crate::registry::{Registry, Subscriber};
use crate::revocation::Revocations;
use crate::usage::Usage;
use crate::user_cap::UserCap;

/// Per-connection limits and timings (section 3 of the contract).
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_frame_bytes: usize,
    /// Frames per second; `None` turns the limit off.
    pub rate_limit: Option<std::num::NonZeroU32>,
    pub max_joins: usize,
    pub ping_interval: Duration,
    pub idle_timeout: Duration,
    pub outbox_size: usize,
    pub jwt_leeway: u64,
    /// Rate-limited frames within [`Limits::STRIKE_WINDOW`] that close the connection (4008).
    pub max_strikes: u32,
}

impl Limits {
    pub const STRIKE_WINDOW: Duration = Duration::from_secs(10);
}

/// A message a caller wants to publish.
#[derive(Debug)]
pub struct Outgoing<'a> {
    pub team: &'a TeamId,
    pub ty: &'a MessageType,
    pub data: &'a RawValue,
    /// The publishing connection (spared its own message unless `echo`); `None` for REST.
    pub origin: Option<ConnKey>,
    pub echo: bool,
}

/// A publish under way (see [`Node::enqueue_publish`]).
pub type PendingPublish = Pin<Box<dyn Future<Output = Result<Published, OpError>> + Send + Sync>>;

/// What a publish's activity row is built from once its offset is known.
struct ActivityRecord {
    activity: ActivityWriter,
    team: TeamId,
    user: UserId,
    ty: MessageType,
    data: Box<RawValue>,
    client: ClientInfo,
}

/// Where a request or connection came from, for the activity log.
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    pub ip: Option<IpAddr>,
    pub user_agent: Option<String>,
}

pub struct Node {
    pub id: Arc<str>,
    pub limits: Limits,
    pub auth: Authenticator,
    pub origins: OriginPolicy,
    /// Local connections per team. Change a team's membership only through
    /// [`Node::host`] and [`Node::unhost`], which keep the broker's and presence's
    /// subscriptions in step.
    pub registry: Registry,
    hosting: Hosting,
    pub broker: Arc<dyn Broker>,
    pub history: Arc<dyn History>,
    pub presence: Arc<dyn PresenceStore>,
    pub activity: ActivityWriter,
    pub database: Database,
    pub patterns: Arc<dyn PatternStore>,
    pub keys: Arc<dyn KeyStore>,
    pub revocation_store: Arc<dyn RevocationStore>,
    /// Webhook endpoints and the outbox of their deliveries (`webhooks/`).
    pub webhooks: Arc<dyn WebhookStore>,
    pub outbox: Arc<dyn Outbox>,
    pub webhook_config: crate::webhooks::WebhookConfig,
    /// Where `team.occupied` / `team.vacated` are reported.
    pub occupancy: crate::webhooks::occupancy::Reports,
    /// Every revocation, consulted by [`Node::authorize`].
    pub revocations: Revocations,
    /// Commands to every node (revocations, deleted keys).
    pub control: Arc<dyn Control>,
    /// In a cluster: where commands are also appended, so nodes that miss the pub/sub
    /// copy catch up (`control/mod.rs`). `None` on a single node.
    pub control_log: Option<Arc<dyn ControlLog>>,
    /// Log sequence numbers already applied here.
    control_applied: std::sync::Mutex<Applied>,
    pub ephemeral_prefixes: Vec<String>,
    /// Cancelled when the node drains: every session closes with 1012.
    pub shutdown: CancellationToken,
    /// Every session task, so a drain can wait for them.
    pub sessions: TaskTracker,
    pub metrics: PrometheusHandle,
    /// Each team's plan and what it allows (retention, quotas).
    pub plans: Arc<PlanBook>,
    /// Connections joined to each team, across the cluster (`max_connections`).
    pub quota: Arc<dyn QuotaStore>,
    /// Usage counted here and not yet in the database.
    pub usage: Arc<Usage>,
    /// Sockets per user on this node (`--max-connections-per-user`).
    pub user_cap: Arc<UserCap>,
    /// REST requests per caller on this node (`--api-rate-limit`).
    pub api_limiter: ApiLimiter,
    draining: AtomicBool,
    next_conn: AtomicU64,
}

/// Everything [`Node::new`] needs.
pub struct NodeParts {
    pub id: Arc<str>,
    pub limits: Limits,
    pub auth: Authenticator,
    pub origins: OriginPolicy,
    pub broker: Arc<dyn Broker>,
    pub history: Arc<dyn History>,
    pub presence: Arc<dyn PresenceStore>,
    pub activity: ActivityWriter,
    pub database: Database,
    pub control: Arc<dyn Control>,
    /// Append commands to the database's control log (cluster mode).
    pub log_control: bool,
    pub ephemeral_prefixes: Vec<String>,
    pub plans: PlanBook,
    pub quota: Arc<dyn QuotaStore>,
    /// Open sockets one user may hold on this node; 0 is no cap.
    pub max_connections_per_user: usize,
    /// REST requests per second per caller; 0 is no limit.
    pub api_rate_limit: u32,
    pub webhooks: crate::webhooks::WebhookConfig,
    pub occupancy: crate::webhooks::occupancy::Reports,
}

impl Node {
    pub fn new(p: NodeParts) -> Self {
        let usage = Usage::new(p.id.clone(), p.database.usage_store());
        Node {
            usage,
            registry: Registry::new(p.id.clone()),
            hosting: Hosting::default(),
            id: p.id,
            limits: p.limits,
            auth: p.auth,
            origins: p.origins,
            broker: p.broker,
            history: p.history,
            presence: p.presence,
            activity: p.activity,
            patterns: p.database.pattern_store(),
            keys: p.database.key_store(),
            revocation_store: p.database.revocation_store(),
            webhooks: p.database.webhook_store(),
            outbox: p.database.outbox(),
            webhook_config: p.webhooks,
            occupancy: p.occupancy,
            revocations: Revocations::default(),
            control: p.control,
            control_log: p.log_control.then(|| p.database.control_log()),
            control_applied: std::sync::Mutex::new(Applied::default()),
            database: p.database,
            ephemeral_prefixes: p.ephemeral_prefixes,
            shutdown: CancellationToken::new(),
            sessions: TaskTracker::new(),
            metrics: metrics::install(),
            plans: Arc::new(p.plans),
            quota: p.quota,
            user_cap: UserCap::new(p.max_connections_per_user),
            api_limiter: ApiLimiter::new(p.api_rate_limit),
            draining: AtomicBool::new(false),
            next_conn: AtomicU64::new(1),
        }
    }

    /// Joins a connection to a team on this node: registry, broker and presence
    /// subscriptions together, under the team's lock (`hosting.rs`). On error nothing
    /// changed.
    pub async fn host(
        &self,
        team: &TeamId,
        conn: u64,
        sub: Subscriber,
    ) -> Result<(), crate::hosting::HostError> {
        self.hosting.join(self.seams(), team, conn, sub).await
    }

    /// Removes a connection from a team; the last one ends the node's subscriptions.
    /// False when it was not joined.
    pub async fn unhost(&self, team: &TeamId, conn: u64) -> bool {
        self.hosting.leave(self.seams(), team, conn).await
    }

    fn seams(&self) -> crate::hosting::Seams<'_> {
        crate::hosting::Seams {
            registry: &self.registry,
            broker: &*self.broker,
            presence: &*self.presence,
        }
    }

    pub fn conn_key(&self) -> ConnKey {
        ConnKey {
            node: self.id.clone(),
            conn: self.next_conn.fetch_add(1, Ordering::Relaxed),
        }
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Starts draining: `/readyz` turns 503, new sockets are refused and every session
    /// is told to close with 1012.
    pub fn start_drain(&self) {
        self.draining.store(true, Ordering::Release);
        self.shutdown.cancel();
    }

    /// The identity behind a bearer token: a JWT verified with the configured key, or an
    /// API key looked up in the key store. The one entry point for the handshake and
    /// every REST handler. Errors are `unauthorized`, or `unavailable` when the key
    /// store cannot answer.
    pub async fn identify(&self, token: &str) -> Result<Identity, OpError> {
        if !is_api_key(token) {
            return Ok(self.auth.authenticate(token).await?);
        }
        self.identify_api_key(token).await
    }

    /// The caller's role in `team`, if it allows `action` and the caller's token was
    /// not revoked in that team.
    pub fn authorize(
        &self,
        caller: &Identity,
        team: &TeamId,
        action: Action,
    ) -> Result<Role, OpError> {
        let role = caller.role_in(team.as_str());
        if role.is_some() && self.revocations.is_revoked(team, caller) {
            return Err(OpError::forbidden(format!(
                "access to team {team} was revoked for tokens issued before the revocation; \
                 get a new token"
            )));
        }
        match role {
            Some(r) if permits(role, action) => Ok(r),
            Some(r) => Err(OpError::forbidden(format!(
                "role {r} in team {team} does not allow this"
            ))),
            None => Err(OpError::forbidden(format!("no role in team {team}"))),
        }
    }

    /// Publishes a message as `caller`: the one path for WebSocket and REST publishes.
    pub async fn publish(
        &self,
        caller: &Identity,
        msg: Outgoing<'_>,
        client: &ClientInfo,
    ) -> Result<Published, OpError> {
        self.enqueue_publish(caller, msg, client)?.await
    }

    /// Checks and starts a publish as `caller` without waiting for it: a refusal
    /// (permission, reserved type) is immediate; otherwise the message's place in its
    /// team's order is fixed on return (see [`Broker::enqueue`]) and the future yields
    /// the offset, recording the activity row once it is known. So a session can read
    /// its next frame while its publishes are in flight.
    pub fn enqueue_publish(
        &self,
        caller: &Identity,
        msg: Outgoing<'_>,
        client: &ClientInfo,
    ) -> Result<PendingPublish, OpError> {
        let Outgoing {
            team,
            ty,
            data,
            origin,
            echo,
        } = msg;
        self.authorize(caller, team, Action::Publish)?;
        if is_reserved_type(ty.as_str()) {
            return Err(OpError::forbidden(format!(
                "message type {ty} is reserved for the server (presence., pattern., system.)"
            )));
        }
        let parts = MessageParts {
            team,
            ty,
            user: &caller.user,
            data,
        };
        let (plan, quota) = self.plans.of(team);
        let pending = self.broker.enqueue(Publication {
            parts,
            origin,
            echo,
            messages_per_day: quota.messages_per_day,
        });
        let record = (!self.is_ephemeral(ty.as_str())).then(|| ActivityRecord {
            activity: self.activity.clone(),
            team: team.clone(),
            user: caller.user.clone(),
            ty: ty.clone(),
            data: data.to_owned(),
            client: client.clone(),
        });
        let usage = self.usage.clone();
        let usage_team = team.clone();
        Ok(Box::pin(async move {
            let published = match pending.await {
                Ok(published) => published,
                Err(e @ BrokerError::QuotaExceeded) => {
                    metrics::quota_refused(&plan, metrics::QuotaKind::Messages);
                    return Err(e.into());
                }
                Err(e) => return Err(e.into()),
            };
            usage.message(&usage_team, published.ts);
            metrics::counter_inc(metrics::MESSAGES_PUBLISHED);
            if let Some(r) = record {
                let event = ActivityEvent::for_message(
                    r.team,
                    r.user,
                    r.ty.as_str(),
                    published.offset,
                    &r.data,
                    published.ts,
                )
                .with_client(r.client.ip, r.client.user_agent);
                r.activity.record(event);
            }
            Ok(published)
        }))
    }

    /// Publishes a message of the server's own (a reserved type such as
    /// `pattern.updated`) on behalf of `user`, who was authorised by the caller. Not
    /// recorded as a message in the activity log: the operation records its own row.
    pub(crate) async fn publish_system(
        &self,
        team: &TeamId,
        ty: &MessageType,
        data: &RawValue,
        user: &UserId,
    ) -> Result<Published, OpError> {
        let parts = MessageParts {
            team,
            ty,
            user,
            data,
        };
        let published = self
            .broker
            .publish(Publication {
                parts,
                origin: None,
                echo: false,
                messages_per_day: None,
            })
            .await?;
        metrics::counter_inc(metrics::MESSAGES_PUBLISHED);
        Ok(published)
    }

    /// Sends a command to every node: appended to the control log (in a cluster), then
    /// published. When the control channel cannot take it, it is applied here at once;
    /// the other nodes read it from the log within a second.
    pub(crate) async fn broadcast(&self, command: Command) {
        let mut logged = Logged::unlogged(command);
        if let Some(log) = &self.control_log {
            match serde_json::to_string(&logged.command) {
                Ok(text) => match log.append(&text).await {
                    Ok(seq) => logged.seq = Some(seq),
                    // Pub/sub still carries it; the database being down is also what
                    // makes the change itself fail, so this is rare.
                    Err(e) => tracing::warn!(error = %e, "control log append failed"),
                },
                Err(e) => tracing::error!(error = %e, "encoding a control command"),
            }
        }
        if let Err(e) = self.control.send(logged.clone()).await {
            tracing::warn!(error = %e, command = ?logged.command, "control command not published; applying it here, the log carries it to the other nodes");
            self.apply_logged(&logged);
        }
    }

    /// Applies a command unless its log sequence number was applied here before.
    pub fn apply_logged(&self, logged: &Logged) {
        if let Some(seq) = logged.seq {
            let mut applied = self
                .control_applied
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if !applied.first_time(seq) {
                return;
            }
        }
        self.apply_command(&logged.command);
    }

    /// Applies a command from the control channel to this node's connections and caches.
    pub fn apply_command(&self, command: &Command) {
        match command {
            Command::Revoked {
                team,
                user,
                at_micros,
            } => {
                let at =
                    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(*at_micros) * 1000)
                        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
                self.revocations.apply(team, user, at);
                let kicked = self.registry.kick_user(team, user, KickReason::Revoked);
                tracing::info!(%team, %user, kicked, "member revoked");
            }
            Command::KeyDeleted { team, id } => {
                let Ok(user) = UserId::new(&format!("apikey:{id}")) else {
                    return;
                };
                // Leave the key's team (`kicked`, reason `revoked`), then close: the
                // credential is gone, which 4001 tells clients (get a new one).
                self.registry.kick_user(team, &user, KickReason::Revoked);
                let closed =
                    self.registry
                        .close_user(&user, CloseCode::TokenExpired, "API key deleted");
                tracing::info!(%team, key = %id, closed, "API key deleted");
            }
        }
    }

    /// Handles what the control channel delivers.
    pub async fn on_control(&self, event: ControlEvent) {
        match event {
            ControlEvent::Command(c) => self.apply_logged(&c),
            ControlEvent::Resubscribed => self.reload_revocations().await,
        }
    }

    /// Loads every stored revocation into the cache (at start, and after a gap in
    /// control traffic). A failure is logged; the cache keeps what it has.
    pub async fn reload_revocations(&self) {
        match self.revocation_store.all().await {
            Ok(all) => self.revocations.load(&all),
            Err(e) => tracing::warn!(error = %e, "reloading revocations failed"),
        }
    }

    pub async fn presence_snapshot(
        &self,
        caller: &Identity,
        team: &TeamId,
    ) -> Result<Snapshot, OpError> {
        self.authorize(caller, team, Action::ReadPresence)?;
        Ok(self.presence.snapshot(team).await?)
    }

    fn is_ephemeral(&self, ty: &str) -> bool {
        self.ephemeral_prefixes
            .iter()
            .any(|p| ty.starts_with(p.as_str()))
    }

    /// Ready to take traffic: not draining, and broker and database answer.
    pub async fn readiness(&self) -> Result<(), String> {
        if self.is_draining() {
            return Err("draining".into());
        }
        self.broker.ping().await.map_err(|e| e.to_string())?;
        self.database
            .activity_sink()
            .ping()
            .await
            .map_err(|e| format!("database: {e}"))?;
        Ok(())
    }
}
