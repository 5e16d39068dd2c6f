//! Limits, plan quotas and usage (contract section 11): each at its boundary, on one
//! node and across two nodes of a cluster.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use teamhub::quota::redis::RedisQuota;
use teamhub::quota::{QuotaStore, conformance};
use teamhub_client::{ClientError, ConnectOptions};
use teamhub_protocol::{ClientOp, ErrorCode, Leave, ReplyBody, TeamId, UserId};
use teamhub_redis::{Redis, RedisConfig};

use crate::cluster::{cluster, redis_url};
use crate::harness::*;

/// A config file with `toml` in a directory of its own (kept alive by the caller).
fn config(toml: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hub.toml");
    std::fs::write(&path, toml).unwrap();
    let path = path.display().to_string();
    (dir, path)
}

fn join_op(team: &str) -> ClientOp {
    ClientOp::Join(serde_json::from_value(json!({"team": team})).unwrap())
}

/// Sends a join and expects `quota_exceeded`.
async fn join_refused(c: &mut TestClient, team: &str) {
    let id = c.send(join_op(team)).await;
    let msg = c.expect_error(Some(id), ErrorCode::QuotaExceeded).await;
    assert!(msg.contains("connections"), "{msg}");
}

/// Sends a publish and expects `quota_exceeded`.
async fn publish_refused(c: &mut TestClient, team: &str) {
    let id = c
        .send(TestClient::publish_op(team, "chat", json!("over"), false))
        .await;
    c.expect_error(Some(id), ErrorCode::QuotaExceeded).await;
}

async fn rest_publish(hub: &TestHub, token: &str, team: &str, ty: &str) -> Answer {
    call(
        hub,
        "POST",
        &format!("/api/v1/teams/{team}/messages"),
        Some(token),
        &[],
        Some(json!({"type": ty, "data": 1})),
    )
    .await
}

