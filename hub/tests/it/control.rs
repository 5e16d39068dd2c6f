//! Control traffic between nodes: API key deletions and revocations reach every node of
//! a cluster through the real Redis, within a second. The nodes share one Postgres
//! schema (keys and revocations live there) and a unique Redis key prefix.

use std::time::Duration;

use serde_json::json;
use teamhub_client::ConnectOptions;
use teamhub_protocol::{ClientOp, ErrorCode, KickReason};

use crate::harness::*;

/// The contract's bound for key deletions and revocations to take effect everywhere.
const EVERYWHERE: Duration = Duration::from_secs(1);

fn redis_url() -> String {
    std::env::var("TEAMHUB_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

async fn cluster(n: usize) -> Vec<TestHub> {
    let prefix = format!("it-{}", uuid::Uuid::new_v4().simple());
    let url = redis_url();
    let pg = TestHub::postgres_schema().await;
    let mut nodes = Vec::new();
    for i in 0..n {
        let id = format!("node{i}");
        let args = [
            "--redis-url",
            &url,
            "--redis-key-prefix",
            &prefix,
            "--node-id",
            &id,
        ];
        nodes.push(TestHub::start_shared(pg.clone(), &args).await);
    }
    nodes
}

/// Revokes user `mal` in team `t` through `node`'s REST API, as `admin`.
async fn revoke_mal(node: &TestHub, admin: &str) {
    let a = call(
        node,
        "POST",
        "/api/v1/teams/t/members/mal/revoke",
        Some(admin),
        &[],
        None,
    )
    .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
}

async fn within<F: std::future::Future>(what: &str, fut: F) -> F::Output {
    tokio::time::timeout(EVERYWHERE, fut)
        .await
        .unwrap_or_else(|_| panic!("{what} did not happen within {EVERYWHERE:?}"))
}

#[tokio::test]
async fn deleting_a_key_closes_its_sockets_on_every_node() {
    let nodes = cluster(3).await;
    let admin = nodes[0].token("ad", &[("t", "admin")]);
    let a = call(
        &nodes[0],
        "POST",
        "/api/v1/teams/t/api-keys",
        Some(&admin),
        &[],
        Some(json!({"name": "svc", "role": "editor"})),
    )
    .await;
    assert_eq!(a.status, 201);
    let (key, id) = (
        a.body["key"].as_str().unwrap().to_owned(),
        a.body["id"].as_str().unwrap().to_owned(),
    );
    // The key works on every node (shared database), joined and idle sockets on 1 and 2.
    let mut joined = Vec::new();
    let mut idle = Vec::new();
    for node in &nodes[1..] {
        let mut c =
            TestClient::connect(ConnectOptions::new(node.ws_url()).token(key.clone())).await;
        c.join("t").await;
        joined.push(c);
        let mut i =
            TestClient::connect(ConnectOptions::new(node.ws_url()).token(key.clone())).await;
        i.roundtrip().await;
        idle.push(i);
    }
    let a = call(
        &nodes[0],
        "DELETE",
        &format!("/api/v1/teams/t/api-keys/{id}"),
        Some(&admin),
        &[],
        None,
    )
    .await;
    assert_eq!(a.status, 204);
    let deleted = tokio::time::Instant::now();
    for c in &mut joined {
        let k = within("the kick", c.expect_kicked()).await;
        assert_eq!((k.team.as_str(), k.reason), ("t", KickReason::Revoked));
        assert_eq!(within("the close", c.expect_close()).await.0, Some(4001));
    }
    for c in &mut idle {
        assert_eq!(within("the close", c.expect_close()).await.0, Some(4001));
    }
    assert!(deleted.elapsed() < EVERYWHERE);
    for node in &nodes {
        let a = call(
            node,
            "GET",
            "/api/v1/teams/t/presence",
            Some(&key),
            &[],
            None,
        )
        .await;
        assert_eq!(
            (a.status, a.code()),
            (401, "unauthorized"),
            "node {}",
            node.node.id
        );
    }
}

#[tokio::test]
async fn revoking_kicks_on_every_node_and_every_node_refuses_old_tokens() {
    let nodes = cluster(3).await;
    let admin = nodes[0].token("ad", &[("t", "admin")]);
    let old = nodes[0].token("mal", &[("t", "editor")]);
    let mut watcher = nodes[0].connect("w", &[("t", "viewer")]).await;
    watcher.join("t").await;
    let mut victims = Vec::new();
    for node in &nodes[1..] {
        let mut c =
            TestClient::connect(ConnectOptions::new(node.ws_url()).token(old.clone())).await;
        c.join("t").await;
        victims.push(c);
    }
    let joined = watcher.expect_diff().await;
    assert_eq!(joined.joins[0].user.as_str(), "mal");

    revoke_mal(&nodes[0], &admin).await;
    for c in &mut victims {
        let k = within("the kick", c.expect_kicked()).await;
        assert_eq!((k.team.as_str(), k.reason), ("t", KickReason::Revoked));
    }
    let left = within("the presence leave", watcher.expect_diff()).await;
    assert_eq!(left.leaves[0].user.as_str(), "mal");
    // Every node refuses the old token now: its cache was updated by the command.
    for (i, c) in victims.iter_mut().enumerate() {
        let id = c
            .send(ClientOp::Join(
                serde_json::from_value(json!({"team": "t"})).unwrap(),
            ))
            .await;
        c.expect_error(Some(id), ErrorCode::Forbidden).await;
        let a = call(
            &nodes[i + 1],
            "GET",
            "/api/v1/teams/t/history",
            Some(&old),
            &[],
            None,
        )
        .await;
        assert_eq!((a.status, a.code()), (403, "forbidden"));
    }
}

/// Pattern writers racing from the same version on different nodes: exactly one wins,
/// and the change notice reaches sockets on every node through the broker.
#[tokio::test]
async fn pattern_writes_race_across_nodes_and_notices_reach_every_node() {
    let nodes = cluster(2).await;
    let editor = nodes[0].token("ed", &[("t", "editor")]);
    let mut watchers = Vec::new();
    for node in &nodes {
        let mut w = node.connect("w", &[("t", "viewer")]).await;
        w.join("t").await;
        watchers.push(w);
    }
    let path = "/api/v1/teams/t/patterns/hot";
    let a = call(
        &nodes[0],
        "PUT",
        path,
        Some(&editor),
        &[("if-none-match", "*")],
        Some(json!({"content": 0})),
    )
    .await;
    assert_eq!(a.status, 201);
    for w in &mut watchers {
        let m = w.expect_message().await;
        assert_eq!(
            (m.ty.as_str(), m.data.clone()),
            ("pattern.updated", json!({"name": "hot", "version": 1}))
        );
    }
    let urls: Vec<_> = nodes.iter().take(2).map(|n| n.http(path)).collect();
    racing_puts_one_wins(&urls, &editor).await;
    for w in &mut watchers {
        let m = w.expect_message().await;
        assert_eq!(
            (m.ty.as_str(), m.data.clone()),
            ("pattern.updated", json!({"name": "hot", "version": 2}))
        );
        // Only the winner's notice: nothing else is queued.
        w.roundtrip_strict().await;
    }
}

/// A revocation made while Redis is down still reaches the live sockets of the other
/// node within a second: it is in the shared database's control log, which every node
/// reads every second (pub/sub alone would have lost it).
#[tokio::test]
async fn a_revocation_made_while_redis_is_down_reaches_every_node() {
    let mut redis = crate::redis_broker::PrivateRedis::start();
    redis.wait_ready().await;
    let url = redis.url();
    let prefix = format!("it-{}", uuid::Uuid::new_v4().simple());
    let pg = TestHub::postgres_schema().await;
    let mut nodes = Vec::new();
    for id in ["n0", "n1"] {
        let args = [
            "--redis-url",
            &url,
            "--redis-key-prefix",
            &prefix,
            "--node-id",
            id,
        ];
        nodes.push(TestHub::start_shared(pg.clone(), &args).await);
    }
    let admin = nodes[0].token("ad", &[("t", "admin")]);
    let old = nodes[1].token("mal", &[("t", "editor")]);
    let mut victim = TestClient::connect(ConnectOptions::new(nodes[1].ws_url()).token(old)).await;
    victim.join("t").await;

    redis.stop();
    revoke_mal(&nodes[0], &admin).await;
    // One poll period, plus the request's own time: the contract's second.
    let k = tokio::time::timeout(Duration::from_secs(2), victim.expect_kicked())
        .await
        .expect("the kick reached the other node without Redis");
    assert_eq!((k.team.as_str(), k.reason), ("t", KickReason::Revoked));
}

/// A pattern change made while the broker is unreachable is stored (the write
/// succeeds), and its `pattern.updated` notice reaches sockets on the other node soon
/// after the broker is back: the writer retries it in the background.
#[tokio::test]
async fn a_pattern_notice_made_while_redis_is_down_arrives_after_it_returns() {
    let proxy = teamhub_redis::testing::CutProxy::start(&redis_url()).await;
    let prefix = format!("it-{}", uuid::Uuid::new_v4().simple());
    let pg = TestHub::postgres_schema().await;
    let mut nodes = Vec::new();
    for id in ["n0", "n1"] {
        let args = [
            "--redis-url",
            proxy.url(),
            "--redis-key-prefix",
            &prefix,
            "--node-id",
            id,
        ];
        nodes.push(TestHub::start_shared(pg.clone(), &args).await);
    }
    let editor = nodes[0].token("ed", &[("t", "editor")]);
    let mut watcher = nodes[1].connect("w", &[("t", "viewer")]).await;
    watcher.join("t").await;

    proxy.set_down(true);
    proxy.cut();
    let a = call(
        &nodes[0],
        "PUT",
        "/api/v1/teams/t/patterns/offline",
        Some(&editor),
        &[("if-none-match", "*")],
        Some(json!({"content": 1})),
    )
    .await;
    assert_eq!(
        a.status, 201,
        "the write stands without the broker: {:?}",
        a.body
    );
    proxy.set_down(false);
    let m = tokio::time::timeout(Duration::from_secs(10), watcher.expect_message())
        .await
        .expect("the notice after the broker's return");
    assert_eq!(
        (m.ty.as_str(), m.data.clone()),
        ("pattern.updated", json!({"name": "offline", "version": 1}))
    );
}
