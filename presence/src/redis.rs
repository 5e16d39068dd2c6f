//! Presence shared by a cluster of nodes through one Redis.
//!
//! Why it is built this way:
//!
//! - **One Lua script per change.** A join or leave updates the team's connections, the
//!   per-user counts and (only on a user-level change) the team's version, and PUBLISHes
//!   the event, all in one script (see `scripts.rs`). Redis runs scripts one at a time, so
//!   every node sees the same history, and the event order on the team's channel is the
//!   version order: the "emit from inside the critical section" rule of
//!   [`PresenceStore`], stretched across processes.
//! - **Events travel by pub/sub, to the nodes that care.** The store listens on the
//!   node's one pub/sub connection (the Redis layer, `teamhub-redis`; sharded pub/sub
//!   in a Redis Cluster). Whether this node hosts a team is not decided here: the hub's
//!   hosting owner calls [`PresenceStore::host`] before the team's first local join
//!   (SUBSCRIBE, confirmed before it returns, so this node sees its own join) and
//!   [`PresenceStore::unhost`] after its last local leave (UNSUBSCRIBE), one at a time
//!   per team under its lock. Redis delivers one channel's messages in publish order, and
//!   the subscriber task forwards them to the node's channel in the order received, so
//!   each node gets every event of the teams it hosts in version order. `join` and
//!   `leave` return only once their own event has been forwarded (bounded by
//!   [`DELIVERY_WAIT`]), as with the in-process store. Subscription changes are made by
//!   that single task, in the order they were asked for.
//! - **Connections expire unless refreshed.** Each connection has an expiry (Redis time,
//!   so node clocks do not matter). A background task refreshes this node's connections
//!   every TTL/3 and sweeps the teams it hosts: the sweep is a script that removes expired
//!   connections and announces the resulting leaves, so two nodes sweeping at once cannot
//!   both announce one leave. When a node dies without a word, its connections expire
//!   after at most one TTL and the next sweep of a surviving node (at most TTL/3 later)
//!   announces the leaves: well within two TTLs. Join and snapshot sweep too, so a team
//!   that no node hosts any more still never shows a user forever.
//! - **Self-repair.** If this node could not refresh in time (a Redis outage longer than
//!   the TTL) and its live connections were swept, the next refresh finds them missing
//!   and joins them again (announced as joins, since the leaves were announced).
//! - **Failures err towards "offline".** Redis unreachable gives
//!   [`PresenceError::Unavailable`] and Redis is left as it was. A command that times out
//!   may still have been applied; it is reported the same way and is safe to retry (joins
//!   and leaves are idempotent). Either way this node stops refreshing a connection
//!   whose first join failed, or whose leave was asked for (failed or not), so if Redis
//!   did record it, it expires within the TTL: no connection stays online because a
//!   call failed.
//! - **Reconnection catches up.** The subscriber keeps, per hosted team, the users online
//!   as of the last event (seeded by a snapshot when it subscribes). When the layer
//!   reports a team's channel resubscribed (a reconnect, failover or slot move), the
//!   subscriber reads a snapshot and announces the
//!   difference as one event numbered by the snapshot's version (origin
//!   `<node>/`[`CATCH_UP_CONN`]); events at or below a version already forwarded are
//!   dropped, so nothing is announced twice or out of order. Changes that cancel out
//!   while disconnected (a leave and a rejoin) are not announced, like any snapshot.
//!
//! Limits: Redis losing its data (a restart without persistence) loses who
//! was online: the refresh loop re-joins this node's live connections (announced as
//! joins), and versions restart from Redis time in microseconds, above any version seen
//! before, so nodes do not drop the new events as old. Versions are therefore large,
//! sparse numbers, unlike the in-process store's 1, 2, 3; only their order means
//! anything.

