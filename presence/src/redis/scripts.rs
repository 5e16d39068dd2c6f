//! The Lua scripts behind [`super::RedisPresence`].
//!
//! Every change to a team's presence is one script, so it is atomic across the whole
//! cluster (Redis runs one script at a time) and its event is PUBLISHed from inside it:
//! the order of events on the team's channel is the order of the changes, which is the
//! order of the `version` counter.
//!
//! Keys (all of one team share the hash tag `{team}`, so a script only touches one slot):
//!
//! | KEYS | type | content |
//! |---|---|---|
//! | 1 `conn_user` | hash | conn key -> user id |
//! | 2 `conn_meta` | hash | conn key -> raw meta JSON (absent when the connection has none) |
//! | 3 `conn_seq` | hash | conn key -> join sequence (the most recent connection's meta wins) |
//! | 4 `conn_exp` | sorted set | conn key -> expiry, in Redis-server milliseconds |
//! | 5 `user_count` | hash | user id -> live connections of that user in the team |
//! | 6 `user_name` | hash | user id -> display name (absent when the user has none) |
//! | 7 `version` | string | the team's presence version (bumped on user-level changes only; starts from Redis time in µs) |
//! | 8 `seq` | string | the team's join sequence counter |
//!
//! A conn key is `"<conn>:<node>"` (the number first, so the first `:` splits it).
//!
//! Events are PUBLISHed (SPUBLISHed in a Redis Cluster) on `<prefix>:{<team>}:events`
//! as one JSON object:
//! `{"team": T, "v": VERSION, "origin": CONN_KEY, "joins": [entry...], "leaves": [entry...],
//! "occupancy": "occupied" | "vacated" | null}`
//! with entries in the wire shape (`{"user","name","conns","meta"}`); a leave entry has
//! `conns: 0` and `meta: null`, as `TeamPresence` gives.
//!
//! Time comes from Redis (`TIME`), never from the nodes, so nodes with skewed clocks
//! still agree on what has expired. Meta is stored and re-emitted as the raw JSON text
//! the node gave: it is never decoded by Lua's `cjson`, which would turn `{}` into `[]`
//! and round large numbers.

/// Shared helpers, prepended to every script.
const PRELUDE: &str = r#"
local K_USER, K_META, K_SEQ, K_EXP = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local K_COUNT, K_NAME, K_VER, K_JSEQ = KEYS[5], KEYS[6], KEYS[7], KEYS[8]

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function version()
  return tonumber(redis.call('GET', K_VER) or '0')
end

-- Bumps the team's version. A missing counter (a new team, or Redis lost its data)
-- starts from Redis time in microseconds, not 0, so versions keep increasing across a
-- data loss (nodes drop events numbered at or below what they have seen) as long as a
-- team averages under one change per microsecond. Built as a string: a Lua number
-- would print in exponent notation.
local function bump()
  if redis.call('EXISTS', K_VER) == 0 then
    local t = redis.call('TIME')
    redis.call('SET', K_VER, t[1] .. string.format('%06d', tonumber(t[2])))
  end
  return redis.call('INCR', K_VER)
end

-- A presence entry as JSON; meta is raw JSON text or false/nil.
local function entry(user, conns, meta)
  local name = redis.call('HGET', K_NAME, user)
  return '{"user":' .. cjson.encode(user)
    .. ',"name":' .. (name and cjson.encode(name) or 'null')
    .. ',"conns":' .. string.format('%d', conns)
    .. ',"meta":' .. (meta or 'null') .. '}'
end

-- occupancy: 'occupied' (the team's first user joined), 'vacated' (its last user
-- left) or '' (neither).
local function publish(channel, team, v, origin, joins, leaves, occupancy)
  redis.call('PUBLISH', channel, '{"team":' .. cjson.encode(team)
    .. ',"v":' .. string.format('%d', v)
    .. ',"origin":' .. cjson.encode(origin)
    .. ',"joins":[' .. table.concat(joins, ',') .. ']'
    .. ',"leaves":[' .. table.concat(leaves, ',') .. ']'
    .. ',"occupancy":' .. (occupancy ~= '' and cjson.encode(occupancy) or 'null') .. '}')
end

-- 'vacated' when the team has no user left, else ''.
local function vacancy()
  if redis.call('HLEN', K_COUNT) == 0 then return 'vacated' end
  return ''
end

-- Removes one connection; returns the leave entry when it was its user's last one.
local function remove_conn(key)
  local user = redis.call('HGET', K_USER, key)
  if not user then return nil end
  redis.call('HDEL', K_USER, key)
  redis.call('HDEL', K_META, key)
  redis.call('HDEL', K_SEQ, key)
  redis.call('ZREM', K_EXP, key)
  if redis.call('HINCRBY', K_COUNT, user, -1) > 0 then return nil end
  local e = entry(user, 0, nil)
  redis.call('HDEL', K_COUNT, user)
  redis.call('HDEL', K_NAME, user)
  return e
end

-- Removes every connection whose expiry has passed, one event per user that went
-- offline. Atomic with the rest of the calling script, so two sweepers cannot both
-- see (and announce) the same expired connection.
local function sweep(channel, team, now)
  local expired = redis.call('ZRANGEBYSCORE', K_EXP, '-inf', now)
  for _, key in ipairs(expired) do
    local e = remove_conn(key)
    if e then
      publish(channel, team, bump(), key, {}, {e}, vacancy())
    end
  end
  return #expired
