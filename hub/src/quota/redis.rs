//! Team connections counted in Redis, shared by every node of a cluster.
//!
//! One sorted set per team, `<prefix>:{<team>}:quota:conns` (under the team's hash
//! tag, so it lives on the team's shard beside its other keys): member
//! `<conn>:<node>`, score the entry's expiry in Redis-server milliseconds. Every script
//! first drops expired entries, so a node that died stops counting within the TTL
//! (`--presence-ttl`, the same bound as its presence). The node refreshes its own
//! entries every TTL/3 (one script per team it holds connections in; entries that
//! expired meanwhile, as after a Redis outage longer than the TTL, are not brought
//! back, so the team counts fewer connections than it holds until they rejoin).
//! Time is Redis's (`TIME`), never a node's, so skewed clocks agree on what expired.

use std::collections::HashSet;
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use dashmap::DashMap;
use redis::Script;
use teamhub_presence::ConnKey;
use teamhub_protocol::TeamId;
use teamhub_redis::Redis;

use super::{QuotaError, QuotaStore, Taken};

const PRELUDE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
";

/// ARGV: member, max (0: none), ttl ms. Returns the count after, or -1 when full.
const TAKE: &str = r"
local ttl = tonumber(ARGV[3])
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
  return redis.call('ZCARD', KEYS[1])
end
local n = redis.call('ZCARD', KEYS[1])
local max = tonumber(ARGV[2])
if max > 0 and n >= max then return -1 end
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('PEXPIRE', KEYS[1], ttl)
return n + 1
";

/// ARGV: member.
const RELEASE: &str = r"
return redis.call('ZREM', KEYS[1], ARGV[1])
";

const COUNT: &str = r"
return redis.call('ZCARD', KEYS[1])
";

/// ARGV: ttl ms, members... Refreshes those still counted.
const REFRESH: &str = r"
local ttl = tonumber(ARGV[1])
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], 'XX', now + ttl, ARGV[i])
end
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('PEXPIRE', KEYS[1], ttl) end
return 0
";

struct Inner {
    redis: Redis,
    prefix: String,
    ttl: Duration,
    take: Script,
    release: Script,
    count: Script,
    refresh: Script,
    /// This node's counted connections per team: what the refresh keeps alive.
    held: DashMap<TeamId, HashSet<String>>,
}

/// The cluster's team connections, for one node.
pub struct RedisQuota {
    inner: Arc<Inner>,
}

impl RedisQuota {
    /// Creates the store on the node's Redis layer and starts its refresh task (so it
    /// must be called inside a Tokio runtime); the task ends with the store.
    pub fn new(redis: &Redis, prefix: &str, ttl: Duration) -> RedisQuota {
        let script = |body: &str| Script::new(&format!("{PRELUDE}{body}"));
        let inner = Arc::new(Inner {
            redis: redis.clone(),
            prefix: prefix.to_owned(),
            ttl: ttl.max(Duration::from_millis(300)),
            take: script(TAKE),
            release: script(RELEASE),
            count: script(COUNT),
            refresh: script(REFRESH),
            held: DashMap::new(),
        });
        tokio::spawn(refresh_loop(Arc::downgrade(&inner)));
        RedisQuota { inner }
    }

    /// Refreshes this node's entries now, as the background task does every TTL/3.
    pub async fn refresh_now(&self) {
        self.inner.refresh_all().await;
    }
}

impl Inner {
    fn key(&self, team: &TeamId) -> String {
        format!("{}:{{{}}}:quota:conns", self.prefix, team.as_str())
    }

    fn ttl_ms(&self) -> u64 {
        u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX / 4)
    }

    async fn refresh_all(&self) {
        let teams: Vec<(TeamId, Vec<String>)> = self
            .held
            .iter()
            .map(|e| (e.key().clone(), e.value().iter().cloned().collect()))
            .collect();
        for (team, members) in teams {
            let mut conn = self.redis.commands();
            let mut inv = self.refresh.prepare_invoke();
            inv.key(self.key(&team)).arg(self.ttl_ms()).arg(members);
            let done: Result<i64, _> = self.redis.bounded(inv.invoke_async(&mut conn)).await;
            if let Err(e) = done {
                tracing::warn!(%team, error = %e, "refreshing team connection counts failed");
            }
        }
    }
}

async fn refresh_loop(inner: Weak<Inner>) {
    let Some(every) = inner.upgrade().map(|i| i.ttl / 3) else {
        return;
    };
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        inner.refresh_all().await;
    }
}

fn member(conn: &ConnKey) -> String {
    format!("{}:{}", conn.conn, conn.node)
}

fn unavailable(e: impl std::fmt::Display) -> QuotaError {
    QuotaError::Unavailable(e.to_string())
}

#[async_trait]
impl QuotaStore for RedisQuota {
    async fn take(
        &self,
        team: &TeamId,
        conn: &ConnKey,
        max: Option<u64>,
    ) -> Result<Taken, QuotaError> {
        let inner = &self.inner;
        let member = member(conn);
        let mut c = inner.redis.commands();
        let mut inv = inner.take.prepare_invoke();
        inv.key(inner.key(team))
            .arg(&member)
            .arg(max.unwrap_or(0))
            .arg(inner.ttl_ms());
        let n: i64 = inner
            .redis
            .bounded(inv.invoke_async(&mut c))
            .await
            .map_err(unavailable)?;
        match u64::try_from(n) {
            Ok(n) => {
                inner.held.entry(team.clone()).or_default().insert(member);
                Ok(Taken::Yes(n))
            }
            Err(_) => Ok(Taken::Full),
        }
    }

    async fn release(&self, team: &TeamId, conn: &ConnKey) -> Result<(), QuotaError> {
        let inner = &self.inner;
        let member = member(conn);
        // Forgotten here first: a refresh after this cannot keep it alive, and if the
        // script fails the entry expires on its own.
        let mut empty = false;
        if let Some(mut held) = inner.held.get_mut(team) {
            held.remove(&member);
            empty = held.is_empty();
        }
        if empty {
            inner.held.remove_if(team, |_, held| held.is_empty());
        }
        let mut c = inner.redis.commands();
        let mut inv = inner.release.prepare_invoke();
        inv.key(inner.key(team)).arg(&member);
        let _: i64 = inner
            .redis
            .bounded(inv.invoke_async(&mut c))
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn count(&self, team: &TeamId) -> Result<u64, QuotaError> {
        let inner = &self.inner;
        let mut c = inner.redis.commands();
        let mut inv = inner.count.prepare_invoke();
        inv.key(inner.key(team));
        let n: u64 = inner
            .redis
            .bounded(inv.invoke_async(&mut c))
            .await
            .map_err(unavailable)?;
        Ok(n)
    }
}