mod scripts;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use teamhub_protocol::{PresenceEntry, TeamId, UserId};
use teamhub_redis::{ChannelKind, Delivery, Inbox, Redis, Subscriptions};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::{
    Change, ConnInfo, ConnKey, Occupancy, PresenceError, PresenceEvent, PresenceStore, Snapshot,
};

use scripts::Scripts;

/// Longest wait for a SUBSCRIBE to be confirmed before a join gives up.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait, after a change, for its own event to come back through pub/sub. Past
/// it the change stands (it is in Redis) and the call returns anyway.
pub const DELIVERY_WAIT: Duration = Duration::from_secs(5);
/// Shortest refresh/sweep period, whatever the TTL.
const MIN_PERIOD: Duration = Duration::from_millis(10);

/// Presence in Redis, shared by every node of a cluster. See the module docs.
///
/// Construct it with [`RedisPresence::connect`]; it spawns two background tasks (the
/// subscriber and the refresh/sweep loop) that stop on [`RedisPresence::shutdown`] or
/// when the store is dropped. Stopping them without leaving is exactly what a crash
/// looks like to the rest of the cluster: this node's users leave within two TTLs.
pub struct RedisPresence {
    inner: Arc<Inner>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl fmt::Debug for RedisPresence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisPresence")
            .field("node", &self.inner.node)
            .field("prefix", &self.inner.prefix)
            .field("ttl", &self.inner.ttl)
            .finish_non_exhaustive()
    }
}

/// A connection joined through this node.
struct LocalConn {
    info: ConnInfo,
    /// False while its join or leave script is in flight: the refresh loop neither
    /// refreshes nor repairs it then (a repair would resurrect a connection that is
    /// leaving).
    live: bool,
}

struct Inner {
    redis: Redis,
    scripts: Scripts,
    prefix: String,
    node: Arc<str>,
    ttl: Duration,
    /// Team -> the connections this node joined to it: what the refresh loop refreshes,
    /// repairs and sweeps. A std mutex: never held across `.await`.
    local: Mutex<HashMap<TeamId, HashMap<ConnKey, LocalConn>>>,
    /// Requests to the subscriber task.
    subs: mpsc::UnboundedSender<SubCmd>,
    /// Team -> highest version forwarded to the node: what `await_delivered` waits for,
    /// and the filter that drops events a catch-up already covered.
    delivered: Mutex<HashMap<TeamId, u64>>,
    /// Ticks on every forwarded event, to wake `await_delivered`.
    delivered_tick: watch::Sender<()>,
    events: mpsc::UnboundedSender<PresenceEvent>,
}

/// What the subscriber task is asked to do.
enum SubCmd {
    /// Subscribe to the team's channel (if not yet) and acknowledge once confirmed.
    Host {
        team: TeamId,
        ack: oneshot::Sender<Result<(), String>>,
    },
    /// Unsubscribe from the team's channel.
    Unhost { team: TeamId },
    /// Retry a catch-up that failed, if the team is still hosted and stale.
    CatchUp { team: TeamId },
}

fn unavailable(e: impl fmt::Display) -> PresenceError {
    PresenceError::Unavailable(e.to_string())
}

fn conn_key_str(key: &ConnKey) -> String {
    format!("{}:{}", key.conn, key.node)
}

fn parse_conn_key(s: &str) -> Option<ConnKey> {
    let (conn, node) = s.split_once(':')?;
    Some(ConnKey {
        node: node.into(),
        conn: conn.parse().ok()?,
    })
}

fn parse_entry(json: &str) -> Result<Option<PresenceEntry>, PresenceError> {
    if json.is_empty() {
        return Ok(None);
    }
    serde_json::from_str(json)
        .map(Some)
        .map_err(|e| unavailable(format!("bad presence entry from Redis: {e}")))
}

/// An event as the scripts PUBLISH it.
#[derive(Deserialize)]
struct WireEvent {
    team: String,
    v: u64,
    origin: String,
    joins: Vec<PresenceEntry>,
    leaves: Vec<PresenceEntry>,
    #[serde(default)]
    occupancy: Option<String>,
}

