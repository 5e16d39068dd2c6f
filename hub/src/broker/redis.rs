//! Cluster broker and history in Redis: every node of a cluster publishes through the
//! same Redis, so a team's offsets, epoch and history are shared, and every node that
//! hosts the team sees its messages in the same order.
//!
//! # Keys
//!
//! All keys of one team share the hash tag `{<team>}` so they live in one Redis Cluster
//! slot and one script may touch them all:
//!
//! - `<prefix>:{<team>}:meta`: a hash with `offset` (the team's latest offset) and
//!   `epoch` (a random history generation). Both live and die together, so a Redis
//!   that lost its data starts the team over at offset 1 *with a new epoch*, and a
//!   `since` from before the loss is never mistaken for a position in the new history.
//! - `<prefix>:{<team>}:history`: a list of `<ms>:<payload>` entries, oldest first,
//!   trimmed to `max_messages` and to `max_age` (by the publish-time stamp; the key
//!   also expires after `max_age` of silence).
//! - `<prefix>:{<team>}:msg`: the team's pub/sub channel.
//! - `<prefix>:{<team>}:quota:day:<YYYY-MM-DD>`: messages published that UTC day, for
//!   a team whose plan has `messages_per_day` (expires after two days).
//!
//! # One script per publish, one encoding per message
//!
//! The publishing node encodes the `message` frame once, with a placeholder offset, and
//! sends the bytes before and after the offset. One Lua script then, atomically: reads
//! the epoch (creating it if missing), increments the offset, splices it into the
//! frame, appends the entry to history, trims it to `max_messages` and `PUBLISH`es
//! (`SPUBLISH` in cluster mode) the payload: six commands. The age limit is applied
//! when history is read (the read script evicts by publish-time stamp first), so no
//! publish pays for it and no reader sees an entry past its age. Redis runs
//! scripts one at a time, so offsets are gapless and the channel carries them in
//! order. The payload is `<offset> <epoch> <echo> <conn> <len>:<node><frame>`: what a
//! receiving node needs to rebuild the [`Event`] (origin, echo, and the frame whose
//! `type`/`user`/`data` feed the seed framing) without encoding the frame again. History
//! stores the same payload, so a gap can be filled with events as complete as live ones.
//!
//! # Subscriber
//!
//! Everything goes through the node's Redis layer (`teamhub-redis`): one configuration,
//! command connections without a checkout round trip, one pub/sub connection. Publishing
//! goes through the node's publish pipeline (`publisher.rs`: one task, whatever queued
//! up sent as one pipeline, per team in cluster mode), so a connection can keep
//! publishes in flight without paying a round trip each. Receiving is one task (an
//! actor: `subscribe`/`unsubscribe` are commands to it, so no lock is shared with it and
//! none is held across `.await`) reading the broker's inbox of the layer's pub/sub
//! connection. The task remembers, per hosted team, the epoch and the last offset it
//! delivered, and hands each message to the node's channel only if it is the next one:
//!
//! - an offset already delivered is a duplicate and dropped;
//! - a jump is filled from history first (then the live message is a duplicate);
//! - when the layer reports the team's channel resubscribed (a reconnect, a failover, a
//!   slot move), what was published meanwhile is filled from history before anything
//!   newer is delivered; a fill that fails (Redis still down) is retried until it works.
//!
//! # When continuity is lost: resync
//!
//! If history no longer holds the gap, the epoch changed (Redis lost its data), or an
//! entry cannot be read, the broker cannot deliver that team's messages in order without
//! a gap, so it delivers *nothing more* for the team and sends a
//! [`BrokerEvent::Resync`] on the node's event stream, after the last message it did
//! deliver (one stream, so a resync never overtakes the messages before it). The node must then close every local
//! connection joined to that team with 1012 ("reconnect and recover with `since`"):
//! their rejoin gets `recovered: false` (the epoch changed or history is incomplete), as
//! the contract requires for clients that must reload. The team stays silent on this
//! node until it is unsubscribed (its last local connection left) and subscribed again,
//! which takes a fresh position. Nothing in the wire contract lets a connection be told
//! "reload" and keep going, and a jump or an offset going back to 1 on an open
//! connection would break the in-order, gapless invariant, so closing is the honest
//! answer. A connection that joins the team while the old ones are being closed must
//! be closed too (it would otherwise wait on a silent team); a node that wants the team
//! back at once may call `unsubscribe` then `subscribe` itself once it has closed them.
//!
//! # Failures
//!
//! `publish`, `position`, `read` and `ping` answer [`BrokerError::Unavailable`] when
//! Redis cannot be reached or does not answer within [`OP_TIMEOUT`]. A publish that
//! times out *after* Redis ran the script is reported as unavailable although it was
//! published (the usual at-least-once ambiguity of a remote call); a client that
//! retries sees two messages. `subscribe` answers `Unavailable` while Redis cannot
//! confirm the subscription, so a join fails rather than silently missing messages.
//!
//! # Redis Cluster
//!
//! Every key and the channel of a team share its hash tag, so the scripts touch one
//! slot and the team's messages travel by sharded pub/sub (`SPUBLISH` in the script,
//! `SSUBSCRIBE` by the layer): a shard carries only its own teams' traffic.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::extract::ws::Utf8Bytes;
use bytes::Bytes;
use redis::Script;
use teamhub_presence::ConnKey;
use teamhub_protocol::TeamId;
use teamhub_redis::{ChannelKind, Delivery, Inbox, Redis, Subscriptions};
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};

