//! Control traffic between nodes: commands every node of a cluster must apply to its
//! own connections (a member was revoked, an API key was deleted).
//!
//! [`Control`] is the seam: `send` hands a command to every node, this one included;
//! each node's control loop (`bootstrap::control_loop`) receives [`ControlEvent`]s and
//! applies them to its local registry and caches. Single node: [`local::LocalControl`]
//! loops commands back in process. Cluster: [`redis::RedisControl`] publishes them on
//! one pub/sub channel under the cluster's key prefix; every node subscribes to it.
//!
//! Delivery is at least once in a cluster: the node that makes a change appends the
//! command to the shared database's control log (`teamhub_persistence::ControlLog`)
//! and publishes it with its sequence number; every node also reads the log every
//! second (`bootstrap::control_log_poll`) and applies what it has not applied yet,
//! skipping sequence numbers it has seen. So a command sent while Redis is unreachable
//! still reaches every node's live sockets within about a second. After every
//! (re)subscription the control loop also receives [`ControlEvent::Resubscribed`] and
//! reloads the revocations. New authentications never depend on control traffic (API
//! keys are looked up in the shared database on every handshake and request); only
//! live sockets do.

pub mod local;
pub mod redis;

use std::collections::{HashSet, VecDeque};

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

/// A command with its place in the control log, when it has one. Its JSON is the
/// Redis wire format: the command's own fields plus `seq`, which a node that does not
/// know the field ignores.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Logged {
    #[serde(flatten)]
    pub command: Command,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<i64>,
}

impl Logged {
    /// A command that is in no log (a single node's, or one whose append failed).
    pub fn unlogged(command: Command) -> Logged {
        Logged { command, seq: None }
    }
}

/// What a node's control loop receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlEvent {
    Command(Logged),
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
    async fn send(&self, command: Logged) -> Result<(), ControlError>;
}

/// The log sequence numbers a node has applied, the latest [`Applied::CAP`] of them: a
/// command that arrives by both roads (pub/sub and the log) is applied once. Older
/// numbers never come back (the log is read by a window of seconds).
#[derive(Debug, Default)]
pub struct Applied {
    order: VecDeque<i64>,
    seen: HashSet<i64>,
}

impl Applied {
    pub const CAP: usize = 65_536;

    /// Records `seq`; false when it was applied before.
    pub fn first_time(&mut self, seq: i64) -> bool {
        if !self.seen.insert(seq) {
            return false;
        }
        self.order.push_back(seq);
        if self.order.len() > Self::CAP
            && let Some(old) = self.order.pop_front()
        {
            self.seen.remove(&old);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_sequence_number_is_applied_once_and_memory_is_bounded() {
        let mut a = Applied::default();
        assert!(a.first_time(5));
        assert!(!a.first_time(5));
        assert!(a.first_time(3), "order does not matter");
        for seq in 10..10 + Applied::CAP as i64 {
            assert!(a.first_time(seq));
        }
        assert!(a.seen.len() <= Applied::CAP && a.order.len() <= Applied::CAP);
        assert!(a.first_time(5), "forgotten once far behind");
    }
}
