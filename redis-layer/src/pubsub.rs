//! One pub/sub connection per node (per shard in cluster mode), multiplexing every
//! channel the node listens to.
//!
//! The connection speaks RESP3, so messages and subscription confirmations arrive as
//! pushes on one ordered stream. One dispatcher task reads it and routes each push to
//! the inbox of the listener that subscribed the channel (the broker, presence or
//! control), so per channel the inbox sees exactly the server's order.
//!
//! Reconnects, failovers and slot moves: the client library resubscribes what it
//! tracks after a reconnect or a topology change, and the server confirms each
//! channel again. A confirmation for a channel that was already confirmed is therefore
//! a *re*subscription: the dispatcher turns it into [`Delivery::Resubscribed`], in
//! order with the channel's messages, and the owner fills whatever it missed from
//! history at exactly that point. An unsolicited `sunsubscribe` (the server dropped a
//! sharded subscription because its slot moved) is answered by subscribing again,
//! which the library routes to the slot's new owner; its confirmation becomes a
//! `Resubscribed` the same way.
//!
//! A spurious `Resubscribed` (say, after a quick unsubscribe and subscribe of the same
//! channel) costs its owner one history read and never loses a message, so the
//! dispatcher errs that way.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use redis::aio::ConnectionManager;
use redis::cluster_async::ClusterConnection;
use redis::{PushInfo, PushKind, Value};
use tokio::sync::mpsc;

use crate::{Mode, Redis, RedisError};

/// How often the pub/sub connection is pinged, so a dead one is noticed (and replaced
/// by the client library) although no message arrives.
const HEALTH_PING: Duration = Duration::from_secs(5);
/// Waits between attempts to resubscribe a channel the server dropped.
const RESUBSCRIBE_RETRY: Duration = Duration::from_millis(200);
const RESUBSCRIBE_ATTEMPTS: u32 = 50;

/// What a channel is for, which decides how it is subscribed and published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelKind {
    /// A team's channel: all its traffic stays on the team's shard (sharded pub/sub in
    /// cluster mode).
    Team,
    /// Reaches every node of the hub (the control channel): plain pub/sub, which a
    /// cluster forwards to every shard.
    Broadcast,
}

impl ChannelKind {
    fn sharded(self, mode: Mode) -> bool {
        self == ChannelKind::Team && mode == Mode::Cluster
    }

    /// The publish command for this kind of channel in `mode`.
    pub fn publish_command(self, mode: Mode) -> &'static str {
        if self.sharded(mode) {
            "SPUBLISH"
        } else {
            "PUBLISH"
        }
    }
}

/// What arrives in an [`Inbox`], in the server's order per channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    Message {
        channel: Arc<str>,
        payload: Bytes,
    },
    /// The channel was subscribed again after a reconnect, failover or slot move:
    /// messages published while it was not may be missing before the next one.
    Resubscribed {
        channel: Arc<str>,
    },
}

/// Where a listener's deliveries arrive.
#[derive(Debug)]
pub struct Inbox {
    rx: mpsc::UnboundedReceiver<Delivery>,
}

impl Inbox {
    /// The next delivery; `None` once Redis and every [`Subscriptions`] handle are gone.
    pub async fn recv(&mut self) -> Option<Delivery> {
        self.rx.recv().await
    }
}

/// Subscribes channels for one listener; its deliveries go to that listener's inbox.
#[derive(Clone)]
pub struct Subscriptions {
    redis: Redis,
    owner: u64,
    to: mpsc::UnboundedSender<Delivery>,
}

impl std::fmt::Debug for Subscriptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscriptions")
            .field("owner", &self.owner)
            .finish_non_exhaustive()
    }
}

impl Subscriptions {
    /// Subscribes `channel` and returns once the server confirmed it, so every message
    /// published afterwards reaches the inbox.
    pub async fn subscribe(&self, channel: &str, kind: ChannelKind) -> Result<(), RedisError> {
        let pubsub = self.redis.pubsub();
        let channel: Arc<str> = channel.into();
        {
            let mut routes = pubsub.routes.lock().unwrap();
            if let Some(r) = routes.get(&channel)
                && r.owner != self.owner
            {
                return Err(RedisError::Config(format!(
                    "channel {channel} is already subscribed by another listener"
                )));
            }
            routes.insert(
                channel.clone(),
                Route {
                    owner: self.owner,
                    kind,
                    to: self.to.clone(),
                    confirmed: false,
                },
            );
        }
        let result = self
            .redis
            .bounded(pubsub.conn.command(&channel, kind, true, pubsub.mode))
            .await;
        if result.is_err() {
            pubsub.forget(&channel, self.owner);
        }
        result
    }

