//! Cluster: commands travel on one Redis pub/sub channel, `<prefix>:control`.
//!
//! Every node keeps one subscriber connection to it (a task of its own, reconnecting
//! with backoff) and publishes through a small pool. A node receives its own commands
//! back through Redis, so every node applies them by the same path. After each
//! successful SUBSCRIBE the task emits [`ControlEvent::Resubscribed`], so whatever was
//! missed while disconnected is reloaded from the database.

use std::time::Duration;

use deadpool_redis::{PoolConfig, Runtime, Timeouts};
use futures_util::StreamExt;
use redis::AsyncCommands;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::{CancellationToken, DropGuard};

use super::{Command, Control, ControlError, ControlEvent};
use crate::broker::redis::OP_TIMEOUT;

const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often the idle subscriber connection is checked, so a half-open connection is
/// noticed although control traffic is rare.
const SUBSCRIBER_PING: Duration = Duration::from_secs(5);

pub struct RedisControl {
    pool: deadpool_redis::Pool,
    channel: String,
    /// Stops the subscriber task when the node lets go of its control handle.
    _stop: DropGuard,
}

/// The control channel of the cluster with key prefix `prefix`.
pub fn channel(prefix: &str) -> String {
    format!("{prefix}:control")
}

impl RedisControl {
    /// Connects, subscribes, and returns once the subscription is live (so no command
    /// sent after this node started is missed), or fails within [`OP_TIMEOUT`].
    pub async fn start(
        url: &str,
        prefix: &str,
        events: mpsc::UnboundedSender<ControlEvent>,
    ) -> Result<RedisControl, ControlError> {
        let unavailable = |e: &dyn std::fmt::Display| ControlError::Unavailable(e.to_string());
        let mut config = deadpool_redis::Config::from_url(url);
        config.pool = Some(PoolConfig {
            timeouts: Timeouts {
                wait: Some(OP_TIMEOUT),
                create: Some(OP_TIMEOUT),
                recycle: Some(OP_TIMEOUT),
            },
            ..PoolConfig::new(4)
        });
        let pool = config
            .create_pool(Some(Runtime::Tokio1))
            .map_err(|e| unavailable(&e))?;
        let client = redis::Client::open(url).map_err(|e| unavailable(&e))?;
        let channel = channel(prefix);
        let stop = CancellationToken::new();
        let (ready_tx, ready_rx) = oneshot::channel();
        let subscriber = Subscriber {
            client,
            channel: channel.clone(),
            events,
            stop: stop.clone(),
            ready: Some(ready_tx),
        };
        tokio::spawn(subscriber.run());
        match tokio::time::timeout(OP_TIMEOUT * 2, ready_rx).await {
            Ok(Ok(())) => Ok(RedisControl {
                pool,
                channel,
                _stop: stop.drop_guard(),
            }),
            _ => {
                stop.cancel();
                Err(ControlError::Unavailable(
                    "could not subscribe to the control channel".into(),
                ))
            }
        }
    }
}

#[async_trait::async_trait]
impl Control for RedisControl {
    async fn send(&self, command: Command) -> Result<(), ControlError> {
        let payload = serde_json::to_string(&command)
            .map_err(|e| ControlError::Unavailable(format!("encoding a command: {e}")))?;
        let publish = async {
            let mut conn = self.pool.get().await.map_err(|e| e.to_string())?;
            conn.publish::<_, _, i64>(&self.channel, payload)
                .await
                .map_err(|e| e.to_string())
        };
        match tokio::time::timeout(OP_TIMEOUT, publish).await {
            Ok(Ok(_receivers)) => Ok(()),
            Ok(Err(e)) => Err(ControlError::Unavailable(e)),
            Err(_) => Err(ControlError::Unavailable("redis publish timed out".into())),
        }
    }
}

struct Subscriber {
    client: redis::Client,
    channel: String,
    events: mpsc::UnboundedSender<ControlEvent>,
    stop: CancellationToken,
    /// Told once, after the first successful subscription.
    ready: Option<oneshot::Sender<()>>,
}

impl Subscriber {
    async fn run(mut self) {
        let mut backoff = MIN_BACKOFF;
        let stop = self.stop.clone();
        loop {
            let steady = tokio::select! {
                () = stop.cancelled() => return,
                steady = self.serve() => steady,
            };
            if steady {
                backoff = MIN_BACKOFF;
            }
            if self.events.is_closed() {
                return;
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// One connection: subscribe, then forward commands until it fails. Returns whether
    /// it had been subscribed (so the next attempt starts with a short backoff).
    async fn serve(&mut self) -> bool {
        let pubsub = match tokio::time::timeout(OP_TIMEOUT, self.client.get_async_pubsub()).await {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "control subscriber cannot connect to redis");
                return false;
            }
            Err(_) => {
                tracing::warn!("control subscriber: redis connect timed out");
                return false;
            }
        };
        let (mut sink, mut stream) = pubsub.split();
        if !matches!(
            tokio::time::timeout(OP_TIMEOUT, sink.subscribe(&self.channel)).await,
            Ok(Ok(()))
        ) {
            tracing::warn!("control subscriber: SUBSCRIBE failed");
            return false;
        }
        if self.events.send(ControlEvent::Resubscribed).is_err() {
            return true;
        }
        if let Some(ready) = self.ready.take() {
            let _ = ready.send(());
        }
        let mut health = tokio::time::interval(SUBSCRIBER_PING);
        health.tick().await;
        loop {
            tokio::select! {
                msg = stream.next() => match msg {
                    None => {
                        tracing::warn!("control subscriber connection lost; reconnecting");
                        return true;
                    }
                    Some(msg) => match serde_json::from_slice::<Command>(msg.get_payload_bytes()) {
                        Ok(cmd) => {
                            if self.events.send(ControlEvent::Command(cmd)).is_err() {
                                return true;
                            }
                        }
                        // A newer node's command this one does not know: skip it.
                        Err(e) => tracing::warn!(error = %e, "undecodable control command"),
                    },
                },
                _ = health.tick() => {
                    let pong = tokio::time::timeout(OP_TIMEOUT, sink.ping::<redis::Value>()).await;
                    if !matches!(pong, Ok(Ok(_))) {
                        tracing::warn!("control subscriber ping failed; reconnecting");
                        return true;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
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
    }
}