impl WireEvent {
    fn into_event(self) -> Option<PresenceEvent> {
        Some(PresenceEvent {
            team: TeamId::new(&self.team).ok()?,
            version: self.v,
            origin: parse_conn_key(&self.origin)?,
            joins: self.joins,
            leaves: self.leaves,
            occupancy: self.occupancy.as_deref().and_then(Occupancy::parse),
        })
    }
}

impl Inner {
    fn channel(&self, team: &TeamId) -> String {
        format!("{}:{{{}}}:events", self.prefix, team.as_str())
    }

    /// The team whose channel is `channel` (the inverse of [`Inner::channel`]).
    fn team_of(&self, channel: &str) -> Option<TeamId> {
        let team = channel
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix(":{")?
            .strip_suffix("}:events")?;
        TeamId::new(team).ok()
    }

    fn keys(&self, team: &TeamId) -> [String; 8] {
        let base = format!("{}:{{{}}}", self.prefix, team.as_str());
        [
            "conn_user",
            "conn_meta",
            "conn_seq",
            "conn_exp",
            "user_count",
            "user_name",
            "version",
            "seq",
        ]
        .map(|k| format!("{base}:{k}"))
    }

    fn ttl_ms(&self) -> u64 {
        u64::try_from(self.ttl.as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    /// Runs one Redis operation with the layer's timeout.
    async fn bounded<T>(
        &self,
        op: impl Future<Output = ::redis::RedisResult<T>>,
    ) -> Result<T, PresenceError> {
        self.redis.bounded(op).await.map_err(unavailable)
    }

    async fn run_join(&self, team: &TeamId, info: &ConnInfo) -> Result<Change, PresenceError> {
        let meta = match &info.meta {
            Some(m) => serde_json::to_string(m).map_err(unavailable)?,
            None => String::new(),
        };
        let mut conn = self.redis.commands();
        let mut inv = self.scripts.join.prepare_invoke();
        inv.key(&self.keys(team))
            .arg(self.channel(team))
            .arg(team.as_str())
            .arg(conn_key_str(&info.key))
            .arg(info.user.as_str())
            .arg(if info.name.is_some() { "1" } else { "0" })
            .arg(info.name.as_deref().unwrap_or(""))
            .arg(meta)
            .arg(self.ttl_ms());
        let (version, joined, left, occupancy): (u64, String, String, String) =
            self.bounded(inv.invoke_async(&mut conn)).await?;
        Ok(Change {
            version,
            joined: parse_entry(&joined)?,
            left: parse_entry(&left)?,
            occupancy: Occupancy::parse(&occupancy),
        })
    }

    async fn run_leave(&self, team: &TeamId, key: &ConnKey) -> Result<Change, PresenceError> {
        let mut conn = self.redis.commands();
        let mut inv = self.scripts.leave.prepare_invoke();
        inv.key(&self.keys(team))
            .arg(self.channel(team))
            .arg(team.as_str())
            .arg(conn_key_str(key));
        let (version, left, occupancy): (u64, String, String) =
            self.bounded(inv.invoke_async(&mut conn)).await?;
        Ok(Change {
            version,
            joined: None,
            left: parse_entry(&left)?,
            occupancy: Occupancy::parse(&occupancy),
        })
    }

    async fn run_snapshot(&self, team: &TeamId) -> Result<Snapshot, PresenceError> {
        let mut conn = self.redis.commands();
        let mut inv = self.scripts.snapshot.prepare_invoke();
        inv.key(&self.keys(team))
            .arg(self.channel(team))
            .arg(team.as_str());
        let (version, entries): (u64, String) = self.bounded(inv.invoke_async(&mut conn)).await?;
        let mut entries: Vec<PresenceEntry> = serde_json::from_str(&entries)
            .map_err(|e| unavailable(format!("bad snapshot from Redis: {e}")))?;
        entries.sort_by(|a, b| a.user.cmp(&b.user));
        Ok(Snapshot { version, entries })
    }

    /// Refreshes the given connections; returns those Redis no longer has.
    async fn run_refresh(
        &self,
        team: &TeamId,
        keys: &[ConnKey],
    ) -> Result<Vec<ConnKey>, PresenceError> {
        let mut conn = self.redis.commands();
        let mut inv = self.scripts.refresh.prepare_invoke();
        inv.key(&self.keys(team)).arg(self.ttl_ms());
        for k in keys {
            inv.arg(conn_key_str(k));
        }
        let missing: Vec<String> = self.bounded(inv.invoke_async(&mut conn)).await?;
        Ok(missing.iter().filter_map(|s| parse_conn_key(s)).collect())
    }

    async fn run_sweep(&self, team: &TeamId) -> Result<u64, PresenceError> {
        let mut conn = self.redis.commands();
        let mut inv = self.scripts.sweep.prepare_invoke();
        inv.key(&self.keys(team))
            .arg(self.channel(team))
            .arg(team.as_str());
        self.bounded(inv.invoke_async(&mut conn)).await
    }

    /// Asks the subscriber task to subscribe to `team` (this node hosts it) and waits for
    /// the confirmation, so the events of the changes about to be made reach this node.
    async fn subscribe(&self, team: &TeamId) -> Result<(), PresenceError> {
        let (tx, rx) = oneshot::channel();
        self.subs
            .send(SubCmd::Host {
                team: team.clone(),
                ack: tx,
            })
            .map_err(|_| unavailable("the presence subscriber has stopped"))?;
        match tokio::time::timeout(SUBSCRIBE_TIMEOUT, rx).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(PresenceError::Unavailable(e)),
            Ok(Err(_)) => Err(unavailable("the presence subscriber has stopped")),
            Err(_) => Err(unavailable(format!(
                "SUBSCRIBE not confirmed within {SUBSCRIBE_TIMEOUT:?}"
            ))),
        }
    }

    /// Asks the subscriber task for `cmd`, without waiting. A stopped task has nothing
    /// left to listen to.
    fn ask(&self, cmd: SubCmd) {
        let _ = self.subs.send(cmd);
    }

    fn delivered(&self, team: &TeamId) -> u64 {
        let d = self.delivered.lock().unwrap_or_else(|e| e.into_inner());
        d.get(team).copied().unwrap_or(0)
    }

    /// Waits until the event of `version` (or a later one) of `team` has been forwarded.
    async fn await_delivered(&self, team: &TeamId, version: u64) {
        let mut tick = self.delivered_tick.subscribe();
        let deadline = tokio::time::Instant::now() + DELIVERY_WAIT;
        loop {
            tick.borrow_and_update();
            // Delivered, or nobody left to deliver it (the store was shut down).
            if self.delivered(team) >= version || self.subs.is_closed() {
                return;
            }
            match tokio::time::timeout_at(deadline, tick.changed()).await {
                Ok(Ok(())) => {}
                // Timed out or the subscriber is gone: the change stands regardless.
                _ => {
                    tracing::warn!(
                        team = team.as_str(),
                        version,
                        "presence event not seen back within {DELIVERY_WAIT:?}"
                    );
                    return;
                }
            }
        }
    }
}

impl RedisPresence {
    /// Starts presence on the node's Redis layer, with its background tasks.
    ///
    /// - `prefix` starts every key and channel name (one per cluster; tests use unique
    ///   ones to stay apart).
    /// - `node` is this node's id (the origin of its catch-up events; connection keys
    ///   carry their own node).
    /// - `ttl` is how long a connection outlives its node's last refresh
    ///   (`--presence-ttl`); the node refreshes every TTL/3.
    /// - `events` receives every presence event of the teams this node hosts, in
    ///   version order per team, whichever node made the change.
    ///
    /// Fails with [`PresenceError::Unavailable`] when Redis cannot be reached. Must be
    /// called inside a tokio runtime.
    pub async fn connect(
        redis: &Redis,
        prefix: &str,
        node: &str,
        ttl: Duration,
        events: mpsc::UnboundedSender<PresenceEvent>,
    ) -> Result<Self, PresenceError> {
        redis.ping().await.map_err(unavailable)?;
        let (subscriptions, inbox) = redis.listen();
        let (subs, cmds) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            redis: redis.clone(),
            scripts: Scripts::new(redis.team_publish()),
            prefix: prefix.to_owned(),
            node: node.into(),
            ttl,
            local: Mutex::new(HashMap::new()),
            subs,
            delivered: Mutex::new(HashMap::new()),
            delivered_tick: watch::Sender::new(()),
            events,
        });
        let subscriber = tokio::spawn(
            Subscriber {
                inner: inner.clone(),
                subscriptions,
                teams: HashMap::new(),
            }
            .run(inbox, cmds),
        );
        let maintenance = tokio::spawn(maintain(inner.clone()));
        Ok(Self {
            inner,
            tasks: Mutex::new(vec![subscriber, maintenance]),
        })
    }

    /// This node's id.
    pub fn node(&self) -> &str {
        &self.inner.node
    }

    /// Stops the background tasks (refresh, sweep, subscriber) without leaving: a
    /// draining node leaves its connections first, then calls this. Idempotent; also
    /// done on drop. Afterwards `host` fails with `Unavailable`; `leave` and `snapshot`
    /// still work, but no event is forwarded any more.
    pub fn shutdown(&self) {
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for task in tasks {
            task.abort();
        }
    }

    /// Runs one refresh-and-sweep round now, as the background task does every TTL/3.
    pub async fn maintain_once(&self) {
        maintain_round(&self.inner).await;
    }
}