use super::memory::HistoryLimits;
use super::publisher::Publisher;
use super::{
    Broker, BrokerError, BrokerEvent, History, HistoryRead, Pending, Position, Publication,
    Published, Resync, ResyncReason,
};
use crate::event::{Event, encode_message};

/// How often a gap fill that failed (Redis unreachable) is tried again.
const CATCH_UP_RETRY: Duration = Duration::from_millis(500);
/// The placeholder offset the frame is encoded with before the script splices in the
/// real one. No validated id can contain it with the surrounding quotes.
const OFFSET_PLACEHOLDER: u64 = u64::MAX;

const PUBLISH_SCRIPT: &str = r"
-- KEYS: meta hash, history list, the day's message count
-- ARGV: fresh epoch, now ms, frame head, frame tail, origin/echo meta,
--       max messages, history ttl ms, channel, publish command, messages per day (0: none)
-- Six commands in the common case; the age limit is applied by every read (READ_SCRIPT),
-- so a publish only bounds the list by count and refreshes its expiry. A daily quota
-- adds one (INCR; the day's first also EXPIRE); over it, the count is put back and
-- nothing else happens.
local quota = tonumber(ARGV[10])
if quota > 0 then
  local used = redis.call('INCR', KEYS[3])
  if used == 1 then redis.call('EXPIRE', KEYS[3], 172800) end
  if used > quota then
    redis.call('DECR', KEYS[3])
    return 'quota'
  end
end
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[1]
  redis.call('HSET', KEYS[1], 'epoch', epoch)
end
local o = string.format('%d', redis.call('HINCRBY', KEYS[1], 'offset', 1))
local payload = o .. ' ' .. epoch .. ' ' .. ARGV[5] .. ARGV[3] .. o .. ARGV[4]
redis.call('RPUSH', KEYS[2], ARGV[2] .. ':' .. payload)
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[6]), -1)
redis.call('PEXPIRE', KEYS[2], ARGV[7])
redis.call(ARGV[9], ARGV[8], payload)
return o
";

const READ_SCRIPT: &str = r"
-- KEYS: meta hash, history list
-- ARGV: fresh epoch, after, limit, cutoff ms
-- Returns: epoch, latest offset, oldest offset held (latest + 1 when none), entries...
redis.call('HSETNX', KEYS[1], 'epoch', ARGV[1])
local epoch = redis.call('HGET', KEYS[1], 'epoch')
local offset = tonumber(redis.call('HGET', KEYS[1], 'offset') or '0')
local cutoff = tonumber(ARGV[4])
while true do
  local head = redis.call('LINDEX', KEYS[2], 0)
  if not head or tonumber(string.match(head, '^(%d+):')) >= cutoff then break end
  redis.call('LPOP', KEYS[2])
end
local oldest = offset + 1
local head = redis.call('LINDEX', KEYS[2], 0)
if head then oldest = tonumber(string.match(head, '^%d+:(%d+) ')) end
local out = {epoch, string.format('%d', offset), string.format('%d', oldest)}
local after = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
if after < offset and limit > 0 then
  local start = after + 1 - oldest
  if start < 0 then start = 0 end
  local entries = redis.call('LRANGE', KEYS[2], start, start + limit - 1)
  for i = 1, #entries do out[#out + 1] = entries[i] end