end
"#;

/// ARGV: channel, team, key, user, has_name ("1"/"0"), name, meta ("" = none), ttl_ms.
/// Returns {version, join entry or "", leave entry or "", occupancy or ""}.
const JOIN: &str = r#"
local channel, team, key, user = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local has_name, name, meta, ttl = ARGV[5] == '1', ARGV[6], ARGV[7], tonumber(ARGV[8])
local now = now_ms()
sweep(channel, team, now)
local seq = redis.call('INCR', K_JSEQ)

local function store_conn()
  redis.call('HSET', K_USER, key, user)
  redis.call('HSET', K_SEQ, key, seq)
  if meta ~= '' then redis.call('HSET', K_META, key, meta) else redis.call('HDEL', K_META, key) end
  redis.call('ZADD', K_EXP, now + ttl, key)
end

local prev = redis.call('HGET', K_USER, key)
if prev == user then
  -- A retry or an update of the same connection: no user-level change.
  store_conn()
  return {version(), '', '', ''}
end
local joins, leaves = {}, {}
if prev then
  -- The same key for another user is a caller bug; treat it as leave + join.
  local e = remove_conn(key)
  if e then
    bump()
    leaves[1] = e
  end
end
store_conn()
local occupancy = ''
if redis.call('HINCRBY', K_COUNT, user, 1) == 1 then
  if has_name then redis.call('HSET', K_NAME, user, name) end
  bump()
  joins[1] = entry(user, 1, meta ~= '' and meta or nil)
  if #leaves == 0 and redis.call('HLEN', K_COUNT) == 1 then occupancy = 'occupied' end
end
local v = version()
if #joins + #leaves > 0 then publish(channel, team, v, key, joins, leaves, occupancy) end
return {v, joins[1] or '', leaves[1] or '', occupancy}
"#;

/// ARGV: channel, team, key. Returns {version, leave entry or "", occupancy or ""}.
const LEAVE: &str = r#"
local channel, team, key = ARGV[1], ARGV[2], ARGV[3]
local e = remove_conn(key)
if not e then return {version(), '', ''} end
local v = bump()
local occupancy = vacancy()
publish(channel, team, v, key, {}, {e}, occupancy)
return {v, e, occupancy}
"#;

/// ARGV: channel, team. Sweeps first, so a snapshot never shows an expired connection
/// even when no node hosts the team any more. Returns {version, JSON array of entries}.
const SNAPSHOT: &str = r#"
local channel, team = ARGV[1], ARGV[2]
sweep(channel, team, now_ms())
local conns = redis.call('HGETALL', K_USER)
local best, order = {}, {}
for i = 1, #conns, 2 do
  local key, user = conns[i], conns[i + 1]
  local seq = tonumber(redis.call('HGET', K_SEQ, key) or '0')
  local b = best[user]
  if not b then
    order[#order + 1] = user
    best[user] = {seq, key, 1}
  else
    b[3] = b[3] + 1
    if seq > b[1] then b[1] = seq; b[2] = key end
  end
end
local out = {}
for _, user in ipairs(order) do
  local b = best[user]
  out[#out + 1] = entry(user, b[3], redis.call('HGET', K_META, b[2]))
end
return {version(), '[' .. table.concat(out, ',') .. ']'}
"#;

/// ARGV: ttl_ms, key... Pushes the expiry of the given (live, local) connections.
/// Returns the keys that are no longer there (swept while this node could not refresh).
const REFRESH: &str = r#"
local exp = now_ms() + tonumber(ARGV[1])
local missing = {}
for i = 2, #ARGV do
  local key = ARGV[i]
  if redis.call('ZSCORE', K_EXP, key) then
    redis.call('ZADD', K_EXP, exp, key)
  else
    missing[#missing + 1] = key
  end
end
return missing
"#;

/// ARGV: channel, team. Returns how many connections expired.
const SWEEP: &str = r#"
return sweep(ARGV[1], ARGV[2], now_ms())
"#;

/// The scripts, compiled once (each `Script` carries its SHA for `EVALSHA`).
pub(super) struct Scripts {
    pub join: ::redis::Script,
    pub leave: ::redis::Script,
    pub snapshot: ::redis::Script,
    pub refresh: ::redis::Script,
    pub sweep: ::redis::Script,
}

impl Scripts {
    /// `publish` is the command that publishes on a team channel: `PUBLISH`, or
    /// `SPUBLISH` in a Redis Cluster (the channel lives on the team's shard).
    pub fn new(publish: &str) -> Self {
        let with_prelude = |body: &str| {
            let source = format!("{PRELUDE}\n{body}")
                .replace("redis.call('PUBLISH'", &format!("redis.call('{publish}'"));
            ::redis::Script::new(&source)
        };
        Self {
            join: with_prelude(JOIN),
            leave: with_prelude(LEAVE),
            snapshot: with_prelude(SNAPSHOT),
            refresh: with_prelude(REFRESH),
            sweep: with_prelude(SWEEP),
        }
    }
}