impl Drop for RedisPresence {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[async_trait]
impl PresenceStore for RedisPresence {
    async fn host(&self, team: &TeamId) -> Result<(), PresenceError> {
        self.inner.subscribe(team).await
    }

    async fn unhost(&self, team: &TeamId) {
        self.inner.ask(SubCmd::Unhost { team: team.clone() });
    }

    async fn join(&self, team: &TeamId, conn: ConnInfo) -> Result<Change, PresenceError> {
        let inner = &self.inner;
        // Recorded before the script runs (not live yet: the refresh loop leaves it
        // alone until the join has succeeded). `previous` is what to restore if the join
        // fails.
        let previous = {
            let mut local = inner.local.lock().unwrap_or_else(|e| e.into_inner());
            let conns = local.entry(team.clone()).or_default();
            match conns.get_mut(&conn.key) {
                Some(c) => Some(std::mem::replace(&mut c.info, conn.clone())),
                None => {
                    conns.insert(
                        conn.key.clone(),
                        LocalConn {
                            info: conn.clone(),
                            live: false,
                        },
                    );
                    None
                }
            }
        };
        match inner.run_join(team, &conn).await {
            Ok(change) => {
                {
                    let mut local = inner.local.lock().unwrap_or_else(|e| e.into_inner());
                    if let Some(c) = local.get_mut(team).and_then(|t| t.get_mut(&conn.key)) {
                        c.live = true;
                    }
                }
                if change.joined.is_some() || change.left.is_some() {
                    inner.await_delivered(team, change.version).await;
                }
                Ok(change)
            }
            Err(e) => {
                match previous {
                    None => remove_local(inner, team, &conn.key),
                    Some(info) => {
                        let mut local = inner.local.lock().unwrap_or_else(|e| e.into_inner());
                        if let Some(c) = local.get_mut(team).and_then(|t| t.get_mut(&conn.key)) {
                            c.info = info;
                        }
                    }
                }
                Err(e)
            }
        }
    }