end
return out
";

/// Offsets, history and fan-out through Redis, for one node of a cluster.
pub struct RedisBroker {
    store: Arc<Store>,
    publisher: Publisher,
    commands: mpsc::UnboundedSender<Command>,
}

impl RedisBroker {
    /// Creates the broker on the node's Redis layer and starts its subscriber task (so
    /// it must be called inside a Tokio runtime).
    ///
    /// `prefix` starts every key and channel name (tests use a unique one each).
    /// Events go to `events`, in offset order per team, with a [`BrokerEvent::Resync`]
    /// in their place for each team whose continuity was lost.
    pub fn new(
        redis: &Redis,
        prefix: &str,
        events: mpsc::UnboundedSender<BrokerEvent>,
        limits: HistoryLimits,
    ) -> Self {
        let store = Arc::new(Store {
            redis: redis.clone(),
            prefix: prefix.to_owned(),
            limits,
            publish: Script::new(PUBLISH_SCRIPT),
            read: Script::new(READ_SCRIPT),
        });
        let (commands, commands_rx) = mpsc::unbounded_channel();
        let (subscriptions, inbox) = redis.listen();
        let subscriber = Subscriber {
            store: store.clone(),
            subscriptions,
            events,
            commands: commands_rx,
            teams: HashMap::new(),
            behind: Vec::new(),
        };
        tokio::spawn(subscriber.run(inbox));
        let publisher = Publisher::start(redis, PUBLISH_SCRIPT);
        Self {
            store,
            publisher,
            commands,
        }
    }

    async fn command(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<(), BrokerError>>) -> Command,
    ) -> Result<(), BrokerError> {
        let (tx, rx) = oneshot::channel();
        let gone = || BrokerError::Unavailable("redis subscriber stopped".into());
        self.commands.send(make(tx)).map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }
}

#[async_trait]
impl Broker for RedisBroker {
    /// Encodes the frame and queues the publish script on the node's publish pipeline
    /// (`publisher.rs`), which fixes its order; the future waits for Redis's answer.
    fn enqueue(&self, p: Publication<'_>) -> Pending {
        let ts = OffsetDateTime::now_utc();
        let wire = encode_message(&p.parts, OFFSET_PLACEHOLDER, ts);
        let Some((head, tail)) = split_at_offset(wire.as_str()) else {
            // Unreachable: the team id is validated and precedes the offset field.
            return Box::pin(std::future::ready(Err(BrokerError::Unavailable(
                "message frame without offset placeholder".into(),
            ))));
        };
        let meta = origin_meta(p.origin.as_ref(), p.echo);
        let now_ms = unix_ms(ts);
        let store = &self.store;
        let max_age_ms = store.max_age_ms();
        let team = p.parts.team;
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(store.publish.get_hash())
            .arg(3)
            .arg(store.key(team, "meta"))
            .arg(store.key(team, "history"))
            .arg(store.key(team, &day_key(ts)))
            .arg(new_epoch())
            .arg(now_ms)
            .arg(head)
            .arg(tail)
            .arg(meta)
            .arg(store.limits.max_messages.max(1))
            .arg(max_age_ms.max(1))
            .arg(store.key(team, "msg"))
            .arg(store.redis.team_publish())
            .arg(p.messages_per_day.unwrap_or(0));
        let reply = self.publisher.call(team, cmd);
        Box::pin(async move {
            let offset = reply.await?;
            if offset == "quota" {
                return Err(BrokerError::QuotaExceeded);
            }
            let offset = offset.parse().map_err(|_| {
                BrokerError::Unavailable(format!("redis returned offset {offset:?}"))
            })?;
            Ok(Published { offset, ts })
        })
    }

    async fn subscribe(&self, team: &TeamId) -> Result<(), BrokerError> {
        self.command(|reply| Command::Subscribe(team.clone(), reply))
            .await
    }

    async fn unsubscribe(&self, team: &TeamId) -> Result<(), BrokerError> {
        self.command(|reply| Command::Unsubscribe(team.clone(), reply))
            .await
    }

    async fn ping(&self) -> Result<(), BrokerError> {
        self.store.redis.ping().await.map_err(unavailable)
    }
}

#[async_trait]
impl History for RedisBroker {
    async fn position(&self, team: &TeamId) -> Result<Position, BrokerError> {
        Ok(self.store.read_raw(team, 0, 0).await?.position())
    }