    /// Stops listening to `channel`. Messages still in flight for it are dropped.
    pub async fn unsubscribe(&self, channel: &str, kind: ChannelKind) -> Result<(), RedisError> {
        let pubsub = self.redis.pubsub();
        pubsub.forget(channel, self.owner);
        self.redis
            .bounded(pubsub.conn.command(channel, kind, false, pubsub.mode))
            .await
    }
}

struct Route {
    owner: u64,
    kind: ChannelKind,
    to: mpsc::UnboundedSender<Delivery>,
    /// The server confirmed the subscription; another confirmation is a resubscription.
    confirmed: bool,
}

type Routes = Arc<Mutex<HashMap<Arc<str>, Route>>>;

/// The pub/sub connection of one mode.
pub(crate) enum SubConn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl SubConn {
    async fn command(
        &self,
        channel: &str,
        kind: ChannelKind,
        subscribe: bool,
        mode: Mode,
    ) -> redis::RedisResult<()> {
        match (self, kind.sharded(mode), subscribe) {
            (SubConn::Single(c), _, true) => c.clone().subscribe(channel).await,
            (SubConn::Single(c), _, false) => c.clone().unsubscribe(channel).await,
            (SubConn::Cluster(c), true, true) => c.clone().ssubscribe(channel).await,
            (SubConn::Cluster(c), true, false) => c.clone().sunsubscribe(channel).await,
            (SubConn::Cluster(c), false, true) => c.clone().subscribe(channel).await,
            (SubConn::Cluster(c), false, false) => c.clone().unsubscribe(channel).await,
        }
    }

    /// Each `PING` bounded by `limit` (the command connections' check, on these).
    async fn ping(&self, limit: Duration) -> Result<(), String> {
        let mut conn = match self {
            SubConn::Single(c) => crate::Commands::single(c.clone()),
            SubConn::Cluster(c) => crate::Commands::cluster(c.clone()),
        };
        conn.ping_all(limit).await
    }
}

pub(crate) struct PubSub {
    conn: Arc<SubConn>,
    mode: Mode,
    routes: Routes,
    next_owner: AtomicU64,
}

impl PubSub {
    /// Starts the dispatcher over `pushes`, the connection's push stream.
    pub(crate) fn start(
        conn: SubConn,
        mode: Mode,
        pushes: mpsc::UnboundedReceiver<PushInfo>,
        op_timeout: Duration,
    ) -> Self {
        let conn = Arc::new(conn);
        let routes = Routes::default();
        let dispatcher = Dispatcher {
            conn: Arc::downgrade(&conn),
            mode,
            routes: routes.clone(),
            op_timeout,
        };
        tokio::spawn(dispatcher.run(pushes));
        tokio::spawn(health(Arc::downgrade(&conn), op_timeout));
        PubSub {
            conn,
            mode,
            routes,
            next_owner: AtomicU64::new(1),
        }
    }

    pub(crate) fn listen(&self, redis: Redis) -> (Subscriptions, Inbox) {
        let (to, rx) = mpsc::unbounded_channel();
        let owner = self.next_owner.fetch_add(1, Ordering::Relaxed);
        (Subscriptions { redis, owner, to }, Inbox { rx })
    }

    pub(crate) async fn ping(&self, limit: Duration) -> Result<(), String> {
        self.conn.ping(limit).await
    }

    fn forget(&self, channel: &str, owner: u64) {
        let mut routes = self.routes.lock().unwrap();
        if routes.get(channel).is_some_and(|r| r.owner == owner) {
            routes.remove(channel);
        }
    }
}

/// Pings the pub/sub connection now and then; the library replaces a broken one.
async fn health(conn: Weak<SubConn>, op_timeout: Duration) {
    let mut tick = tokio::time::interval(HEALTH_PING);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(conn) = conn.upgrade() else { return };
        if let Err(e) = conn.ping(op_timeout).await {
            tracing::warn!(error = %e, "redis pub/sub connection failed its ping");
        }
    }
}