    async fn leave(&self, team: &TeamId, key: &ConnKey) -> Result<Change, PresenceError> {
        let inner = &self.inner;
        let (is_local, subscribed) = {
            let mut local = inner.local.lock().unwrap_or_else(|e| e.into_inner());
            let conns = local.get_mut(team);
            // A team with connections joined here is hosted, so subscribed to.
            let subscribed = conns.as_ref().is_some_and(|t| !t.is_empty());
            // Not live any more: the refresh loop must neither refresh nor repair it.
            let is_local = conns
                .and_then(|t| t.get_mut(key))
                .map(|c| c.live = false)
                .is_some();
            (is_local, subscribed)
        };
        let result = inner.run_leave(team, key).await;
        if let Ok(change) = &result {
            // Wait for our own event before possibly unsubscribing, so it is not lost.
            if change.left.is_some() && subscribed {
                inner.await_delivered(team, change.version).await;
            }
        }
        // Forgotten even when the script failed: a leave means the connection is gone,
        // so this node stops refreshing it and, if the caller never retries, it expires
        // within the TTL and a sweep announces the leave. Kept, it would stay online
        // for as long as this node lives.
        if is_local {
            remove_local(inner, team, key);
        }
        result
    }

    async fn snapshot(&self, team: &TeamId) -> Result<Snapshot, PresenceError> {
        self.inner.run_snapshot(team).await
    }
}

/// Forgets a local connection (and the team, with its last one).
fn remove_local(inner: &Inner, team: &TeamId, key: &ConnKey) {
    let mut local = inner.local.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(conns) = local.get_mut(team) {
        conns.remove(key);
        if conns.is_empty() {
            local.remove(team);
        }
    }
}

/// The connection number of catch-up events' `origin`: no real connection has it.
pub const CATCH_UP_CONN: u64 = u64::MAX;

/// What the subscriber task knows of a team it is subscribed to.
#[derive(Default)]
struct Subscribed {
    /// The users online as of `version`, kept up to date from the events, so that after
    /// a reconnection the task can announce what changed while it could not listen.
    /// `None` until a snapshot has been read.
    view: Option<(u64, BTreeMap<UserId, PresenceEntry>)>,
    /// A snapshot is still needed (just (re)subscribed, and it has not succeeded yet).
    stale: bool,
}

/// The subscriber task's state. It is the only one to change subscriptions, so they are
/// changed one at a time, and it forwards events in the order Redis delivers them.
struct Subscriber {
    inner: Arc<Inner>,
    subscriptions: Subscriptions,
    teams: HashMap<TeamId, Subscribed>,
}

impl Subscriber {
    async fn run(mut self, mut inbox: Inbox, mut cmds: mpsc::UnboundedReceiver<SubCmd>) {
        loop {
            tokio::select! {
                // Messages first: whatever Redis already delivered goes out before a
                // subscription changes.
                biased;
                delivery = inbox.recv() => match delivery {
                    None => return,
                    Some(Delivery::Message { payload, .. }) => self.forward(&payload),
                    Some(Delivery::Resubscribed { channel }) => self.resubscribed(&channel).await,
                },
                cmd = cmds.recv() => match cmd {
                    None => return,
                    Some(SubCmd::Host { team, ack }) => {
                        let result = self.host(&team).await;
                        let _ = ack.send(result.map_err(|e| e.to_string()));
                    }
                    Some(SubCmd::Unhost { team }) => {
                        if let Err(e) = self.unhost(&team).await {
                            tracing::warn!(team = team.as_str(), error = %e, "presence unsubscribe failed");
                        }
                    }
                    Some(SubCmd::CatchUp { team }) => {
                        if self.teams.get(&team).is_some_and(|t| t.stale) {
                            let _ = self.catch_up(&team).await;
                        }
                    }
                }
            }
        }
    }