    async fn read(
        &self,
        team: &TeamId,
        after: u64,
        limit: usize,
    ) -> Result<HistoryRead, BrokerError> {
        let raw = self.store.read_raw(team, after, limit).await?;
        let complete = raw.complete_after(after);
        let mut messages = Vec::with_capacity(raw.entries.len());
        for entry in &raw.entries {
            let p = parse_entry(entry).ok_or_else(|| {
                BrokerError::Unavailable(format!("unreadable history entry for {team}"))
            })?;
            messages.push(Utf8Bytes::from(p.frame.to_owned()));
        }
        Ok(HistoryRead {
            position: raw.position(),
            messages,
            complete,
        })
    }
}

/// The key suffix of a team's message count for the UTC day of `ts`.
fn day_key(ts: OffsetDateTime) -> String {
    let d = ts.date();
    format!(
        "quota:day:{:04}-{:02}-{:02}",
        d.year(),
        u8::from(d.month()),
        d.day()
    )
}

/// What the broker and its subscriber task share: Redis, key names and scripts.
struct Store {
    redis: Redis,
    prefix: String,
    limits: HistoryLimits,
    publish: Script,
    read: Script,
}

impl Store {
    fn key(&self, team: &TeamId, what: &str) -> String {
        format!("{}:{{{}}}:{what}", self.prefix, team.as_str())
    }

    fn max_age_ms(&self) -> i64 {
        i64::try_from(self.limits.max_age.as_millis()).unwrap_or(i64::MAX / 4)
    }

    /// Runs the read script: evicts by age, then returns the position and up to
    /// `limit` raw entries after `after`.
    async fn read_raw(
        &self,
        team: &TeamId,
        after: u64,
        limit: usize,
    ) -> Result<RawRead, BrokerError> {
        let now_ms = unix_ms(OffsetDateTime::now_utc());
        let mut conn = self.redis.commands();
        let reply: Vec<String> = self
            .redis
            .bounded(
                self.read
                    .key(self.key(team, "meta"))
                    .key(self.key(team, "history"))
                    .arg(new_epoch())
                    .arg(after)
                    .arg(limit.min(1 << 40))
                    .arg(now_ms - self.max_age_ms())
                    .invoke_async(&mut conn),
            )
            .await
            .map_err(unavailable)?;
        let bad = || BrokerError::Unavailable(format!("unexpected history reply for {team}"));
        let mut reply = reply.into_iter();
        let epoch = reply.next().ok_or_else(bad)?;
        let offset = reply.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
        let oldest = reply.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
        Ok(RawRead {
            epoch,
            offset,
            oldest,
            entries: reply.collect(),
        })
    }
}

/// A history read before decoding: entries are `<ms>:<payload>`.
struct RawRead {
    epoch: String,
    offset: u64,
    oldest: u64,
    entries: Vec<String>,
}

impl RawRead {
    fn position(&self) -> Position {
        Position {
            epoch: self.epoch.clone(),
            offset: self.offset,
        }
    }

    /// Whether every message after `after` is still held (as in `memory.rs`).
    fn complete_after(&self, after: u64) -> bool {
        after >= self.offset || self.oldest <= after + 1
    }
}

fn unavailable(e: teamhub_redis::RedisError) -> BrokerError {
    BrokerError::Unavailable(e.to_string())
}

fn unix_ms(ts: OffsetDateTime) -> i64 {
    i64::try_from(ts.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX / 2)
}

/// A random epoch, used only if the team has none yet.
fn new_epoch() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// Splits an encoded frame around its placeholder offset.
fn split_at_offset(frame: &str) -> Option<(&str, &str)> {
    const NEEDLE: &str = "\"offset\":18446744073709551615,";
    const _: () = assert!(OFFSET_PLACEHOLDER == 18_446_744_073_709_551_615);
    let at = frame.find(NEEDLE)?;
    let head_end = at + "\"offset\":".len();
    let tail_start = at + NEEDLE.len() - 1;
    Some((&frame[..head_end], &frame[tail_start..]))
}

/// The origin and echo part of a payload: `<echo> <conn or -> <node len>:<node>`.
fn origin_meta(origin: Option<&ConnKey>, echo: bool) -> String {
    let echo = u8::from(echo);
    match origin {
        Some(o) => format!("{echo} {} {}:{}", o.conn, o.node.len(), o.node),
        None => format!("{echo} - 0:"),
    }
}

