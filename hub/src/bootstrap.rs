//! The one place that turns configuration into a running node's parts: which broker,
//! presence store and database, which limits.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use teamhub_persistence::{WriterConfig, WriterTask, spawn_writer};
use teamhub_presence::MemoryPresence;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::auth::Authenticator;
use crate::broker::memory::{HistoryLimits, MemoryBroker};
use crate::config::ServeArgs;
use crate::event::Event;
use crate::node::{Limits, Node, NodeParts, OriginPolicy};

/// Tasks that live as long as the node and are stopped by its drain.
pub struct Background {
    pub fanout: JoinHandle<()>,
    pub writer: WriterTask,
}

fn check(args: &ServeArgs) -> anyhow::Result<()> {
    let positive = [
        ("presence-ttl", args.presence_ttl),
        ("ping-interval", args.ping_interval),
        ("idle-timeout", args.idle_timeout),
        ("history-ttl", args.history_ttl),
        ("drain-timeout", args.drain_timeout),
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
        Some("*") => OriginPolicy::Any,
        Some(list) => OriginPolicy::List(
            list.split(',')
                .map(|o| o.trim().trim_end_matches('/').to_owned())
                .filter(|o| !o.is_empty())
                .collect(),
        ),
        None if development => OriginPolicy::Any,
        None => OriginPolicy::List(Vec::new()),
    }
}

/// Builds a node from its configuration and starts its background tasks.
pub async fn build(args: &ServeArgs) -> anyhow::Result<(Arc<Node>, Background)> {
    check(args)?;
    let auth = Authenticator::from_args(&args.jwt)?;
    if auth.is_development() && !args.listen.ip().is_loopback() {
        bail!(
            "development mode (no --jwt-secret or --jwt-public-key) only listens on loopback, \
             but --listen is {}; configure a key to serve other hosts",
            args.listen
        );
    }
    if args.redis_url.is_some() {
        bail!(
            "--redis-url: cluster mode is not available in this build yet; unset it to run a single node"
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
    let (activity, writer) = spawn_writer(database.activity_sink(), WriterConfig::default());

    let (events_tx, events_rx) = mpsc::unbounded_channel::<Arc<Event>>();
    let (presence_tx, presence_rx) = mpsc::unbounded_channel();
    let limits_history = HistoryLimits {
        max_messages: args.history_size,
        max_age: Duration::from_secs(args.history_ttl),
    };
    let broker = Arc::new(MemoryBroker::new(events_tx, limits_history));
    let presence = Arc::new(MemoryPresence::new(presence_tx));

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
    let node = Arc::new(Node::new(NodeParts {
        id,
        limits,
        origins: origins(args, development),
        auth,
        broker: broker.clone(),
        history: broker,
        presence,
        activity,
        database,
        ephemeral_prefixes: args
            .ephemeral_prefixes
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect(),
    }));
    let fanout = tokio::spawn(crate::fanout::run(node.clone(), events_rx, presence_rx));
    Ok((node, Background { fanout, writer }))
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