    /// The layer subscribed a team's channel again (a reconnect, failover or slot
    /// move): events may have been missed, so the team catches up from a snapshot.
    async fn resubscribed(&mut self, channel: &str) {
        let Some(team) = self.inner.team_of(channel) else {
            return;
        };
        let Some(sub) = self.teams.get_mut(&team) else {
            return;
        };
        sub.stale = true;
        if let Err(e) = self.catch_up(&team).await {
            // Still stale: the maintenance round asks for it again.
            tracing::warn!(team = team.as_str(), error = %e, "presence catch-up failed; retried next round");
        }
    }

    /// Subscribes to `team`'s channel unless already subscribed, and reads the view a
    /// later catch-up compares with.
    async fn host(&mut self, team: &TeamId) -> Result<(), teamhub_redis::RedisError> {
        match self.teams.get(team).map(|t| t.stale) {
            None => {
                self.subscriptions
                    .subscribe(&self.inner.channel(team), ChannelKind::Team)
                    .await?;
                let sub = Subscribed {
                    stale: true,
                    ..Subscribed::default()
                };
                self.teams.insert(team.clone(), sub);
                // Failure leaves it stale, retried by the maintenance round; the
                // subscription, which is what the caller waits for, is in place.
                let _ = self.catch_up(team).await;
            }
            Some(true) => {
                let _ = self.catch_up(team).await;
            }
            Some(false) => {}
        }
        Ok(())
    }