/// A decoded payload: `<offset> <epoch> <echo> <conn> <len>:<node><frame>`.
#[derive(Debug, PartialEq)]
struct Payload<'a> {
    offset: u64,
    epoch: &'a str,
    echo: bool,
    origin: Option<ConnKey>,
    frame: &'a str,
}

fn parse_payload(s: &str) -> Option<Payload<'_>> {
    let (offset, rest) = s.split_once(' ')?;
    let (epoch, rest) = rest.split_once(' ')?;
    let (echo, rest) = rest.split_once(' ')?;
    let (conn, rest) = rest.split_once(' ')?;
    let (len, rest) = rest.split_once(':')?;
    let len: usize = len.parse().ok()?;
    let node = rest.get(..len)?;
    let frame = rest.get(len..)?;
    let origin = match conn {
        "-" => None,
        conn => Some(ConnKey {
            node: node.into(),
            conn: conn.parse().ok()?,
        }),
    };
    Some(Payload {
        offset: offset.parse().ok()?,
        epoch,
        echo: echo == "1",
        origin,
        frame,
    })
}

/// A history entry is `<ms>:<payload>`.
fn parse_entry(entry: &str) -> Option<Payload<'_>> {
    parse_payload(entry.split_once(':')?.1)
}

/// The frame of a payload `p` parsed out of `buf`, as shared bytes: a slice of `buf`,
/// not a copy. `None` when `p.frame` does not lie inside `buf` or is not a message frame.
fn frame_bytes(buf: &Bytes, p: &Payload<'_>) -> Option<Utf8Bytes> {
    let start = (p.frame.as_ptr() as usize).checked_sub(buf.as_ptr() as usize)?;
    let frame = buf.get(start..start + p.frame.len())?;
    if !frame.starts_with(br#"{"op":"message""#) {
        return None;
    }
    Utf8Bytes::try_from(buf.slice_ref(frame)).ok()
}

/// The node's event for a payload and its frame bytes: the frame is not decoded (the
/// seed framing reads it back only if a seed client needs it).
fn event_from(team: &TeamId, p: Payload<'_>, wire: Utf8Bytes) -> Event {
    Event::message(team, p.offset, p.echo, p.origin, wire)
}

enum Command {
    Subscribe(TeamId, oneshot::Sender<Result<(), BrokerError>>),
    Unsubscribe(TeamId, oneshot::Sender<Result<(), BrokerError>>),
}

/// What the subscriber knows about a hosted team.
struct TeamState {
    team: TeamId,
    epoch: String,
    /// The last offset handed to the node (or covered by the position read at subscribe).
    last: u64,
    /// Continuity was lost: deliver nothing until the team is subscribed afresh.
    stale: bool,
}

/// The task that owns the broker's subscriptions and its inbox.
struct Subscriber {
    store: Arc<Store>,
    subscriptions: Subscriptions,
    events: mpsc::UnboundedSender<BrokerEvent>,
    commands: mpsc::UnboundedReceiver<Command>,
    /// Hosted teams by channel name.
    teams: HashMap<String, TeamState>,
    /// Channels whose gap fill failed (Redis unreachable): filled again on a timer,
    /// before anything newer on them is delivered.
    behind: Vec<String>,
}

impl Subscriber {
    async fn run(mut self, mut inbox: Inbox) {
        let mut retry = tokio::time::interval(CATCH_UP_RETRY);
        loop {
            tokio::select! {
                cmd = self.commands.recv() => match cmd {
                    None => return,
                    Some(Command::Subscribe(team, reply)) => {
                        let _ = reply.send(self.add(team).await);
                    }
                    Some(Command::Unsubscribe(team, reply)) => {
                        let channel = self.store.key(&team, "msg");
                        self.teams.remove(&channel);
                        self.behind.retain(|c| c != &channel);
                        // Messages still in flight for it are dropped (no state left). A
                        // failed UNSUBSCRIBE leaves a channel nobody reads, dropped by
                        // the layer.
                        let _ = self.subscriptions.unsubscribe(&channel, ChannelKind::Team).await;
                        let _ = reply.send(Ok(()));
                    }
                },
                delivery = inbox.recv() => match delivery {
                    None => return,
                    Some(Delivery::Message { channel, payload }) => {
                        if self.behind.iter().any(|c| **c == *channel) {
                            // The fill from history will cover it.
                            continue;
                        }
                        if self.on_message(&channel, &payload).await.is_err() {
                            self.fall_behind(&channel);
                        }
                    }
                    Some(Delivery::Resubscribed { channel }) => {
                        if self.catch_up(&channel).await.is_err() {
                            self.fall_behind(&channel);
                        }
                    }
                },
                _ = retry.tick(), if !self.behind.is_empty() => {
                    for channel in std::mem::take(&mut self.behind) {
                        if self.catch_up(&channel).await.is_err() {
                            self.fall_behind(&channel);
                        }
                    }
                }
            }
        }
    }

