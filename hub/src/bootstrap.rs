//! The one place that turns configuration into a running node's parts: which broker,
//! presence store and database, which limits.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use teamhub_persistence::{WriterConfig, WriterTask, spawn_writer};
use teamhub_presence::{MemoryPresence, PresenceEvent, PresenceStore, RedisPresence};
use teamhub_redis::{Redis, RedisConfig};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::auth::Authenticator;
use crate::broker::memory::{HistoryLimits, MemoryBroker};
use crate::broker::redis::RedisBroker;
use crate::broker::{Broker, BrokerEvent, History};
use crate::config::ServeArgs;
use crate::control::local::LocalControl;
use crate::control::redis::RedisControl;
use crate::control::{Control, ControlEvent};
use crate::node::{Limits, Node, NodeParts, OriginPolicy};
use crate::quota::QuotaStore;
use crate::quota::memory::MemoryQuota;
use crate::quota::redis::RedisQuota;

/// Tasks that live as long as the node and are stopped by its drain.
pub struct Background {
    pub fanout: JoinHandle<()>,
    /// Applies control commands (revocations, deleted keys) to this node.
    pub control: JoinHandle<()>,
    pub writer: WriterTask,
    /// Redis presence keeps refreshing this node's entries until told to stop, after
    /// the drain has left every team.
    pub redis_presence: Option<Arc<RedisPresence>>,
    /// Deletes activity past each team's retention (`retention.rs`).
    pub retention: JoinHandle<()>,
    /// Sends webhook deliveries (`webhooks/dispatch.rs`); stops on the drain.
    pub webhooks: JoinHandle<()>,
}

/// The seams a node runs on: in-process, or Redis for a cluster.
struct Seams {
    broker: Arc<dyn Broker>,
    history: Arc<dyn History>,
    presence: Arc<dyn PresenceStore>,
    redis_presence: Option<Arc<RedisPresence>>,
    control: Arc<dyn Control>,
    quota: Arc<dyn QuotaStore>,
}

async fn seams(
    args: &ServeArgs,
    node_id: &str,
    events: mpsc::UnboundedSender<BrokerEvent>,
    presence_events: mpsc::UnboundedSender<PresenceEvent>,
    control_events: mpsc::UnboundedSender<ControlEvent>,
) -> anyhow::Result<Seams> {
    let limits = HistoryLimits {
        max_messages: args.history_size,
        max_age: Duration::from_secs(args.history_ttl),
    };
    let Some(url) = &args.redis_url else {
        let broker = Arc::new(MemoryBroker::new(events, limits));
        return Ok(Seams {
            broker: broker.clone(),
            history: broker,
            presence: Arc::new(MemoryPresence::new(presence_events)),
            redis_presence: None,
            control: Arc::new(LocalControl::new(control_events)),
            quota: Arc::new(MemoryQuota::default()),
        });
    };
    let config = RedisConfig::new(args.redis_mode, url)
        .context("--redis-url")?
        .with_ca_cert(args.redis_ca_cert.clone());
    let shown = config.shown();
    let mode = config.mode;
    // One Redis layer for the broker, presence and control: one configuration, one
    // set of command connections, one pub/sub connection.
    let redis = Redis::connect(config)
        .await
        .with_context(|| format!("Redis ({mode} mode) at {shown}"))?;
    let prefix = &args.redis_key_prefix;
    let broker = Arc::new(RedisBroker::new(&redis, prefix, events, limits));
    let ttl = Duration::from_secs(args.presence_ttl);
    let presence = Arc::new(
        RedisPresence::connect(&redis, prefix, node_id, ttl, presence_events)
            .await
            .with_context(|| format!("Redis presence at {shown}"))?,
    );
    let control = RedisControl::start(&redis, prefix, control_events)
        .await
        .with_context(|| format!("Redis control channel at {shown}"))?;
    Ok(Seams {
        broker: broker.clone(),
        history: broker,
        presence: presence.clone(),
        redis_presence: Some(presence),
        control: Arc::new(control),
        quota: Arc::new(RedisQuota::new(&redis, prefix, ttl)),
    })
}

/// Applies control traffic (revocations, deleted keys) to this node, in order.
async fn control_loop(node: Arc<Node>, mut events: mpsc::UnboundedReceiver<ControlEvent>) {
    while let Some(event) = events.recv().await {
        node.on_control(event).await;
    }
}