struct Dispatcher {
    conn: Weak<SubConn>,
    mode: Mode,
    routes: Routes,
    op_timeout: Duration,
}

impl Dispatcher {
    async fn run(self, mut pushes: mpsc::UnboundedReceiver<PushInfo>) {
        while let Some(push) = pushes.recv().await {
            self.on_push(push);
        }
    }

    fn on_push(&self, push: PushInfo) {
        let mut data = push.data.into_iter();
        let channel = data.next().and_then(bytes_of);
        match (push.kind, channel) {
            (PushKind::Message | PushKind::SMessage, Some(channel)) => {
                let Some(payload) = data.next().and_then(bytes_of) else {
                    return;
                };
                let routes = self.routes.lock().unwrap();
                if let Some(r) = std::str::from_utf8(&channel)
                    .ok()
                    .and_then(|c| routes.get_key_value(c))
                {
                    let _ = r.1.to.send(Delivery::Message {
                        channel: r.0.clone(),
                        payload,
                    });
                }
            }
            (PushKind::Subscribe | PushKind::SSubscribe, Some(channel)) => {
                let mut routes = self.routes.lock().unwrap();
                let Some((name, route)) = std::str::from_utf8(&channel)
                    .ok()
                    .and_then(|c| routes.get_key_value(c))
                    .map(|(k, _)| k.clone())
                    .and_then(|k| routes.get_mut(&k).map(|r| (k, r)))
                else {
                    return;
                };
                if route.confirmed {
                    tracing::info!(channel = %name, "redis channel resubscribed");
                    let _ = route.to.send(Delivery::Resubscribed { channel: name });
                } else {
                    route.confirmed = true;
                }
            }
            (PushKind::SUnsubscribe | PushKind::Unsubscribe, Some(channel)) => {
                // Our own unsubscribes forget the route first, so a route still here
                // means the server dropped a channel we want (its slot moved).
                let wanted = {
                    let routes = self.routes.lock().unwrap();
                    std::str::from_utf8(&channel)
                        .ok()
                        .and_then(|c| routes.get_key_value(c))
                        .map(|(k, r)| (k.clone(), r.kind, r.owner))
                };
                if let Some((channel, kind, owner)) = wanted {
                    tracing::info!(%channel, "redis dropped a subscription; subscribing again");
                    tokio::spawn(resubscribe(
                        self.conn.clone(),
                        self.routes.clone(),
                        self.mode,
                        channel,
                        kind,
                        owner,
                        self.op_timeout,
                    ));
                }
            }
            (PushKind::Disconnection, _) => {
                tracing::warn!(
                    "redis pub/sub connection lost; the client reconnects and resubscribes"
                );
            }
            _ => {}
        }
    }
}

/// Subscribes a dropped channel again until it works or nobody wants it any more.
async fn resubscribe(
    conn: Weak<SubConn>,
    routes: Routes,
    mode: Mode,
    channel: Arc<str>,
    kind: ChannelKind,
    owner: u64,
    op_timeout: Duration,
) {
    for _ in 0..RESUBSCRIBE_ATTEMPTS {
        let still_wanted = routes
            .lock()
            .unwrap()
            .get(&channel)
            .is_some_and(|r| r.owner == owner);
        let Some(conn) = conn.upgrade() else { return };
        if !still_wanted {
            return;
        }
        let sent = tokio::time::timeout(op_timeout, conn.command(&channel, kind, true, mode)).await;
        match sent {
            Ok(Ok(())) => return,
            Ok(Err(e)) => tracing::warn!(%channel, error = %e, "resubscribing failed; retrying"),
            Err(_) => tracing::warn!(%channel, "resubscribing timed out; retrying"),
        }
        drop(conn);
        tokio::time::sleep(RESUBSCRIBE_RETRY).await;
    }
    tracing::error!(%channel, "could not resubscribe a channel redis dropped");
}

fn bytes_of(v: Value) -> Option<Bytes> {
    match v {
        Value::BulkString(b) => Some(Bytes::from(b)),
        Value::SimpleString(s) => Some(Bytes::from(s)),
        _ => None,
    }
}