    fn fall_behind(&mut self, channel: &str) {
        if !self.behind.iter().any(|c| c == channel) {
            tracing::warn!(channel, "redis failed while filling a gap; retrying");
            self.behind.push(channel.to_owned());
        }
    }

    /// Starts hosting a team: takes its position as the baseline, then subscribes.
    ///
    /// Messages published between the two are missed by the channel but not lost: the
    /// next message shows the jump and they are read from history.
    async fn add(&mut self, team: TeamId) -> Result<(), BrokerError> {
        let channel = self.store.key(&team, "msg");
        if self.teams.get(&channel).is_some_and(|s| !s.stale) {
            return Ok(());
        }
        let raw = self.store.read_raw(&team, 0, 0).await?;
        self.subscriptions
            .subscribe(&channel, ChannelKind::Team)
            .await
            .map_err(unavailable)?;
        self.behind.retain(|c| c != &channel);
        self.teams.insert(
            channel,
            TeamState {
                team,
                epoch: raw.epoch,
                last: raw.offset,
                stale: false,
            },
        );
        Ok(())
    }

    /// Handles one live message. An error means Redis failed while filling a gap.
    async fn on_message(&mut self, channel: &str, payload: &Bytes) -> Result<(), BrokerError> {
        let Some(state) = self.teams.get(channel) else {
            return Ok(()); // no longer hosted
        };
        if state.stale {
            return Ok(());
        }
        let (team, last) = (state.team.clone(), state.last);
        let parsed = std::str::from_utf8(payload).ok().and_then(parse_payload);
        let wire = parsed.as_ref().and_then(|p| frame_bytes(payload, p));
        let Some(p) = parsed else {
            tracing::warn!(%team, "undecodable broker payload");
            self.resync(channel, ResyncReason::Inconsistent);
            return Ok(());
        };
        if p.epoch != state.epoch {
            self.resync(channel, ResyncReason::EpochChanged);
        } else if p.offset == last + 1 {
            match wire {
                Some(wire) => self.deliver(channel, &team, p, wire),
                None => self.resync(channel, ResyncReason::Inconsistent),
            }
        } else if p.offset > last + 1 {
            self.catch_up(channel).await?;
        }
        // Otherwise a duplicate of what a catch-up already delivered.
        Ok(())
    }

