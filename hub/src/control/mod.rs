//! Control traffic between nodes: commands every node of a cluster must apply to its
//! own connections (a member was revoked, an API key was deleted).
//!
//! [`Control`] is the seam: `send` hands a command to every node, this one included;
//! each node's control loop (`bootstrap::control_loop`) receives [`ControlEvent`]s and
//! applies them to its local registry and caches. Single node: [`local::LocalControl`]
//! loops commands back in process. Cluster: [`redis::RedisControl`] publishes them on
//! one pub/sub channel under the cluster's key prefix; every node subscribes to it.
//!
//! Delivery is at most once (pub/sub). What a missed command would leave stale is
//! repaired from the database: after every (re)subscription the control loop receives
//! [`ControlEvent::Resubscribed`] and reloads the revocations. New authentications never
//! depend on control traffic (API keys are looked up in the shared database on every
//! handshake and request); only live sockets do.
//!
//! Commands are idempotent, so applying one twice (say, locally after a failed publish
//! and again from Redis) does no harm.

pub mod local;
pub mod redis;

use serde::{Deserialize, Serialize};
use teamhub_protocol::{TeamId, UserId};

/// A command for every node. Its JSON form is the Redis wire format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Command {
    /// `user`'s tokens issued before `at` no longer count in `team`; their live
    /// connections leave it (`kicked`, reason `revoked`).
    Revoked {
        team: TeamId,
        user: UserId,
        /// Microseconds since the Unix epoch.
        at_micros: i64,
    },
    /// API key `id` of `team` was deleted: close the sockets that authenticated with it.
    KeyDeleted { team: TeamId, id: String },
}

/// What a node's control loop receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlEvent {
    Command(Command),
    /// The channel was (re)subscribed: commands may have been missed while it was not,
    /// so state that commands keep fresh must be reloaded from the database.
    Resubscribed,
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("control channel unavailable: {0}")]
    Unavailable(String),
}

/// Hands commands to every node of the hub.
#[async_trait::async_trait]
pub trait Control: Send + Sync {
    /// Sends `command` to every node, this one included. `Ok` means it was handed to
    /// the transport (Redis accepted it), not that every node applied it.
    async fn send(&self, command: Command) -> Result<(), ControlError>;
}