async fn metric_labels(hub: &TestHub, name: &str, labels: &str) -> f64 {
    let text = reqwest::get(hub.http("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    metric_sum(&text, name, labels)
}

async fn leave(c: &mut TestClient, team: &str) {
    let id = c
        .send(ClientOp::Leave(Leave {
            team: team.try_into().unwrap(),
        }))
        .await;
    assert!(matches!(c.expect_reply(id).await, ReplyBody::Empty {}));
}

/// Waits until `f` holds (a condition the node reaches on its own), failing after
/// [`WAIT`].
async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn refused_status(hub: &TestHub, token: String) -> u16 {
    match TestClient::try_connect(ConnectOptions::new(hub.ws_url()).token(token)).await {
        Err(ClientError::Http { status, .. }) => status,
        Ok(_) => panic!("the handshake was accepted"),
        Err(e) => panic!("unexpected error {e}"),
    }
}

#[tokio::test]
async fn per_user_connection_cap_at_its_boundary() {
    let hub = TestHub::start_with(&["--max-connections-per-user", "2"]).await;
    let ann = UserId::new("ann").unwrap();
    let refused_before = hub.metric("teamhub_user_connections_refused_total").await;
    let first = hub.connect("ann", &[("t", "viewer")]).await;
    let mut second = hub.connect("ann", &[("t", "viewer")]).await;
    assert_eq!(hub.node.user_cap.open(&ann), 2);
    let token = hub.token("ann", &[("t", "viewer")]);
    assert_eq!(refused_status(&hub, token.clone()).await, 429);
    // The metrics recorder is the test process's, shared with tests that run beside
    // this one and refuse handshakes of their own: at least this refusal is counted.
    assert!(
        hub.metric("teamhub_user_connections_refused_total").await - refused_before >= 1.0,
        "the refusal is counted"
    );
    // Another user is not affected, and the refused handshake held no slot.
    let _bob = hub.connect("bob", &[("t", "viewer")]).await;
    assert_eq!(hub.node.user_cap.open(&ann), 2);
    second.roundtrip().await;

    drop(first);
    until("the closed socket frees its slot", || {
        hub.node.user_cap.open(&ann) == 1
    })
    .await;
    let mut third = TestClient::connect(ConnectOptions::new(hub.ws_url()).token(token)).await;
    third.roundtrip().await;
}

#[tokio::test]
async fn per_user_connection_cap_is_per_node() {
    let nodes = cluster(2, &["--max-connections-per-user", "1"]).await;
    let mut on_a = nodes[0].connect("ann", &[("t", "viewer")]).await;
    let token = nodes[0].token("ann", &[("t", "viewer")]);
    assert_eq!(refused_status(&nodes[0], token.clone()).await, 429);
    let mut on_b = TestClient::connect(ConnectOptions::new(nodes[1].ws_url()).token(token)).await;
    on_a.roundtrip().await;
    on_b.roundtrip().await;
}

#[tokio::test]
async fn rest_rate_limit_per_caller_at_its_boundary() {
    // 1 request per second, bursts of 2: requests in a row are accepted until the
    // burst is spent, then refused. (The exact boundary, on a clock the test drives,
    // is a unit test of the limiter; here time passes for real, so a slow machine may
    // earn one more request per second it takes.)
    let hub = TestHub::start_with(&["--api-rate-limit", "1"]).await;
    let ann = hub.token("ann", &[("t", "viewer")]);
    let path = "/api/v1/teams/t/presence";
    let refused = until_refused(&hub, path, Some(&ann), 200).await;
    assert_eq!((refused.status, refused.code()), (429, "rate_limited"));
    let after: u64 = refused.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(after, 1, "whole seconds, rounded up");

    // Another user has a bucket of their own.
    let bob = hub.token("bob", &[("t", "viewer")]);
    assert_eq!(
        call(&hub, "GET", path, Some(&bob), &[], None).await.status,
        200
    );

    // Without valid credentials the client IP is the caller.
    let refused = until_refused(&hub, path, Some("nonsense"), 401).await;
    assert_eq!((refused.status, refused.code()), (429, "rate_limited"));
    assert!(hub.metric("teamhub_api_rate_limited_total").await >= 2.0);
}

/// Sends requests in a row until one is refused with 429; every one before it must
/// answer `accepted`, and there must be the burst (2) of them, plus at most one for
/// each second the requests took.
async fn until_refused(hub: &TestHub, path: &str, token: Option<&str>, accepted: u16) -> Answer {
    let started = std::time::Instant::now();
    for passed in 0..50u64 {
        let answer = call(hub, "GET", path, token, &[], None).await;
        if answer.status == 429 {
            let earned = started.elapsed().as_secs();
            assert!(
                (2..=2 + earned).contains(&passed),
                "{passed} requests passed before the first 429, in {earned} s (burst 2, 1/s)"
            );
            return answer;
        }
        assert_eq!(
            answer.status,
            accepted,
            "request {} of the burst",
            passed + 1
        );
    }
    panic!("50 requests in a row at 1/s with bursts of 2 were never refused");
}

#[tokio::test]
async fn rest_rate_limit_is_per_node_and_zero_turns_it_off() {
    let nodes = cluster(2, &["--api-rate-limit", "1"]).await;
    let ann = nodes[0].token("ann", &[("t", "viewer")]);
    let path = "/api/v1/teams/t/presence";
    until_refused(&nodes[0], path, Some(&ann), 200).await;
    assert_eq!(
        call(&nodes[1], "GET", path, Some(&ann), &[], None)
            .await
            .status,
        200,
        "the other node counts on its own"
    );

    let off = TestHub::start_with(&["--api-rate-limit", "0"]).await;
    let ann = off.token("ann", &[("t", "viewer")]);
    for _ in 0..300 {
        assert_eq!(
            call(&off, "GET", path, Some(&ann), &[], None).await.status,
            200
        );
    }
}

// The connection quota store against a real Redis: the same suite as in process.

async fn redis_quota(prefix: &str) -> RedisQuota {
    let url = redis_url();
    let redis = Redis::connect(RedisConfig::single(&url).unwrap())
        .await
        .unwrap_or_else(|e| panic!("Redis at {url} is unreachable ({e})"));
    RedisQuota::new(&redis, prefix, Duration::from_secs(15))
}

fn unique_prefix() -> String {
    format!("teamhub-test:{}", uuid::Uuid::new_v4().simple())
}

#[tokio::test]
async fn redis_quota_takes_up_to_the_cap() {
    conformance::takes_up_to_the_cap(&redis_quota(&unique_prefix()).await).await;
}

#[tokio::test]
async fn redis_quota_concurrent_takes_never_pass_the_cap() {
    conformance::concurrent_takes_never_pass_the_cap(&redis_quota(&unique_prefix()).await).await;
}

#[tokio::test]
async fn redis_quota_nodes_share_the_count() {
    let prefix = unique_prefix();
    let a: Arc<dyn QuotaStore> = Arc::new(redis_quota(&prefix).await);
    let b: Arc<dyn QuotaStore> = Arc::new(redis_quota(&prefix).await);
    conformance::nodes_share_the_count(a, b).await;
}

#[tokio::test]
async fn redis_quota_entries_of_a_silent_node_expire_and_refreshed_ones_do_not() {
    let url = redis_url();
    let redis = Redis::connect(RedisConfig::single(&url).unwrap())
        .await
        .unwrap();
    let prefix = unique_prefix();
    let ttl = Duration::from_millis(600);
    let t = TeamId::new("t").unwrap();
    let (live, dead) = (
        RedisQuota::new(&redis, &prefix, ttl),
        RedisQuota::new(&redis, &prefix, ttl),
    );
    live.take(&t, &conformance::conn("live", 1), None)
        .await
        .unwrap();
    dead.take(&t, &conformance::conn("dead", 1), None)
        .await
        .unwrap();
    drop(dead); // its refresh task ends with it
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        live.refresh_now().await;
        if live.count(&t).await.unwrap() == 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the dead node's entry never expired"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// Plan quotas at their boundary.

#[tokio::test]
async fn messages_per_day_at_the_boundary_on_one_node() {
    // A plan of this test's own, so the refusal metric counts this test only.
    let (_dir, path) =
        config("team-plans = \"t=msg-one,big=pro\"\n[plans.msg-one]\nmessages_per_day = 3\n");
    let hub = TestHub::start_with(&["--config", &path]).await;
    let series = "plan=\"msg-one\",kind=\"messages\"";
    let before = metric_labels(&hub, "teamhub_quota_refusals_total", series).await;
    let mut ann = hub
        .connect("ann", &[("t", "editor"), ("big", "editor")])
        .await;
    let mut watcher = hub.connect("wat", &[("t", "viewer")]).await;
    watcher.join("t").await;
    assert_eq!(ann.publish("t", "chat", json!(1), false).await, 1);
    assert_eq!(
        ann.publish("t", "cursor.move", json!(2), false).await,
        2,
        "ephemeral types count too"
    );
    let token = hub.token("ann", &[("t", "editor")]);
    let rest = rest_publish(&hub, &token, "t", "chat").await;
    assert_eq!((rest.status, rest.body["offset"].as_u64()), (200, Some(3)));

    publish_refused(&mut ann, "t").await;
    let refused = rest_publish(&hub, &token, "t", "chat").await;
    assert_eq!((refused.status, refused.code()), (429, "quota_exceeded"));
    assert!(
        refused.headers.get("retry-after").is_none(),
        "no time at which a retry is sure to work"
    );

    // Nothing was spent: the watcher got exactly offsets 1..3 and the history ends at 3.
    for n in 1..=3 {
        assert_eq!(watcher.expect_message().await.offset, n);
    }
    watcher.roundtrip_strict().await;
    let history = call(
        &hub,
        "GET",
        "/api/v1/teams/t/history",
        Some(&token),
        &[],
        None,
    )
    .await;
    assert_eq!(history.body["offset"], 3);
    // Another plan, another quota (none).
    for n in 1..=5 {
        assert_eq!(ann.publish("big", "chat", json!(n), false).await, n);
    }
    assert_eq!(
        metric_labels(&hub, "teamhub_quota_refusals_total", series).await - before,
        2.0
    );
}

#[tokio::test]
async fn messages_per_day_counted_across_two_nodes() {
    let (_dir, path) = config("[plans.free]\nmessages_per_day = 4\n");
    let nodes = cluster(2, &["--config", &path]).await;
    let mut a = nodes[0].connect("ann", &[("t", "editor")]).await;
    let mut b = nodes[1].connect("bob", &[("t", "editor")]).await;
    let mut offsets = vec![
        a.publish("t", "chat", json!(1), false).await,
        b.publish("t", "chat", json!(2), false).await,
        a.publish("t", "chat", json!(3), false).await,
    ];
    let token = nodes[1].token("bob", &[("t", "editor")]);
    let rest = rest_publish(&nodes[1], &token, "t", "chat").await;
    offsets.push(rest.body["offset"].as_u64().unwrap());
    offsets.sort_unstable();
    assert_eq!(offsets, [1, 2, 3, 4]);
    publish_refused(&mut a, "t").await;
    publish_refused(&mut b, "t").await;
    let refused = rest_publish(&nodes[0], &token, "t", "chat").await;
    assert_eq!((refused.status, refused.code()), (429, "quota_exceeded"));
}

#[tokio::test]
async fn max_connections_at_the_boundary_on_one_node() {
    let (_dir, path) =
        config("team-plans = \"t=conn-one\"\n[plans.conn-one]\nmax_connections = 2\n");
    let hub = TestHub::start_with(&["--config", &path]).await;
    let mut ann = hub.connect("ann", &[("t", "viewer")]).await;
    let mut bob = hub.connect("bob", &[("t", "viewer")]).await;
    let mut carl = hub
        .connect("carl", &[("t", "viewer"), ("u", "viewer")])
        .await;
    ann.join("t").await;
    bob.join("t").await;
    ann.join("t").await; // one socket joined twice is one
    join_refused(&mut carl, "t").await;
    // Nothing half done: no presence change reached the others, none shows carl.
    ann.roundtrip_strict().await;
    let snapshot = bob.join("t").await;
    let users: Vec<&str> = snapshot.presence.iter().map(|e| e.user.as_str()).collect();
    assert_eq!(users, ["ann", "bob"]);
    carl.join("u").await; // another team has its own count
    assert_eq!(
        metric_labels(
            &hub,
            "teamhub_quota_refusals_total",
            "plan=\"conn-one\",kind=\"connections\""
        )
        .await,
        1.0
    );
    leave(&mut ann, "t").await;
    carl.join("t").await;
    join_refused(&mut ann, "t").await;
    drop(bob);
    // The closed socket gives its place back as its session ends.
    let t = TeamId::new("t").unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while hub.node.quota.count(&t).await.unwrap() > 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a closed socket kept its place"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    ann.join("t").await;
}

#[tokio::test]
async fn a_seed_connection_over_the_quota_is_closed_1013() {
    let (_dir, path) =
        config("team-plans = \"t=seed-one\"\n[plans.seed-one]\nmax_connections = 1\n");
    let hub = TestHub::start_with(&["--config", &path]).await;
    let mut ann = hub.connect("ann", &[("t", "viewer")]).await;
    ann.join("t").await;
    let url = format!("ws://{}/ws/t", hub.addr);
    let mut seed =
        TestClient::connect(ConnectOptions::new(url).token(hub.token("bob", &[("t", "editor")])))
            .await;
    let (code, reason) = seed.expect_close().await;
    assert_eq!((code, reason.as_str()), (Some(1013), "team quota exceeded"));
    ann.roundtrip_strict().await;
}

#[tokio::test]
async fn max_connections_counted_across_two_nodes() {
    let (_dir, path) = config("[plans.free]\nmax_connections = 2\n");
    let nodes = cluster(2, &["--config", &path]).await;
    let mut ann = nodes[0].connect("ann", &[("t", "viewer")]).await;
    let mut bob = nodes[1].connect("bob", &[("t", "viewer")]).await;
    let mut carl_a = nodes[0].connect("carl", &[("t", "viewer")]).await;
    let mut carl_b = nodes[1].connect("carl", &[("t", "viewer")]).await;
    ann.join("t").await;
    bob.join("t").await;
    join_refused(&mut carl_a, "t").await;
    join_refused(&mut carl_b, "t").await;
    leave(&mut bob, "t").await;
    carl_a.join("t").await;
    join_refused(&mut bob, "t").await;
    ann.roundtrip().await;
}

// Usage: exact after a mixed workload over two nodes and a restart.

async fn usage_node(
    pg: &Arc<teamhub_persistence::testing::PostgresSchema>,
    prefix: &str,
    id: &str,
) -> TestHub {
    let url = redis_url();
    TestHub::start_shared(
        pg.clone(),
        &[
            "--redis-url",
            &url,
            "--redis-key-prefix",
            prefix,
            "--node-id",
            id,
            "--rate-limit",
            "0",
        ],
    )
    .await
}

async fn get_usage(hub: &TestHub, token: &str, query: &str) -> Answer {
    call(
        hub,
        "GET",
        &format!("/api/v1/teams/t/usage{query}"),
        Some(token),
        &[],
        None,
    )
    .await
}

#[tokio::test]
async fn usage_is_exact_across_two_nodes_and_a_restart() {
    let pg = TestHub::postgres_schema().await;
    let prefix = format!("it-{}", uuid::Uuid::new_v4().simple());
    let mut a = usage_node(&pg, &prefix, "node0").await;
    let mut b = usage_node(&pg, &prefix, "node1").await;
    let editor = a.token("ed", &[("t", "editor")]);
    let admin = a.token("boss", &[("t", "admin")]);

    // Connections: three joined at once at most (one of them twice), then one leaves.
    let mut ann = a.connect("ann", &[("t", "editor")]).await;
    let mut bob = b.connect("bob", &[("t", "editor")]).await;
    let mut carl = a
        .connect("carl", &[("t", "viewer"), ("other", "editor")])
        .await;
    ann.join("t").await;
    bob.join("t").await;
    carl.join("t").await;
    carl.join("t").await;
    leave(&mut carl, "t").await;
    bob.join("t").await;

    // Messages: 3 on a (one ephemeral), 2 on b, 2 by REST on b; another team's apart.
    ann.publish("t", "chat", json!(1), false).await;
    ann.publish("t", "typing.start", json!(2), false).await;
    ann.publish("t", "chat", json!(3), false).await;
    bob.publish("t", "chat", json!(4), false).await;
    bob.publish("t", "chat", json!(5), false).await;
    carl.publish("other", "chat", json!(6), false).await;
    for _ in 0..2 {
        assert_eq!(rest_publish(&b, &editor, "t", "chat").await.status, 200);
    }
    // API calls: those 2, one refused (a viewer may not publish), one presence on a,
    // the editor refused the usage endpoint, and nothing unauthenticated.
    let viewer = a.token("vic", &[("t", "viewer")]);
    assert_eq!(rest_publish(&a, &viewer, "t", "chat").await.status, 403);
    assert_eq!(
        call(
            &a,
            "GET",
            "/api/v1/teams/t/presence",
            Some(&editor),
            &[],
            None
        )
        .await
        .status,
        200
    );
    let refused = get_usage(&a, &editor, "").await;
    assert_eq!((refused.status, refused.code()), (403, "forbidden"));
    assert_eq!(
        call(
            &a,
            "GET",
            "/api/v1/teams/t/presence",
            Some("nonsense"),
            &[],
            None
        )
        .await
        .status,
        401
    );
    assert_eq!(rest_publish(&a, &editor, "other", "chat").await.status, 403);

    // Restart node a (its counts are flushed on drain), then more use on the new one.
    drop((ann, carl));
    a.drain().await;
    let a2 = usage_node(&pg, &prefix, "node0").await;
    let mut dan = a2.connect("dan", &[("t", "editor")]).await;
    dan.join("t").await;
    dan.publish("t", "chat", json!(7), false).await;
    drop(bob);
    b.drain().await;

    // The usage request is itself an API call, counted in its own answer.
    let usage = get_usage(&a2, &admin, "").await;
    assert_eq!(usage.status, 200, "{:?}", usage.body);
    let today = time::OffsetDateTime::now_utc().date();
    let date = format!(
        "{:04}-{:02}-{:02}",
        today.year(),
        u8::from(today.month()),
        today.day()
    );
    assert_eq!(
        usage.body,
        json!({
            "team": "t",
            "plan": "free",
            "quota": {"max_connections": null, "messages_per_day": null},
            "days": [{
                "date": date,
                "messages": 8,
                "api_calls": 6,
                "peak_connections": 3,
                "webhook_deliveries": 0,
            }],
        })
    );
    // Asked again: only that request more, nothing counted twice.
    let again = get_usage(&a2, &admin, &format!("?from={date}&to={date}")).await;
    assert_eq!(again.body["days"][0]["api_calls"], 7);
    assert_eq!(again.body["days"][0]["messages"], 8);
    let none = get_usage(&a2, &admin, "?from=2020-01-01&to=2020-01-31").await;
    assert_eq!(none.body["days"], Value::Array(vec![]));
    let bad = get_usage(&a2, &admin, "?from=yesterday").await;
    assert_eq!((bad.status, bad.code()), (400, "bad_request"));
}

#[tokio::test]
async fn usage_shows_the_plan_and_its_quotas() {
    let (_dir, path) = config(
        "team-plans = \"t=gold\"\n[plans.gold]\nmax_connections = 50\nmessages_per_day = 1000\n",
    );
    let hub = TestHub::start_with(&["--config", &path]).await;
    let admin = hub.token("boss", &[("t", "owner")]);
    let usage = get_usage(&hub, &admin, "").await;
    assert_eq!(usage.body["plan"], "gold");
    assert_eq!(
        usage.body["quota"],
        json!({"max_connections": 50, "messages_per_day": 1000})
    );
    assert_eq!(usage.body["days"][0]["api_calls"], 1);
}