    /// Delivers what history holds after the team's last delivered offset, or resyncs
    /// the team when that cannot be done without a gap.
    async fn catch_up(&mut self, channel: &str) -> Result<(), BrokerError> {
        let Some(state) = self.teams.get(channel) else {
            return Ok(());
        };
        if state.stale {
            return Ok(());
        }
        let (team, epoch, last) = (state.team.clone(), state.epoch.clone(), state.last);
        let raw = self.store.read_raw(&team, last, usize::MAX).await?;
        if raw.epoch != epoch {
            self.resync(channel, ResyncReason::EpochChanged);
            return Ok(());
        }
        if !raw.complete_after(last) {
            self.resync(channel, ResyncReason::HistoryLost);
            return Ok(());
        }
        for (expected, entry) in (last + 1..).zip(raw.entries) {
            let entry = Bytes::from(entry.into_bytes());
            let parsed = std::str::from_utf8(&entry).ok().and_then(parse_entry);
            match parsed {
                Some(p) if p.offset == expected => match frame_bytes(&entry, &p) {
                    Some(wire) => self.deliver(channel, &team, p, wire),
                    None => {
                        self.resync(channel, ResyncReason::Inconsistent);
                        return Ok(());
                    }
                },
                _ => {
                    self.resync(channel, ResyncReason::Inconsistent);
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// Hands one message to the node and advances the team's last offset.
    fn deliver(&mut self, channel: &str, team: &TeamId, p: Payload<'_>, wire: Utf8Bytes) {
        let offset = p.offset;
        let event = event_from(team, p, wire);
        // A closed channel means the node is shutting down; nothing to deliver to.
        let _ = self.events.send(BrokerEvent::Message(Arc::new(event)));
        if let Some(state) = self.teams.get_mut(channel) {
            state.last = offset;
        }
    }

    fn resync(&mut self, channel: &str, reason: ResyncReason) {
        if let Some(state) = self.teams.get_mut(channel) {
            state.stale = true;
            tracing::warn!(team = %state.team, ?reason, "team lost continuity; resync");
            let _ = self.events.send(BrokerEvent::Resync(Resync {
                team: state.team.clone(),
                reason,
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::MessageParts;
    use serde_json::value::RawValue;
    use teamhub_protocol::{MessageType, UserId};
    use time::macros::datetime;

    #[test]
    fn the_script_splice_rebuilds_the_frame() {
        let (team, ty, user) = (
            TeamId::new("t-1").unwrap(),
            MessageType::new("chat").unwrap(),
            UserId::new("ann").unwrap(),
        );
        let data =
            RawValue::from_string(r#"{"offset":18446744073709551615,"x":1}"#.into()).unwrap();
        let parts = MessageParts {
            team: &team,
            ty: &ty,
            user: &user,
            data: &data,
        };
        let ts = datetime!(2026-01-02 03:04:05.678 UTC);
        let wire = encode_message(&parts, OFFSET_PLACEHOLDER, ts);
        let (head, tail) = split_at_offset(wire.as_str()).unwrap();
        let spliced = format!("{head}42{tail}");
        assert_eq!(spliced, encode_message(&parts, 42, ts).as_str());
    }

    #[test]
    fn payloads_round_trip() {
        let origin = ConnKey {
            node: "node a:1".into(),
            conn: 9,
        };
        let frame =
            r#"{"op":"message","team":"t","offset":3,"type":"x","user":"u","data":1,"ts":"z"}"#;
        let s = format!("3 abc {}{frame}", origin_meta(Some(&origin), true));
        let p = parse_payload(&s).unwrap();
        assert_eq!(
            p,
            Payload {
                offset: 3,
                epoch: "abc",
                echo: true,
                origin: Some(origin),
                frame,
            }
        );
        let s = format!("1700000000000:4 e {}{frame}", origin_meta(None, false));
        let p = parse_entry(&s).unwrap();
        assert!(p.origin.is_none() && !p.echo && p.offset == 4 && p.frame == frame);
        let buf = Bytes::from(s.clone());
        let p = parse_entry(std::str::from_utf8(&buf).unwrap()).unwrap();
        let wire = frame_bytes(&buf, &p).unwrap();
        assert_eq!(
            wire.as_ptr(),
            buf[buf.len() - frame.len()..].as_ptr(),
            "a slice, not a copy"
        );
        let ev = event_from(&TeamId::new("t").unwrap(), p, wire);
        assert_eq!(ev.wire().as_str(), frame);
        assert_eq!(
            ev.seed_frames()[0].as_str(),
            r#"{"type":"x","user_id":"u","data":1}"#
        );
        assert!(parse_payload("garbage").is_none());
    }

    mod fuzz {
        use proptest::prelude::*;

        use super::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            /// Whatever Redis hands back (a corrupted or foreign entry), decoding does
            /// not panic, and a frame it finds lies inside the buffer.
            #[test]
            fn any_payload_decodes_or_is_skipped(s in any::<String>()) {
                let buf = Bytes::from(s.clone());
                let text = std::str::from_utf8(&buf).unwrap();
                if let Some(p) = parse_payload(text) {
                    let _ = frame_bytes(&buf, &p);
                }
                let _ = parse_entry(text);
            }

            /// What a node encodes, every node decodes back.
            #[test]
            fn payloads_round_trip(
                offset in any::<u64>(),
                epoch in "[a-z0-9]{1,16}",
                echo in any::<bool>(),
                origin in prop::option::of((any::<u64>(), "[ -~]{0,24}")),
                frame in "[ -~]{0,64}",
            ) {
                let origin = origin.map(|(conn, node)| ConnKey { node: node.as_str().into(), conn });
                let text = format!("{offset} {epoch} {}{frame}", origin_meta(origin.as_ref(), echo));
                let p = parse_payload(&text).expect("an encoded payload decodes");
                prop_assert_eq!(p, Payload { offset, epoch: &epoch, echo, origin, frame: &frame });
            }
        }
    }
}
