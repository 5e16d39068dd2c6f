//! Cluster mode: several nodes sharing one Redis act as one hub.
//!
//! Each test starts in-process nodes on loopback ports with a unique key prefix, so
//! tests share the Redis of `TEAMHUB_TEST_REDIS_URL` (default `redis://127.0.0.1:6379`)
//! without seeing each other. An unreachable Redis fails the test; nothing is skipped.

use std::collections::HashMap;

use serde_json::json;
use teamhub_client::{Client, ConnectOptions};
use teamhub_protocol::{ClientOp, ErrorCode, ReplyBody};

use crate::harness::*;

pub(crate) fn redis_url() -> String {
    std::env::var("TEAMHUB_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// `n` nodes of one cluster.
pub(crate) async fn cluster(n: usize, extra: &[&str]) -> Vec<TestHub> {
    let prefix = format!("it-{}", uuid::Uuid::new_v4().simple());
    let url = redis_url();
    let mut nodes = Vec::new();
    for i in 0..n {
        let id = format!("node{i}");
        let mut args = vec![
            "--redis-url",
            &url,
            "--redis-key-prefix",
            &prefix,
            "--node-id",
            &id,
            "--rate-limit",
            "0",
        ];
        args.extend_from_slice(extra);
        nodes.push(TestHub::start_with(&args).await);
    }
    nodes
}

#[tokio::test]
async fn every_client_on_every_node_sees_one_gapless_order() {
    let nodes = cluster(3, &[]).await;
    let mut watchers = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let mut w = node.connect(&format!("w{i}"), &[("t", "viewer")]).await;
        w.join("t").await;
        watchers.push(w);
    }
    // Concurrent publishers on every node.
    let mut tasks = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let opts = ConnectOptions::new(node.ws_url())
            .token(node.token(&format!("p{i}"), &[("t", "editor")]));
        tasks.push(tokio::spawn(async move {
            let c = Client::connect(opts).await.unwrap();
            let mut offsets = Vec::new();
            for k in 0..40 {
                offsets.push(
                    c.publish("t", "n", &json!({"p": i, "k": k}), false)
                        .await
                        .unwrap(),
                );
            }
            offsets
        }));
    }
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    acked.sort();
    assert_eq!(
        acked,
        (1..=120).collect::<Vec<u64>>(),
        "offsets are assigned once each, cluster-wide"
    );
    for w in &mut watchers {
        let mut per_publisher: HashMap<u64, u64> = HashMap::new();
        for expected in 1..=120 {
            let m = w.expect_message().await;
            assert_eq!(m.offset, expected, "in offset order, no gap, no duplicate");
            // Each publisher's own messages arrive in the order it sent them.
            let (p, k) = (m.data["p"].as_u64().unwrap(), m.data["k"].as_u64().unwrap());
            let next = per_publisher.entry(p).or_default();
            assert_eq!(k, *next);
            *next += 1;
        }
    }
}