    async fn unhost(&mut self, team: &TeamId) -> Result<(), teamhub_redis::RedisError> {
        if self.teams.remove(team).is_none() {
            return Ok(());
        }
        self.inner
            .delivered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(team);
        self.subscriptions
            .unsubscribe(&self.inner.channel(team), ChannelKind::Team)
            .await
    }

    fn forward(&mut self, payload: &[u8]) {
        let Ok(wire) = serde_json::from_slice::<WireEvent>(payload) else {
            return;
        };
        let Some(event) = wire.into_event() else {
            return;
        };
        if let Some(Subscribed {
            view: Some((version, view)),
            ..
        }) = self.teams.get_mut(&event.team)
            && event.version > *version
        {
            *version = event.version;
            for e in &event.leaves {
                view.remove(&e.user);
            }
            for e in &event.joins {
                view.insert(e.user.clone(), e.clone());
            }
        }
        {
            let mut d = self
                .inner
                .delivered
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let v = d.entry(event.team.clone()).or_insert(0);
            if event.version <= *v {
                // Already covered by a catch-up event.
                return;
            }
            *v = event.version;
        }
        self.emit(event);
    }

    fn emit(&self, event: PresenceEvent) {
        // A closed receiver means the node is shutting down; nobody is left to tell.
        let _ = self.inner.events.send(event);
        self.inner.delivered_tick.send_replace(());
    }

