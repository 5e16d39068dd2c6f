//! Cluster: commands travel on one Redis pub/sub channel, `<prefix>:control`.
//!
//! The channel is a broadcast channel of the node's Redis layer (`teamhub-redis`): it
//! shares the node's one pub/sub connection with the team channels, and in cluster mode
//! it is plain pub/sub, which Redis forwards to every shard, so it reaches every node.
//! A node receives its own commands back through Redis, so every node applies them by
//! the same path. [`ControlEvent::Resubscribed`] is emitted once the channel is first
//! subscribed and after every resubscription the layer reports, so whatever was missed
//! while disconnected is reloaded from the database.

use redis::AsyncCommands;
use teamhub_redis::{ChannelKind, Delivery, Inbox, Redis};
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::{Control, ControlError, ControlEvent, Logged};

pub struct RedisControl {
    redis: Redis,
    channel: String,
    /// Stops the listener task when the node lets go of its control handle.
    _stop: DropGuard,
}

/// The control channel of the cluster with key prefix `prefix`.
pub fn channel(prefix: &str) -> String {
    format!("{prefix}:control")
}

impl RedisControl {
    /// Subscribes, and returns once the subscription is live (so no command sent after
    /// this node started is missed), or fails within the layer's timeout.
    pub async fn start(
        redis: &Redis,
        prefix: &str,
        events: mpsc::UnboundedSender<ControlEvent>,
    ) -> Result<RedisControl, ControlError> {
        let channel = channel(prefix);
        let (subscriptions, inbox) = redis.listen();
        subscriptions
            .subscribe(&channel, ChannelKind::Broadcast)
            .await
            .map_err(|e| ControlError::Unavailable(format!("subscribing {channel}: {e}")))?;
        // Whatever happened before the subscription is in the database.
        let _ = events.send(ControlEvent::Resubscribed);
        let stop = CancellationToken::new();
        tokio::spawn(listen(inbox, events, stop.clone(), subscriptions));
        Ok(RedisControl {
            redis: redis.clone(),
            channel,
            _stop: stop.drop_guard(),
        })
    }
}

#[async_trait::async_trait]
impl Control for RedisControl {
    async fn send(&self, command: Logged) -> Result<(), ControlError> {
        let payload = serde_json::to_string(&command)
            .map_err(|e| ControlError::Unavailable(format!("encoding a command: {e}")))?;
        let mut conn = self.redis.commands();
        self.redis
            .bounded(conn.publish::<_, _, i64>(&self.channel, payload))
            .await
            .map(drop)
            .map_err(|e| ControlError::Unavailable(e.to_string()))
    }
}

/// Forwards the channel's commands to the control loop until the node stops.
/// `_subscriptions` keeps the inbox's sending side alive as long as the task runs.
async fn listen(
    mut inbox: Inbox,
    events: mpsc::UnboundedSender<ControlEvent>,
    stop: CancellationToken,
    _subscriptions: teamhub_redis::Subscriptions,
) {
    loop {
        let delivery = tokio::select! {
            () = stop.cancelled() => return,
            d = inbox.recv() => d,
        };
        let event = match delivery {
            None => return,
            Some(Delivery::Resubscribed { .. }) => ControlEvent::Resubscribed,
            Some(Delivery::Message { payload, .. }) => {
                match serde_json::from_slice::<Logged>(&payload) {
                    Ok(cmd) => ControlEvent::Command(cmd),
                    // A newer node's command this one does not know: skip it.
                    Err(e) => {
                        tracing::warn!(error = %e, "undecodable control command");
                        continue;
                    }
                }
            }
        };
        if events.send(event).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Command;
    use super::*;

    #[test]
    fn wire_format() {
        let cmd = Command::KeyDeleted {
            team: "t".try_into().unwrap(),
            id: "abc".into(),
        };
        let text = serde_json::to_string(&cmd).unwrap();
        assert_eq!(text, r#"{"op":"key_deleted","team":"t","id":"abc"}"#);
        assert_eq!(serde_json::from_str::<Command>(&text).unwrap(), cmd);
        let revoked: Command =
            serde_json::from_str(r#"{"op":"revoked","team":"t","user":"u","at_micros":5}"#)
                .unwrap();
        assert!(matches!(revoked, Command::Revoked { at_micros: 5, .. }));
        // With its log position; a node that does not know `seq` still reads the command.
        let logged = Logged {
            command: cmd.clone(),
            seq: Some(7),
        };
        let text = serde_json::to_string(&logged).unwrap();
        assert_eq!(
            text,
            r#"{"op":"key_deleted","team":"t","id":"abc","seq":7}"#
        );
        assert_eq!(serde_json::from_str::<Logged>(&text).unwrap(), logged);
        assert_eq!(serde_json::from_str::<Command>(&text).unwrap(), cmd);
        let old: Logged =
            serde_json::from_str(r#"{"op":"key_deleted","team":"t","id":"abc"}"#).unwrap();
        assert_eq!(old, Logged::unlogged(cmd));
    }
}