#[tokio::test]
async fn presence_counts_connections_across_nodes() {
    let nodes = cluster(3, &[]).await;
    let mut watcher = nodes[2].connect("w", &[("t", "viewer")]).await;
    watcher.join("t").await;
    let mut a1 = nodes[0].connect("ann", &[("t", "viewer")]).await;
    a1.join("t").await;
    let d = watcher.expect_diff().await;
    assert_eq!(d.joins[0].user.as_str(), "ann");
    let mut a2 = nodes[1].connect("ann", &[("t", "viewer")]).await;
    let reply = a2.join("t").await;
    let ann = reply
        .presence
        .iter()
        .find(|e| e.user.as_str() == "ann")
        .unwrap();
    assert_eq!(ann.conns, 2, "one connection on each of two nodes");
    a1.conn.close().await.unwrap();
    // Still online through node 1: ann stays, with one connection.
    let token = nodes[0].token("v", &[("t", "viewer")]);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let entries = presence(&nodes[2], &token).await;
        let ann = entries
            .iter()
            .find(|e| e["user"] == "ann")
            .expect("ann must not leave while a connection remains");
        if ann["conns"] == 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "conns never went down to 1"
        );
        tokio::task::yield_now().await;
    }
    a2.conn.close().await.unwrap();
    let d = watcher.expect_diff().await;
    assert_eq!((d.joins.len(), d.leaves.len()), (0, 1));
    assert_eq!(d.leaves[0].user.as_str(), "ann");
    // REST on any node agrees.
    let users: Vec<_> = presence(&nodes[0], &token)
        .await
        .iter()
        .map(|e| e["user"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(users, ["w"]);
}

async fn presence(node: &TestHub, token: &str) -> Vec<serde_json::Value> {
    let body: serde_json::Value = reqwest::Client::new()
        .get(node.http("/api/v1/teams/t/presence"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["presence"].as_array().unwrap().clone()
}

#[tokio::test]
async fn a_client_recovers_on_another_node_after_a_drain() {
    let mut nodes = cluster(2, &[]).await;
    let mut publisher = nodes[1].connect("p", &[("t", "editor")]).await;
    let mut sub = nodes[0].connect("s", &[("t", "viewer")]).await;
    let joined = sub.join("t").await;
    publisher.publish("t", "n", json!(1), false).await;
    let seen = sub.expect_message().await.offset;
    nodes[0].drain().await;
    assert_eq!(sub.expect_close().await.0, Some(1012));
    for i in 2..=4 {
        publisher.publish("t", "n", json!(i), false).await;
    }
    let mut back = nodes[1].connect("s", &[("t", "viewer")]).await;
    let r = back
        .join_with(json!({"team": "t", "since": {"epoch": joined.epoch, "offset": seen}}))
        .await;
    assert!(
        r.recovered,
        "the history lives in Redis, not in the drained node"
    );
    assert_eq!(
        r.missed.iter().map(|m| m.offset).collect::<Vec<_>>(),
        [2, 3, 4]
    );
}

#[tokio::test]
async fn a_node_that_dies_without_a_word_has_its_users_leave() {
    let nodes = cluster(2, &["--presence-ttl", "1"]).await;
    let mut watcher = nodes[0].connect("w", &[("t", "viewer")]).await;
    watcher.join("t").await;
    let mut ghost = nodes[1].connect("ghost", &[("t", "viewer")]).await;
    ghost.join("t").await;
    assert_eq!(watcher.expect_diff().await.joins[0].user.as_str(), "ghost");
    // Stop node 1's presence refresh without leaving, as a killed process would.
    nodes[1].stop_presence_refresh();
    let started = std::time::Instant::now();
    let d = watcher.expect_diff().await;
    assert_eq!(d.leaves[0].user.as_str(), "ghost");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(3),
        "within two TTLs (plus a sweep period)"
    );
}

#[tokio::test]
async fn a_redis_outage_is_unavailable_then_clients_resync() {
    let mut redis = crate::redis_broker::PrivateRedis::start();
    redis.wait_ready().await;
    let url = redis.url();
    let node = TestHub::start_with(&["--redis-url", &url, "--presence-ttl", "2"]).await;
    let mut sub = node.connect("s", &[("t", "viewer")]).await;
    let joined = sub.join("t").await;
    let mut publisher = node.connect("p", &[("t", "editor")]).await;
    for i in 1..=3 {
        publisher.publish("t", "n", json!(i), false).await;
    }
    for expected in 1..=3 {
        assert_eq!(sub.expect_message().await.offset, expected);
    }

    redis.stop();
    // While Redis is down: publishes are refused as `unavailable`, never dropped silently,
    // and the node is not ready.
    let id = publisher
        .send(TestClient::publish_op("t", "n", json!("lost?"), false))
        .await;
    publisher
        .expect_error(Some(id), teamhub_protocol::ErrorCode::Unavailable)
        .await;
    assert_eq!(
        reqwest::get(node.http("/readyz")).await.unwrap().status(),
        503
    );

    // Redis comes back empty: the team's history (and so its epoch) is gone. Connected
    // clients are told to resynchronise (1012) and learn their `since` cannot be honoured.
    redis.spawn();
    redis.wait_ready().await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let id = loop {
        // The first publish after the restart creates the new epoch and is what the
        // node's subscriber notices; retry until the node's pool has reconnected.
        let id = publisher
            .send(TestClient::publish_op("t", "n", json!("after"), false))
            .await;
        match publisher.next_frame().await {
            teamhub_protocol::ServerFrame::Reply(r) if r.id == Some(id) => break id,
            teamhub_protocol::ServerFrame::Error(e)
                if e.code == teamhub_protocol::ErrorCode::Unavailable =>
            {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the node never reconnected to Redis"
                );
                tokio::time::sleep(std::time::Duration::from_millis(50)).await; // polling interval
            }
            other => panic!("{other:?}"),
        }
    };
    assert!(id > 0);
    assert_eq!(sub.expect_close().await.0, Some(1012));
    assert_eq!(
        reqwest::get(node.http("/readyz")).await.unwrap().status(),
        200
    );
    let mut back = node.connect("s", &[("t", "viewer")]).await;
    let r = back
        .join_with(json!({"team": "t", "since": {"epoch": joined.epoch, "offset": 3}}))
        .await;
    assert!(
        !r.recovered && r.missed.is_empty(),
        "history from before the loss is never passed off as current"
    );
    assert_ne!(r.epoch, joined.epoch);
}

/// A connection's publishes are kept in flight through Redis, and still answered in
/// order: offsets follow the frames, a refused publish is answered in its place, and a
/// later op waits for the publishes before it.
#[tokio::test]
async fn back_to_back_publishes_through_redis_are_answered_in_order() {
    let nodes = cluster(1, &[]).await;
    let mut ann = nodes[0].connect("ann", &[("t", "editor")]).await;
    let mut bob = nodes[0].connect("bob", &[("t", "viewer")]).await;
    bob.join("t").await;
    ann.join("t").await;
    let mut ids = Vec::new();
    for n in 1..=100u64 {
        let ty = if n == 50 { "system.x" } else { "bench.n" };
        ids.push(
            ann.send(TestClient::publish_op("t", ty, json!(n), false))
                .await,
        );
    }
    let presence = ann
        .send(ClientOp::Presence(
            serde_json::from_value(json!({"team": "t"})).unwrap(),
        ))
        .await;
    let mut offset = 0;
    for (i, id) in ids.iter().enumerate() {
        if i + 1 == 50 {
            ann.expect_error(Some(*id), ErrorCode::Forbidden).await;
            continue;
        }
        offset += 1;
        match ann.expect_reply(*id).await {
            ReplyBody::Publish(p) => assert_eq!(p.offset, offset, "reply to frame {id}"),
            other => panic!("expected a publish reply, got {other:?}"),
        }
    }
    assert!(matches!(
        ann.expect_reply(presence).await,
        ReplyBody::Presence(_)
    ));
    for expected in (1..=100u64).filter(|n| *n != 50) {
        let m = bob.expect_message().await;
        assert_eq!(m.data, json!(expected), "offset {}", m.offset);
    }
}

/// A seed-endpoint client on one node gets messages published on another: the frame
/// travels through Redis undecoded and is read back for the seed framing only there.
#[tokio::test]
async fn seed_clients_on_another_node_get_three_field_frames() {
    let nodes = cluster(2, &[]).await;
    let token = nodes[1].token("sam", &[("t", "viewer")]);
    let url = format!("ws://{}/ws/t?token={token}", nodes[1].addr);
    let mut seed = TestClient::connect(ConnectOptions::new(url)).await;
    let mut ann = nodes[0].connect("ann", &[("t", "editor")]).await;
    ann.join("t").await;
    let data = json!({"text": "quote \" and \\ and é \u{1F600}", "n": [1, 2.5, null]});
    ann.publish("t", "chat", data.clone(), false).await;
    loop {
        match seed.next().await {
            teamhub_client::Incoming::Seed(f) if f.ty.as_str() == "chat" => {
                assert_eq!((f.user_id.as_str(), f.data), ("ann", data));
                break;
            }
            teamhub_client::Incoming::Seed(_) => {} // presence
            other => panic!("expected a seed frame, got {other:?}"),
        }
    }
}

/// Two nodes on a real Redis Cluster (`--redis-mode cluster`): clients on both see
/// one gapless order per team, for teams on every shard, and each other's presence.
#[tokio::test]
async fn nodes_on_a_redis_cluster_act_as_one_hub() {
    let shards = tokio::task::spawn_blocking(teamhub_redis::testing::LocalCluster::shared)
        .await
        .unwrap();
    let seeds = shards.seeds();
    let prefix = format!("it-{}", uuid::Uuid::new_v4().simple());
    let mut nodes = Vec::new();
    for id in ["c0", "c1"] {
        let args = [
            "--redis-mode",
            "cluster",
            "--redis-url",
            &seeds,
            "--redis-key-prefix",
            &prefix,
            "--node-id",
            id,
            "--rate-limit",
            "0",
        ];
        nodes.push(TestHub::start_with(&args).await);
    }
    let teams: Vec<String> = (0..6).map(|i| format!("t{i}")).collect();
    let roles: Vec<(&str, &str)> = teams.iter().map(|t| (t.as_str(), "editor")).collect();
    let mut a = nodes[0].connect("ann", &roles).await;
    let mut b = nodes[1].connect("bob", &roles).await;
    for t in &teams {
        a.join(t).await;
        b.join(t).await;
        // ann sees bob arrive.
        let diff = a.expect_diff().await;
        assert_eq!(diff.joins[0].user.as_str(), "bob");
    }
    for round in 1..=3u64 {
        for t in &teams {
            assert_eq!(a.publish(t, "chat", json!(round), false).await, round);
        }
    }
    let mut next: HashMap<String, u64> = HashMap::new();
    for _ in 0..3 * teams.len() {
        let m = b.expect_message().await;
        let expected = next.entry(m.team.to_string()).or_insert(1);
        assert_eq!(m.offset, *expected, "team {}", m.team);
        *expected += 1;
    }
}

/// Redis configuration that cannot work stops the node at start with a message that
/// says why, within the timeouts: never a hang.
#[tokio::test]
async fn bad_redis_settings_fail_the_start_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("hub.db");
    let single = redis_url();
    let cases: [(&[&str], &str); 4] = [
        (
            &["--redis-mode", "cluster", "--redis-url", &single],
            "not a cluster node",
        ),
        (&["--redis-url", "http://127.0.0.1:6379"], "redis://"),
        (&["--redis-url", "redis://127.0.0.1:1"], "cannot connect"),
        (
            &[
                "--redis-url",
                &single,
                "--redis-ca-cert",
                "/nonexistent.pem",
            ],
            "not rediss://",
        ),
    ];
    for (extra, expected) in cases {
        let args = serve_args(extra, &db);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let started = tokio::time::timeout(
            std::time::Duration::from_secs(15),
            teamhub::start_on(&args, listener),
        )
        .await
        .unwrap_or_else(|_| panic!("{extra:?}: the start hung"));
        let Err(e) = started else {
            panic!("{extra:?}: started")
        };
        let text = format!("{e:#}");
        assert!(text.contains(expected), "{extra:?}: {text}");
    }
}
