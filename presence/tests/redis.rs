//! The presence conformance suite against `RedisPresence`, plus cluster tests: several
//! stores (nodes) sharing one real Redis.
//!
//! Needs Redis at `TEAMHUB_TEST_REDIS_URL` (default `redis://127.0.0.1:6379`); the tests
//! fail, never skip, when it is unreachable. Each test uses its own key prefix.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use teamhub_presence::conformance::{self, Subject};
use teamhub_presence::{
    ConnInfo, ConnKey, PresenceError, PresenceEvent, PresenceStore, RedisPresence, TeamPresence,
};
use teamhub_protocol::{TeamId, UserId};
use teamhub_redis::testing::CutProxy;
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

const WAIT: Duration = Duration::from_secs(10);

fn redis_url() -> String {
    std::env::var("TEAMHUB_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A prefix no other test (or earlier run) uses.
fn prefix(test: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "teamhub-test:{test}:{}:{nanos}:{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// The node's Redis layer on `url`, with a clear failure when Redis is unreachable.
async fn layer(url: &str) -> teamhub_redis::Redis {
    let config = teamhub_redis::RedisConfig::single(url).unwrap();
    match teamhub_redis::Redis::connect(config).await {
        Ok(redis) => redis,
        Err(e) => panic!(
            "Redis is unreachable at {url} ({e}). These tests need a real Redis: start one with \
             `redis-server --daemonize yes --port 6379 --save '' --appendonly no` or point \
             TEAMHUB_TEST_REDIS_URL at one."
        ),
    }
}

async fn node(
    prefix: &str,
    node: &str,
    ttl: Duration,
) -> (RedisPresence, UnboundedReceiver<PresenceEvent>) {
    let redis = layer(&redis_url()).await;
    let (tx, rx) = unbounded_channel();
    let store = RedisPresence::connect(&redis, prefix, node, ttl, tx)
        .await
        .unwrap_or_else(|e| panic!("presence on a reachable Redis: {e}"));
    (store, rx)
}

async fn subject(test: &str) -> Subject {
    let (store, events) = node(&prefix(test), "node-1", Duration::from_secs(15)).await;
    Subject {
        store: Arc::new(store),
        events,
    }
}

#[tokio::test]
async fn first_connection_joins_last_leaves() {
    conformance::first_connection_joins_last_leaves(&mut subject("c1").await).await;
}

#[tokio::test]
async fn retries_are_harmless() {
    conformance::retries_are_harmless(&mut subject("c2").await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_ordered_under_concurrency() {
    conformance::events_are_ordered_under_concurrency(&mut subject("c3").await).await;
}

#[tokio::test]
async fn teams_are_isolated_and_snapshots_sorted() {
    conformance::teams_are_isolated_and_snapshots_sorted(&mut subject("c4").await).await;
}

/// Presence on a Redis that went away answers `Unavailable`, and Redis is left as it was.
#[tokio::test]
async fn unreachable_redis_is_unavailable() {
    let proxy = CutProxy::start(&redis_url()).await;
    let redis = layer(proxy.url()).await;
    let (tx, _rx) = unbounded_channel();
    let store = RedisPresence::connect(&redis, &prefix("down"), "n", Duration::from_secs(15), tx)
        .await
        .unwrap();
    proxy.set_down(true);
    proxy.cut();
    let err = store
        .join(&team("down"), info("n", 1, "ann", None))
        .await
        .expect_err("Redis is unreachable");
    assert!(matches!(err, PresenceError::Unavailable(_)), "{err:?}");
}

// ---- cluster ------------------------------------------------------------------------

fn team(name: &str) -> TeamId {
    TeamId::new(name).unwrap()
}

fn key(node: &str, conn: u64) -> ConnKey {
    ConnKey {
        node: node.into(),
        conn,
    }
}

fn info(node: &str, conn: u64, user: &str, status: Option<&str>) -> ConnInfo {
    ConnInfo {
        key: key(node, conn),
        user: UserId::new(user).unwrap(),
        name: Some(format!("{user} name")),
        meta: status.and_then(|s| serde_json::json!({ "status": s }).as_object().cloned()),
    }
}

async fn next(rx: &mut UnboundedReceiver<PresenceEvent>, who: &str) -> PresenceEvent {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .unwrap_or_else(|_| panic!("{who}: no presence event within {WAIT:?}"))
        .unwrap_or_else(|| panic!("{who}: event channel closed"))
}

/// A bounded wait for an event that must not come.
async fn assert_quiet(rx: &mut UnboundedReceiver<PresenceEvent>, for_: Duration, who: &str) {
    if let Ok(Some(ev)) = tokio::time::timeout(for_, rx.recv()).await {
        panic!("{who}: unexpected event {ev:?}");
    }
}

/// A user with a connection on each of two nodes counts both and leaves only when both
/// are gone; both nodes see every event, in the same version order; entries match what
/// `TeamPresence` computes for the same operations.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_one_view() {
    let p = prefix("cluster");
    let ttl = Duration::from_secs(15);
    let (a, mut ea) = node(&p, "a", ttl).await;
    let (b, mut eb) = node(&p, "b", ttl).await;
    let (a, b) = (Arc::new(a), Arc::new(b));
    let t = team("cluster");
    let mut model = TeamPresence::default();

    // Anchors, so both nodes host the team from here on.
    for (store, conn) in [
        (&a, info("a", 1, "xavier", None)),
        (&b, info("b", 1, "yara", None)),
    ] {
        model.join(conn.clone());
        store.host(&t).await.unwrap();
        store.join(&t, conn).await.unwrap();
    }
    let first = next(&mut ea, "a").await;
    assert_eq!(first.joins[0].user.as_str(), "xavier");
    // Redis versions start from a clock reading (see the module docs); the model's from 0.
    let base = first.version - 1;
    let v_both = next(&mut ea, "a").await;
    assert_eq!(v_both, next(&mut eb, "b").await, "b sees its own join too");
    let mut seen_a = vec![v_both.clone()];
    let mut seen_b = vec![v_both];

    // ann on both nodes, with meta: the most recent connection's meta wins.
    let c = a.join(&t, info("a", 2, "ann", Some("away"))).await.unwrap();
    let m = model.join(info("a", 2, "ann", Some("away")));
    assert_eq!((c.version - base, &c.joined), (m.version, &m.joined));
    seen_a.push(next(&mut ea, "a").await);
    seen_b.push(next(&mut eb, "b").await);
    let c = b.join(&t, info("b", 2, "ann", Some("busy"))).await.unwrap();
    model.join(info("b", 2, "ann", Some("busy")));
    assert!(
        c.joined.is_none(),
        "a second connection on another node is not a join"
    );
    for store in [&a, &b] {
        let snap = store.snapshot(&t).await.unwrap();
        assert_eq!(snap.entries, model.entries(), "entries match TeamPresence");
        assert_eq!(snap.version - base, model.version());
        let ann = snap
            .entries
            .iter()
            .find(|e| e.user.as_str() == "ann")
            .unwrap();
        assert_eq!(ann.conns, 2, "conns counts both nodes");
        assert_eq!(ann.meta.as_ref().unwrap()["status"], "busy");
    }

    // One of the two goes: still online, no event, meta falls back.
    let c = a.leave(&t, &key("a", 2)).await.unwrap();
    model.leave(&key("a", 2));
    assert!(c.left.is_none());
    assert_eq!(b.snapshot(&t).await.unwrap().entries, model.entries());
    // The last one goes: one leave, seen by both.
    let c = b.leave(&t, &key("b", 2)).await.unwrap();
    let m = model.leave(&key("b", 2));
    assert_eq!((c.version - base, &c.left), (m.version, &m.left));
    seen_a.push(next(&mut ea, "a").await);
    seen_b.push(next(&mut eb, "b").await);
    assert_eq!(seen_a.last().unwrap().leaves[0].user.as_str(), "ann");

    // Concurrent churn from both nodes: 4 users x 3 rounds x (join + leave).
    let mut tasks = Vec::new();
    for u in 0..4u64 {
        let (store, n) = if u % 2 == 0 {
            (a.clone(), "a")
        } else {
            (b.clone(), "b")
        };
        let t = t.clone();
        tasks.push(tokio::spawn(async move {
            for round in 0..3u64 {
                let conn = 100 + u * 10 + round;
                store
                    .join(&t, info(n, conn, &format!("u{u}"), None))
                    .await
                    .unwrap();
                store.leave(&t, &key(n, conn)).await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    for _ in 0..24 {
        seen_a.push(next(&mut ea, "a").await);
        seen_b.push(next(&mut eb, "b").await);
    }
    assert_quiet(&mut ea, Duration::from_millis(300), "a").await;
    assert_quiet(&mut eb, Duration::from_millis(300), "b").await;
    assert_eq!(
        seen_a, seen_b,
        "both nodes see the same events in the same order"
    );
    for pair in seen_a.windows(2) {
        assert_eq!(
            pair[1].version,
            pair[0].version + 1,
            "no gaps, no reordering"
        );
    }
    let snap = a.snapshot(&t).await.unwrap();
    assert_eq!(snap.version, seen_a.last().unwrap().version);
    let users: Vec<_> = snap.entries.iter().map(|e| e.user.as_str()).collect();
    assert_eq!(users, ["xavier", "yara"]);
}

/// A node that no longer hosts a team stops receiving its events; hosting it again
/// starts them again, from the team's current state.
#[tokio::test]
async fn an_unhosted_team_is_silent() {
    let p = prefix("unhost");
    let ttl = Duration::from_secs(15);
    let (a, mut ea) = node(&p, "a", ttl).await;
    let (b, mut eb) = node(&p, "b", ttl).await;
    let t = team("unhost");
    a.host(&t).await.unwrap();
    b.host(&t).await.unwrap();
    b.join(&t, info("b", 1, "bob", None)).await.unwrap();
    next(&mut ea, "a").await;
    next(&mut eb, "b").await;

    a.unhost(&t).await;
    b.join(&t, info("b", 2, "carol", None)).await.unwrap();
    let carol = next(&mut eb, "b").await;
    assert_eq!(carol.joins[0].user.as_str(), "carol");
    // Unhosting is ordered with hosting on a's subscriber: once a hosts the team again,
    // anything still queued from before has been dropped or forwarded.
    a.host(&t).await.unwrap();
    assert!(
        ea.try_recv().is_err(),
        "a received an event of a team it did not host"
    );
    b.leave(&t, &key("b", 2)).await.unwrap();
    let left = next(&mut ea, "a").await;
    assert_eq!(left, next(&mut eb, "b").await);
    assert_eq!(left.leaves[0].user.as_str(), "carol");
}

/// A node that dies without a word (its store dropped: no leave, no refresh) has its
/// users leave on the surviving nodes within two TTLs, announced exactly once even
/// though two survivors sweep; a user also connected through a survivor stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_nodes_users_leave_within_two_ttls() {
    let p = prefix("death");
    let ttl = Duration::from_secs(1);
    let (a, _ea) = node(&p, "a", ttl).await;
    let (b, mut eb) = node(&p, "b", ttl).await;
    let (c, mut ec) = node(&p, "c", ttl).await;
    let t = team("death");
    a.host(&t).await.unwrap();

    a.join(&t, info("a", 1, "ann", None)).await.unwrap();
    a.join(&t, info("a", 2, "dave", None)).await.unwrap();
    b.host(&t).await.unwrap();
    b.join(&t, info("b", 1, "ann", None)).await.unwrap();
    b.join(&t, info("b", 2, "carol", None)).await.unwrap();
    c.host(&t).await.unwrap();
    c.join(&t, info("c", 1, "erin", None)).await.unwrap();
    // b saw carol and erin join; c saw erin join.
    for _ in 0..2 {
        next(&mut eb, "b").await;
    }
    let erin = next(&mut ec, "c").await;
    assert_eq!(erin.joins[0].user.as_str(), "erin");

    drop(a); // SIGKILL: no leave, no more refreshes
    let died = Instant::now();

    let on_b = next(&mut eb, "b").await;
    let elapsed = died.elapsed();
    let on_c = next(&mut ec, "c").await;
    assert_eq!(on_b, on_c);
    assert!(on_b.joins.is_empty());
    let left: Vec<_> = on_b.leaves.iter().map(|e| e.user.as_str()).collect();
    assert_eq!(left, ["dave"], "ann is still online through b");
    assert_eq!(on_b.origin, key("a", 2));
    assert!(
        elapsed < 2 * ttl,
        "dave left after {elapsed:?}, more than two TTLs"
    );

    // Exactly once, whichever survivor swept; ann's expired connection on `a` is no
    // user-level change. Several more sweep rounds pass meanwhile.
    assert_quiet(&mut eb, ttl, "b").await;
    assert_quiet(&mut ec, Duration::from_millis(10), "c").await;

    let snap = c.snapshot(&t).await.unwrap();
    let users: Vec<_> = snap
        .entries
        .iter()
        .map(|e| (e.user.as_str(), e.conns))
        .collect();
    assert_eq!(users, [("ann", 1), ("carol", 1), ("erin", 1)]);
    assert_eq!(snap.version, on_b.version);
}

/// The refresh keeps live connections well past the TTL.
#[tokio::test]
async fn live_connections_outlive_the_ttl() {
    let p = prefix("refresh");
    let ttl = Duration::from_millis(600);
    let (a, mut ea) = node(&p, "a", ttl).await;
    let t = team("refresh");
    a.host(&t).await.unwrap();
    a.join(&t, info("a", 1, "ann", None)).await.unwrap();
    next(&mut ea, "a").await;
    // An absence: three TTLs in which no leave may come.
    assert_quiet(&mut ea, 3 * ttl, "a").await;
    assert_eq!(a.snapshot(&t).await.unwrap().entries.len(), 1);
}

/// Meta and names come back exactly as given: empty objects stay objects, big integers
/// keep every digit, escapes and non-ASCII survive, a missing name stays null.
#[tokio::test]
async fn entries_round_trip_through_redis_unchanged() {
    let p = prefix("meta");
    let (a, mut ea) = node(&p, "a", Duration::from_secs(15)).await;
    let t = team("meta");
    a.host(&t).await.unwrap();
    let meta = serde_json::json!({
        "empty": {},
        "list": [],
        "big": 12345678901234567u64,
        "float": 0.1,
        "text": "h\u{e9}llo \"/\\ \u{1f600}",
    });
    let conn = ConnInfo {
        key: key("a", 1),
        user: UserId::new("ann").unwrap(),
        name: None,
        meta: meta.as_object().cloned(),
    };
    let mut model = TeamPresence::default();
    let expected = model.join(conn.clone());
    let change = a.join(&t, conn).await.unwrap();
    assert_eq!(change.joined, expected.joined);
    let ev = next(&mut ea, "a").await;
    assert_eq!(ev.joins, expected.joined.into_iter().collect::<Vec<_>>());
    assert_eq!(a.snapshot(&t).await.unwrap().entries, model.entries());
    let left = a.leave(&t, &key("a", 1)).await.unwrap();
    assert_eq!(left.left, model.leave(&key("a", 1)).left);
}

/// A live connection that was swept anyway (its node could not refresh in time, say
/// during a Redis outage) is joined again by the next refresh: announced as a leave,
/// then a join, never silently missing.
#[tokio::test]
async fn a_swept_live_connection_is_joined_again() {
    let p = prefix("repair");
    // A long TTL, so the background refresh (every TTL/3) does not run mid-test.
    let (a, mut ea) = node(&p, "a", Duration::from_secs(300)).await;
    let t = team("repair");
    a.host(&t).await.unwrap();
    a.join(&t, info("a", 1, "ann", None)).await.unwrap();
    let joined = next(&mut ea, "a").await;

    // Reaches into the key layout (see `scripts.rs`): put the expiry in the past.
    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let updated: i64 = redis::cmd("ZADD")
        .arg(format!("{p}:{{repair}}:conn_exp"))
        .arg("XX")
        .arg("CH")
        .arg(0)
        .arg("1:a")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(updated, 1, "the connection's expiry entry exists");

    // Any sweep (here the snapshot's) announces the leave...
    assert!(a.snapshot(&t).await.unwrap().entries.is_empty());
    let left = next(&mut ea, "a").await;
    assert_eq!(
        (left.version, left.leaves[0].user.as_str()),
        (joined.version + 1, "ann")
    );
    // ...and the next refresh finds the live connection gone and joins it again.
    a.maintain_once().await;
    let again = next(&mut ea, "a").await;
    assert_eq!(
        (again.version, again.joins[0].user.as_str()),
        (joined.version + 2, "ann")
    );
    assert_eq!(a.snapshot(&t).await.unwrap().entries[0].conns, 1);
    // And it is an ordinary connection again: its leave is announced once.
    a.leave(&t, &key("a", 1)).await.unwrap();
    assert_eq!(next(&mut ea, "a").await.version, joined.version + 3);
    assert_quiet(&mut ea, Duration::from_millis(200), "a").await;
}

/// When its connections to Redis break, a node reconnects, subscribes again to the teams
/// it hosts, announces what changed while it could not listen (one catch-up event,
/// numbered by the snapshot it read) and goes on receiving events; its commands work
/// again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_catches_up_after_losing_its_connections() {
    let p = prefix("reconnect");
    let proxy = CutProxy::start(&redis_url()).await;
    let (tx, mut ea) = unbounded_channel();
    let a = RedisPresence::connect(
        &layer(proxy.url()).await,
        &p,
        "a",
        Duration::from_secs(15),
        tx,
    )
    .await
    .expect("connect through the proxy");
    let (b, mut eb) = node(&p, "b", Duration::from_secs(15)).await;
    let t = team("reconnect");
    a.host(&t).await.unwrap();
    a.join(&t, info("a", 1, "ann", None)).await.unwrap();
    next(&mut ea, "a").await;
    b.host(&t).await.unwrap();
    b.join(&t, info("b", 1, "bob", None)).await.unwrap();
    next(&mut ea, "a").await;
    next(&mut eb, "b").await;

    // a is cut off; meanwhile carol joins and bob leaves, through b.
    proxy.set_down(true);
    proxy.cut();
    b.join(&t, info("b", 2, "carol", None)).await.unwrap();
    b.leave(&t, &key("b", 1)).await.unwrap();
    next(&mut eb, "b").await;
    let missed = next(&mut eb, "b").await.version;
    proxy.set_down(false);

    let caught_up = next(&mut ea, "a").await;
    assert_eq!(caught_up.version, missed);
    assert_eq!(caught_up.origin, key("a", teamhub_presence::CATCH_UP_CONN));
    let joins: Vec<_> = caught_up.joins.iter().map(|e| e.user.as_str()).collect();
    let leaves: Vec<_> = caught_up
        .leaves
        .iter()
        .map(|e| (e.user.as_str(), e.conns))
        .collect();
    assert_eq!((joins, leaves), (vec!["carol"], vec![("bob", 0)]));

    // Live again: b's next change reaches a as usual.
    b.join(&t, info("b", 3, "dave", None)).await.unwrap();
    let ev = next(&mut ea, "a").await;
    assert_eq!(ev.joins[0].user.as_str(), "dave");
    assert_eq!(ev, next(&mut eb, "b").await);
    assert_eq!(ev.version, missed + 1);

    // The pool's broken connections are replaced: a's own changes work and arrive.
    let mut attempts = 0;
    let change = loop {
        attempts += 1;
        match a.leave(&t, &key("a", 1)).await {
            Ok(change) => break change,
            Err(e) if attempts < 3 => eprintln!("leave after the cut, attempt {attempts}: {e}"),
            Err(e) => panic!("a cannot reach Redis again: {e}"),
        }
    };
    assert_eq!(change.left.map(|e| e.user.to_string()), Some("ann".into()));
    let left = next(&mut eb, "b").await;
    assert_eq!(left.leaves[0].user.as_str(), "ann");
    assert_eq!(next(&mut ea, "a").await, left, "a sees its own leave too");
    assert_quiet(&mut ea, Duration::from_millis(200), "a").await;
}

/// Redis losing its data (a restart without persistence): the refresh joins the node's
/// live connections again, with versions above every one seen before, so nodes that
/// drop events numbered at or below what they have seen do not drop these.
#[tokio::test]
async fn versions_keep_increasing_after_redis_loses_the_team() {
    let p = prefix("dataloss");
    let (a, mut ea) = node(&p, "a", Duration::from_secs(300)).await;
    let t = team("dataloss");
    a.host(&t).await.unwrap();
    a.join(&t, info("a", 1, "ann", None)).await.unwrap();
    a.join(&t, info("a", 2, "bob", None)).await.unwrap();
    next(&mut ea, "a").await;
    let before = next(&mut ea, "a").await.version;

    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{p}:*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(keys.iter().any(|k| k.ends_with(":version")), "{keys:?}");
    let _: u64 = redis::cmd("DEL")
        .arg(&keys)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(a.snapshot(&t).await.unwrap().entries.is_empty());

    a.maintain_once().await;
    let mut rejoined = Vec::new();
    for _ in 0..2 {
        let ev = next(&mut ea, "a").await;
        assert!(ev.version > before, "version {} after {before}", ev.version);
        rejoined.push(ev.joins[0].user.to_string());
    }
    rejoined.sort();
    assert_eq!(rejoined, ["ann", "bob"]);
    let snap = a.snapshot(&t).await.unwrap();
    assert_eq!(snap.entries.len(), 2);
    assert!(snap.version > before);
}

/// After `shutdown` (the end of a drain) no team can be hosted any more, and leaves
/// neither hang nor fail.
#[tokio::test]
async fn shutdown_stops_the_store() {
    let p = prefix("shutdown");
    let (a, mut ea) = node(&p, "a", Duration::from_secs(15)).await;
    let t = team("shutdown");
    a.host(&t).await.unwrap();
    a.join(&t, info("a", 1, "ann", None)).await.unwrap();
    next(&mut ea, "a").await;
    a.shutdown();
    a.shutdown(); // idempotent
    let err = a
        .host(&team("shutdown-2"))
        .await
        .expect_err("no hosting after shutdown");
    assert!(matches!(err, PresenceError::Unavailable(_)), "{err:?}");
    let started = Instant::now();
    let change = a.leave(&t, &key("a", 1)).await.unwrap();
    assert_eq!(change.left.map(|e| e.user.to_string()), Some("ann".into()));
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "a leave after shutdown must not wait for an event nobody forwards"
    );
    assert!(a.snapshot(&t).await.unwrap().entries.is_empty());
}

// ---- Redis Cluster ------------------------------------------------------------------

/// A store on the shared local Redis Cluster (3 primaries, 3 replicas): the presence
/// scripts `SPUBLISH` on the team's shard, the subscriber `SSUBSCRIBE`s there.
async fn cluster_subject(test: &str) -> Subject {
    let cluster = tokio::task::spawn_blocking(teamhub_redis::testing::LocalCluster::shared)
        .await
        .unwrap();
    let config =
        teamhub_redis::RedisConfig::new(teamhub_redis::Mode::Cluster, &cluster.seeds()).unwrap();
    let redis = teamhub_redis::Redis::connect(config).await.unwrap();
    let (tx, events) = unbounded_channel();
    let store =
        RedisPresence::connect(&redis, &prefix(test), "node-1", Duration::from_secs(15), tx)
            .await
            .unwrap();
    Subject {
        store: Arc::new(store),
        events,
    }
}

#[tokio::test]
async fn cluster_first_connection_joins_last_leaves() {
    conformance::first_connection_joins_last_leaves(&mut cluster_subject("k1").await).await;
}

#[tokio::test]
async fn cluster_retries_are_harmless() {
    conformance::retries_are_harmless(&mut cluster_subject("k2").await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_events_are_ordered_under_concurrency() {
    conformance::events_are_ordered_under_concurrency(&mut cluster_subject("k3").await).await;
}

#[tokio::test]
async fn cluster_teams_are_isolated_and_snapshots_sorted() {
    conformance::teams_are_isolated_and_snapshots_sorted(&mut cluster_subject("k4").await).await;
}

#[tokio::test]
async fn occupancy_follows_the_first_and_last_user() {
    conformance::occupancy_follows_the_first_and_last_user(&mut subject("c9").await).await;
}

#[tokio::test]
async fn cluster_occupancy_follows_the_first_and_last_user() {
    conformance::occupancy_follows_the_first_and_last_user(&mut cluster_subject("k9").await).await;
}

/// A team whose only users were on a node that died is vacated by the next sweep (no
/// node has a connection there to sweep it on its own: here a snapshot's), and the
/// event says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_that_empties_a_team_vacates_it() {
    let p = prefix("vacate");
    let ttl = Duration::from_secs(1);
    let (a, _ea) = node(&p, "a", ttl).await;
    let (b, mut eb) = node(&p, "b", ttl).await;
    let t = team("vacate");
    a.host(&t).await.unwrap();
    b.host(&t).await.unwrap();
    let joined = a.join(&t, info("a", 1, "ann", None)).await.unwrap();
    assert_eq!(
        joined.occupancy,
        Some(teamhub_presence::Occupancy::Occupied)
    );
    assert_eq!(
        next(&mut eb, "b").await.occupancy,
        Some(teamhub_presence::Occupancy::Occupied)
    );
    drop(a);
    let deadline = Instant::now() + 3 * ttl;
    while !b.snapshot(&t).await.unwrap().entries.is_empty() {
        assert!(Instant::now() < deadline, "ann never expired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let swept = next(&mut eb, "b").await;
    assert_eq!(swept.leaves[0].user.as_str(), "ann");
    assert_eq!(swept.occupancy, Some(teamhub_presence::Occupancy::Vacated));
}
