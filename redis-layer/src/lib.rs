//! The one Redis layer of a teamhub cluster.
//!
//! The broker, presence and control all talk to Redis, and before this layer each had
//! its own pool, reconnect loop, timeouts and subscriber connection. Now a node opens
//! Redis once, here, and hands the same [`Redis`] to all three:
//!
//! - **One configuration** ([`RedisConfig`]): single server or Redis Cluster, the URL or
//!   seed nodes, TLS (`rediss://`, a private CA), the timeouts.
//! - **Command connections that cost nothing per use** ([`Commands`]): one multiplexed
//!   connection (single) or one per shard (cluster), reconnected by the client library
//!   with exponential backoff and full jitter. Cloning a handle is a reference count;
//!   there is no checkout and no `PING` before each command (a pooled connection is
//!   checked on every checkout: one round trip per publish).
//! - **One pub/sub connection per node** (per shard in cluster mode), multiplexing every
//!   channel the node listens to: the team channels of broker and presence and the
//!   control channel ([`Subscriptions`], [`Inbox`]). Team channels are sharded pub/sub
//!   (`SSUBSCRIBE`) in cluster mode, so a shard carries only its own teams' traffic.
//!   After a reconnect, a failover or a slot move the layer resubscribes and tells the
//!   channel's owner with [`Delivery::Resubscribed`], *in order* with the channel's
//!   messages, so the owner fills the gap from history exactly there.
//! - **Clear errors at start** ([`Redis::connect`]): a wrong URL, a refused TLS
//!   handshake or a cluster that is not `cluster_state:ok` fails the node's start with
//!   a message, not a hang.
//!
//! Everything above this layer sees only small seams (`Broker`, `PresenceStore`,
//! `Control`); the cluster code is written once, here.

mod commands;
pub mod config;
mod connect;
mod pubsub;
/// Real Redis servers started by tests: a Redis Cluster, a TLS server.
#[cfg(feature = "testing")]
pub mod testing;

use std::sync::Arc;
use std::time::Duration;

pub use commands::Commands;
pub use config::{Mode, RedisConfig, redact};
pub use pubsub::{ChannelKind, Delivery, Inbox, Subscriptions};

/// What can go wrong talking to Redis.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RedisError {
    /// The configuration cannot work (a malformed URL, an unreadable CA file).
    #[error("{0}")]
    Config(String),
    /// Redis cannot be reached, refused, or did not answer in time.
    #[error("redis unavailable: {0}")]
    Unavailable(String),
}

impl From<redis::RedisError> for RedisError {
    fn from(e: redis::RedisError) -> Self {
        RedisError::Unavailable(e.to_string())
    }
}

/// A node's connection to Redis: commands and pub/sub, for single or cluster mode.
/// Cheap to clone; every clone shares the same connections.
#[derive(Clone)]
pub struct Redis {
    inner: Arc<Inner>,
}

struct Inner {
    config: RedisConfig,
    commands: Commands,
    pubsub: pubsub::PubSub,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis")
            .field("mode", &self.inner.config.mode)
            .field("urls", &self.inner.config.shown())
            .finish_non_exhaustive()
    }
}

impl Redis {
    /// Connects and checks that Redis is usable (reachable, TLS accepted, in cluster
    /// mode `cluster_state:ok`), within the configured timeouts. Must run inside a
    /// Tokio runtime: the pub/sub dispatcher is a task of its own.
    pub async fn connect(config: RedisConfig) -> Result<Self, RedisError> {
        let (commands, pubsub) = connect::open(&config).await?;
        Ok(Redis {
            inner: Arc::new(Inner {
                config,
                commands,
                pubsub,
            }),
        })
    }

    /// A handle for commands; clone it freely.
    pub fn commands(&self) -> Commands {
        self.inner.commands.clone()
    }

    pub fn mode(&self) -> Mode {
        self.inner.config.mode
    }

    pub fn config(&self) -> &RedisConfig {
        &self.inner.config
    }

    /// Longest wait for one command's answer.
    pub fn op_timeout(&self) -> Duration {
        self.inner.config.op_timeout
    }

    /// The command that publishes on a team channel, for scripts: `SPUBLISH` in cluster
    /// mode (the channel lives on the team's shard), `PUBLISH` otherwise.
    pub fn team_publish(&self) -> &'static str {
        ChannelKind::Team.publish_command(self.mode())
    }

    /// Runs `op` with the layer's command timeout, mapping both failures to
    /// [`RedisError::Unavailable`].
    pub async fn bounded<T>(
        &self,
        op: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, RedisError> {
        match tokio::time::timeout(self.op_timeout(), op).await {
            Ok(r) => r.map_err(RedisError::from),
            Err(_) => Err(RedisError::Unavailable(format!(
                "no answer within {:?}",
                self.op_timeout()
            ))),
        }
    }

    /// Whether every server the node needs answers (in cluster mode every primary and
    /// the pub/sub connections), for `/readyz`: the error says what is unreachable.
    pub async fn ping(&self) -> Result<(), RedisError> {
        // Every step of both checks is bounded by the command timeout on its own.
        let limit = self.op_timeout();
        self.commands()
            .ping_all(limit)
            .await
            .map_err(|e| RedisError::Unavailable(format!("commands: {e}")))?;
        self.inner
            .pubsub
            .ping(limit)
            .await
            .map_err(|e| RedisError::Unavailable(format!("pub/sub: {e}")))
    }

    /// A new listener: the handle that subscribes channels and the inbox their
    /// deliveries arrive in, in order per channel.
    pub fn listen(&self) -> (Subscriptions, Inbox) {
        self.inner.pubsub.listen(self.clone())
    }

    pub(crate) fn pubsub(&self) -> &pubsub::PubSub {
        &self.inner.pubsub
    }
}