    /// Reads the team's snapshot. The first one becomes the view; a later, newer one is
    /// compared with the view and the difference announced as one event numbered by the
    /// snapshot's version, with origin `<this node>/CATCH_UP_CONN`.
    async fn catch_up(&mut self, team: &TeamId) -> Result<(), PresenceError> {
        let snap = self.inner.run_snapshot(team).await?;
        let Some(sub) = self.teams.get_mut(team) else {
            return Ok(());
        };
        sub.stale = false;
        let new: BTreeMap<UserId, PresenceEntry> = snap
            .entries
            .into_iter()
            .map(|e| (e.user.clone(), e))
            .collect();
        let old = match sub.view.take() {
            None => {
                sub.view = Some((snap.version, new));
                return Ok(());
            }
            Some((version, old)) if version >= snap.version => {
                sub.view = Some((version, old));
                return Ok(());
            }
            Some((_, old)) => old,
        };
        let joins: Vec<_> = new
            .values()
            .filter(|e| !old.contains_key(&e.user))
            .cloned()
            .collect();
        let leaves: Vec<_> = old
            .into_values()
            .filter(|e| !new.contains_key(&e.user))
            .map(|e| PresenceEntry {
                conns: 0,
                meta: None,
                ..e
            })
            .collect();
        sub.view = Some((snap.version, new));
        let advanced = {
            let mut d = self
                .inner
                .delivered
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let v = d.entry(team.clone()).or_insert(0);
            let advanced = snap.version > *v;
            *v = (*v).max(snap.version);
            advanced
        };
        if advanced && !(joins.is_empty() && leaves.is_empty()) {
            self.emit(PresenceEvent {
                team: team.clone(),
                version: snap.version,
                origin: ConnKey {
                    node: self.inner.node.clone(),
                    conn: CATCH_UP_CONN,
                },
                joins,
                leaves,
                occupancy: None,
            });
        }
        Ok(())
    }
}

/// The refresh/sweep task: one round every TTL/3.
async fn maintain(inner: Arc<Inner>) {
    let period = (inner.ttl / 3).max(MIN_PERIOD);
    let mut every = tokio::time::interval(period);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    every.tick().await; // the first tick is immediate; the joins just set the expiry
    loop {
        every.tick().await;
        maintain_round(&inner).await;
    }
}

/// Refreshes this node's live connections, re-joins any that were swept meanwhile, and
/// sweeps every team this node hosts. Errors are left for the next round: a refresh
/// that keeps failing ends, as it should, with this node's users expiring.
async fn maintain_round(inner: &Inner) {
    let teams: Vec<(TeamId, Vec<ConnKey>)> = {
        let local = inner.local.lock().unwrap_or_else(|e| e.into_inner());
        local
            .iter()
            .map(|(team, conns)| {
                let live = conns
                    .iter()
                    .filter(|(_, c)| c.live)
                    .map(|(k, _)| k.clone())
                    .collect();
                (team.clone(), live)
            })
            .collect()
    };
    for (team, keys) in teams {
        let missing = if keys.is_empty() {
            Vec::new()
        } else {
            match inner.run_refresh(&team, &keys).await {
                Ok(missing) => missing,
                Err(e) => {
                    tracing::warn!(team = team.as_str(), error = %e, "presence refresh failed");
                    Vec::new()
                }
            }
        };
        for key in missing {
            let info = {
                let local = inner.local.lock().unwrap_or_else(|e| e.into_inner());
                local
                    .get(&team)
                    .and_then(|t| t.get(&key))
                    .filter(|c| c.live)
                    .map(|c| c.info.clone())
            };
            // A leave racing this re-join can leave the connection in Redis; it is no
            // longer refreshed, so it expires and is swept like a dead node's.
            if let Some(info) = info {
                tracing::warn!(team = team.as_str(), conn = ?key, "live presence connection was swept; joining it again");
                if let Err(e) = inner.run_join(&team, &info).await {
                    tracing::warn!(team = team.as_str(), error = %e, "presence re-join failed");
                }
            }
        }
        if let Err(e) = inner.run_sweep(&team).await {
            tracing::warn!(team = team.as_str(), error = %e, "presence sweep failed");
        }
        // Lets the subscriber retry a catch-up that failed.
        inner.ask(SubCmd::CatchUp { team });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conn_keys_round_trip_even_with_colons_in_the_node_id() {
        let key = ConnKey {
            node: "eu-1:pod:7".into(),
            conn: 42,
        };
        assert_eq!(parse_conn_key(&conn_key_str(&key)), Some(key));
        assert_eq!(parse_conn_key("x:node"), None);
        assert_eq!(parse_conn_key("42"), None);
    }

    #[test]
    fn wire_events_decode_into_presence_events() {
        let json = r#"{"team":"t1","v":3,"origin":"7:n1","joins":[{"user":"ann","name":null,"conns":1,"meta":{}}],"leaves":[]}"#;
        let ev = serde_json::from_str::<WireEvent>(json)
            .unwrap()
            .into_event()
            .unwrap();
        assert_eq!((ev.team.as_str(), ev.version), ("t1", 3));
        assert_eq!(ev.origin.conn, 7);
        assert_eq!(ev.joins[0].meta, Some(serde_json::Map::new()));
    }
}