/// How often every node reads the control log; the bound on how late a command that
/// pub/sub lost reaches this node.
const CONTROL_LOG_POLL: Duration = Duration::from_secs(1);
/// How far back each read looks, beyond the last read that worked: a sequence number
/// can commit after a later one, and a clock may be a little behind the database's.
const CONTROL_LOG_WINDOW: time::Duration = time::Duration::seconds(30);
/// Entries older than this are pruned (every running node has read them by then).
const CONTROL_LOG_KEEP: time::Duration = time::Duration::hours(1);

/// Reads the control log every second and applies what this node has not applied
/// (commands whose pub/sub copy was lost: Redis was down, or this node's subscription
/// was being re-established). Prunes old entries now and then. Stops with the node.
async fn control_log_poll(node: Arc<Node>, log: Arc<dyn teamhub_persistence::ControlLog>) {
    let mut since = time::OffsetDateTime::now_utc() - CONTROL_LOG_WINDOW;
    let mut tick = tokio::time::interval(CONTROL_LOG_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut rounds: u64 = 0;
    loop {
        tokio::select! {
            () = node.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let started = time::OffsetDateTime::now_utc();
        match log.since(since, 10_000).await {
            Ok(entries) => {
                for entry in entries {
                    match serde_json::from_str(&entry.command) {
                        Ok(command) => node.apply_logged(&crate::control::Logged {
                            command,
                            seq: Some(entry.seq),
                        }),
                        // A newer node's command this one does not know.
                        Err(e) => {
                            tracing::debug!(seq = entry.seq, error = %e, "unknown control command in the log")
                        }
                    }
                }
                since = started - CONTROL_LOG_WINDOW;
            }
            Err(e) => tracing::warn!(error = %e, "reading the control log failed; retrying"),
        }
        rounds += 1;
        if rounds % 600 == 1 {
            match log.prune(started - CONTROL_LOG_KEEP).await {
                Ok(n) if n > 0 => tracing::debug!(pruned = n, "control log pruned"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "pruning the control log failed"),
            }
        }
    }
}

fn check(args: &ServeArgs) -> anyhow::Result<()> {
    let positive = [
        ("presence-ttl", args.presence_ttl),
        ("ping-interval", args.ping_interval),
        ("idle-timeout", args.idle_timeout),
        ("history-ttl", args.history_ttl),
        ("drain-timeout", args.drain_timeout),
        ("retention-interval", args.retention_interval),
        ("usage-flush-interval", args.usage_flush_interval),
    ];
    for (name, value) in positive {
        if value == 0 {
            bail!("--{name} must be at least 1 second");
        }
    }
    if args.max_frame_bytes < 1024 {
        bail!("--max-frame-bytes must be at least 1024");
    }
    for (name, value) in [
        ("max-joins", args.max_joins),
        ("history-size", args.history_size),
        ("outbox-size", args.outbox_size),
    ] {
        if value == 0 {
            bail!("--{name} must be at least 1");
        }
    }
    Ok(())
}

fn origins(args: &ServeArgs, development: bool) -> OriginPolicy {
    match args.allowed_origins.as_deref().map(str::trim) {
        Some("*") => OriginPolicy::any(),
        Some(list) => OriginPolicy::list(
            list.split(',')
                .map(|o| o.trim().trim_end_matches('/').to_owned())
                .filter(|o| !o.is_empty())
                .collect(),
        ),
        None if development => OriginPolicy::any(),
        None => OriginPolicy::list(Vec::new()),
    }
}

/// Builds a node from its configuration and starts its background tasks.
pub async fn build(args: &ServeArgs) -> anyhow::Result<(Arc<Node>, Background)> {
    check(args)?;
    let auth = Authenticator::from_args(&args.jwt)?;
    auth.start_refresh();
    if auth.is_development() && !args.listen.ip().is_loopback() {
        bail!(
            "development mode (no --jwt-secret, --jwt-public-key, --jwks-url or --oidc-issuer) only listens on loopback, \
             but --listen is {}; configure a key to serve other hosts",
            args.listen
        );
    }
    let id: Arc<str> = match &args.node_id {
        Some(id) if !id.trim().is_empty() => id.trim().into(),
        _ => format!("node-{:06x}", rand::random::<u32>() & 0xff_ffff).into(),
    };

    let database = teamhub_persistence::connect(&args.database_url)
        .await
        .with_context(|| format!("opening database {}", redact(&args.database_url)))?;
    database
        .migrate()
        .await
        .context("applying database migrations")?;
    let spill_path = match args.activity_spill_path.trim() {
        "" | "none" => None,
        path => Some(std::path::PathBuf::from(path)),
    };
    let writer_config = WriterConfig {
        spill_path,
        ..WriterConfig::default()
    };
    let (activity, writer) = spawn_writer(database.activity_sink(), writer_config);
    let retention_store = database.activity_retention();

    let (events_tx, events_rx) = mpsc::unbounded_channel::<BrokerEvent>();
    let (presence_tx, presence_rx) = mpsc::unbounded_channel();
    let (control_tx, control_rx) = mpsc::unbounded_channel();
    let seams = seams(args, &id, events_tx, presence_tx, control_tx).await?;

    let limits = Limits {
        max_frame_bytes: args.max_frame_bytes,
        rate_limit: NonZeroU32::new(args.rate_limit),
        max_joins: args.max_joins,
        ping_interval: Duration::from_secs(args.ping_interval),
        idle_timeout: Duration::from_secs(args.idle_timeout),
        outbox_size: args.outbox_size,
        jwt_leeway: args.jwt.jwt_leeway,
        max_strikes: 50,
    };
    let development = auth.is_development();
    let webhook_config = crate::webhooks::WebhookConfig {
        timeout: Duration::from_secs(args.webhook_timeout),
        schedule: args.webhook_retry_schedule.0.clone(),
        allow_private: args.webhook_allow_private,
    };
    let webhook_client =
        crate::webhooks::guard::client(webhook_config.allow_private, webhook_config.timeout)
            .context("building the webhook HTTP client")?;
    // Presence versions are shared by the nodes of one Redis key prefix; in-process
    // ones start again at every start.
    let occupancy_scope = match &args.redis_url {
        Some(_) => format!("redis:{}", args.redis_key_prefix),
        None => format!("local:{}", uuid::Uuid::new_v4()),
    };
    let outbox = database.outbox();
    let node = Arc::new(Node::new(NodeParts {
        id,
        limits,
        origins: origins(args, development),
        auth,
        broker: seams.broker,
        history: seams.history,
        presence: seams.presence,
        activity,
        database,
        control: seams.control,
        log_control: args.redis_url.is_some(),
        ephemeral_prefixes: args
            .ephemeral_prefixes
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect(),
        plans: args.plan_book()?,
        quota: seams.quota,
        max_connections_per_user: args.max_connections_per_user,
        api_rate_limit: args.api_rate_limit,
        webhooks: webhook_config.clone(),
        occupancy: crate::webhooks::occupancy::Reports::spawn(&occupancy_scope, outbox),
    }));
    // Revocations are in force before the first connection is accepted.
    let revocations = node
        .revocation_store
        .all()
        .await
        .context("loading member revocations")?;
    node.revocations.load(&revocations);
    tokio::spawn(prune_api_limiter(node.clone()));
    tokio::spawn(node.usage.clone().run(
        Duration::from_secs(args.usage_flush_interval),
        node.shutdown.clone(),
    ));
    let fanout = tokio::spawn(crate::fanout::run(node.clone(), events_rx, presence_rx));
    let control = tokio::spawn(control_loop(node.clone(), control_rx));
    if let Some(log) = node.control_log.clone() {
        tokio::spawn(control_log_poll(node.clone(), log));
    }
    if let Some(max) = node.auth.max_lifetime() {
        let lifetime = Duration::from_secs(max.saturating_add(args.jwt.jwt_leeway));
        let every = Duration::from_secs(args.retention_interval.max(1));
        tokio::spawn(crate::revocation::prune_loop(node.clone(), lifetime, every));
    }
    let retention = tokio::spawn(crate::retention::run(
        retention_store,
        node.plans.clone(),
        Duration::from_secs(args.retention_interval),
        node.shutdown.clone(),
    ));
    let dispatcher = crate::webhooks::dispatch::Dispatcher {
        node: node.id.clone(),
        outbox: node.outbox.clone(),
        config: webhook_config,
        client: webhook_client,
        usage: node.usage.clone(),
    };
    let webhooks = tokio::spawn(dispatcher.run(node.shutdown.clone()));
    tokio::spawn(crate::webhooks::dispatch::gauges(
        node.outbox.clone(),
        Duration::from_secs(5),
        node.shutdown.clone(),
    ));
    Ok((
        node,
        Background {
            webhooks,
            fanout,
            control,
            writer,
            redis_presence: seams.redis_presence,
            retention,
        },
    ))
}

/// Forgets REST callers that are not over their rate limit, now and then, until the
/// node drains.
async fn prune_api_limiter(node: Arc<Node>) {
    let mut tick = tokio::time::interval(crate::http::edge::PRUNE_EVERY);
    loop {
        tokio::select! {
            () = node.shutdown.cancelled() => return,
            _ = tick.tick() => node.api_limiter.prune(),
        }
    }
}

/// A database URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_owned(),
    }
}
