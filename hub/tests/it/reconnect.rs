//! The client library's reconnect against a real node that drains and comes back on
//! the same port, in a cluster whose other node keeps publishing meanwhile.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::json;
use teamhub_client::protocol::{ErrorCode, MessageFrame};
use teamhub_client::{Backoff, Client, ClientOptions, ConnectOptions, Event, JoinOptions};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use crate::harness::*;

fn redis_url() -> String {
    std::env::var("TEAMHUB_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

async fn next_event(events: &mut mpsc::Receiver<Event>) -> Event {
    tokio::time::timeout(WAIT, events.recv())
        .await
        .expect("an event in time")
        .expect("event stream open")
}

async fn next_message(events: &mut mpsc::Receiver<Event>) -> MessageFrame {
    loop {
        match next_event(events).await {
            Event::Message(m) => return m,
            Event::PresenceDiff(_) => continue,
            other => panic!("expected a message, got {other:?}"),
        }
    }
}

/// Stands in for a node that is up but refusing sockets, as a draining node does:
/// answers `refusals` upgrade requests with 503, reporting each, then lets go of the
/// port (when the returned task ends).
async fn refuse_with_503(
    addr: SocketAddr,
    refusals: usize,
) -> (mpsc::Receiver<()>, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let (tx, rx) = mpsc::channel(refusals);
    let task = tokio::spawn(async move {
        for _ in 0..refusals {
            let (mut socket, _) = listener.accept().await.unwrap();
            let _ = socket
                .write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                .await;
            let _ = socket.shutdown().await;
            tx.send(()).await.unwrap();
        }
    });
    (rx, task)
}

#[tokio::test]
async fn reconnect_retries_through_a_restart_and_rejoins_every_team_with_since() {
    let redis = redis_url();
    let prefix = format!("it-rc-{}", uuid::Uuid::new_v4().simple());
    let flags = [
        "--redis-url",
        &redis,
        "--redis-key-prefix",
        &prefix,
        "--history-size",
        "3",
        "--rate-limit",
        "0",
    ];
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let node_a = teamhub::start_on(&serve_args(&flags, &dir.path().join("a.db")), listener)
        .await
        .unwrap();
    // The node that stays up: publishes while the other one is away.
    let node_b = TestHub::start_with(&flags).await;
    let publisher = Client::connect(
        ConnectOptions::new(node_b.ws_url())
            .token(node_b.token("pub", &[("kept", "editor"), ("trimmed", "editor")])),
    )
    .await
    .unwrap();
    let publish = |team: &'static str, n: u64| {
        let publisher = &publisher;
        async move {
            for i in 0..n {
                publisher
                    .publish(team, "n", &json!(i), false)
                    .await
                    .unwrap();
            }
        }
    };

    let url = format!("ws://{addr}/ws");
    let all_teams = [
        ("kept", "viewer"),
        ("trimmed", "viewer"),
        ("revoked", "viewer"),
    ];
    let client = Client::connect_with(
        ConnectOptions::new(&url).token(token_with("ann", &all_teams, |_| {})),
        ClientOptions::default(),
    )
    .await
    .unwrap();
    let mut events = client.events();
    // `kept` is joined with presence meta, which the reconnect must send again.
    let meta = json!({"doc": "plan.md"});
    let with_meta = JoinOptions {
        meta: Some(meta.clone()),
        ..JoinOptions::default()
    };
    client.join("kept", with_meta).await.unwrap();
    for team in ["trimmed", "revoked"] {
        client.join(team, JoinOptions::default()).await.unwrap();
    }
    publish("kept", 2).await;
    publish("trimmed", 2).await;
    for _ in 0..4 {
        next_message(&mut events).await;
    }

    // Drain: the client sees 1012 and its task ends.
    node_a.drain();
    node_a.wait().await.unwrap();
    loop {
        if let Event::Closed { code, .. } = next_event(&mut events).await {
            assert_eq!(code, Some(1012));
            break;
        }
    }
    // Missed while away: 2 messages in `kept` (history 3 still holds them), 5 in
    // `trimmed` (history 3 no longer reaches back to offset 2).
    publish("kept", 2).await;
    publish("trimmed", 5).await;

    // The address answers 503 twice, then the node comes back on the same port. The
    // new token no longer grants `revoked`.
    let (mut refused, refuser) = refuse_with_503(addr, 2).await;
    let opts = ConnectOptions::new(&url).token(token_with(
        "ann",
        &[("kept", "viewer"), ("trimmed", "viewer")],
        |_| {},
    ));
    let policy =
        Backoff::new(Duration::from_millis(5), Duration::from_millis(50)).max_attempts(500);
    let reconnect = tokio::spawn(async move {
        let mut delays = policy.delays_seeded(7);
        client.reconnect(&opts, &mut delays).await
    });
    for _ in 0..2 {
        tokio::time::timeout(WAIT, refused.recv())
            .await
            .expect("attempts while the node is away")
            .expect("refusal reported");
    }
    refuser.await.unwrap();
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let dir2 = tempfile::tempdir().unwrap();
    let node_a = teamhub::start_on(&serve_args(&flags, &dir2.path().join("a.db")), listener)
        .await
        .unwrap();

    let r = tokio::time::timeout(Duration::from_secs(30), reconnect)
        .await
        .expect("reconnect in time")
        .unwrap()
        .expect("reconnects");
    assert!(
        r.attempts >= 3,
        "two 503s, then success: {} attempts",
        r.attempts
    );
    assert!(!r.all_recovered());
    let teams: Vec<&str> = r.teams.iter().map(|t| t.team.as_str()).collect();
    assert_eq!(teams, ["kept", "revoked", "trimmed"]);

    let kept = &r.teams[0];
    assert!(kept.recovered());
    assert_eq!(kept.since.offset, 2);
    let reply = kept.result.as_ref().unwrap();
    let missed: Vec<u64> = reply.missed.iter().map(|m| m.offset).collect();
    assert_eq!(missed, [3, 4], "exactly what came after since");
    let ann = |reply: &teamhub_client::protocol::JoinReply| {
        let entry = reply.presence.iter().find(|e| e.user.as_str() == "ann");
        entry
            .expect("ann is present")
            .meta
            .clone()
            .map(serde_json::Value::Object)
    };
    assert_eq!(ann(reply), Some(meta), "the join's meta is sent again");

    let revoked = &r.teams[1];
    assert!(!revoked.recovered());
    assert_eq!(
        revoked.result.as_ref().unwrap_err().server_code(),
        Some(ErrorCode::Forbidden)
    );

    let trimmed = &r.teams[2];
    assert!(!trimmed.recovered(), "history no longer covers since");
    let reply = trimmed.result.as_ref().unwrap();
    assert_eq!((reply.offset, reply.missed.len()), (7, 0));
    assert_eq!(ann(reply), None, "joined without meta, rejoined without");

    // Positions carry on from the replies; a refused team is forgotten.
    let client = r.client;
    assert_eq!(client.position("kept").unwrap().offset, 4);
    assert_eq!(client.position("trimmed").unwrap().offset, 7);
    assert_eq!(client.position("revoked"), None);
    // And the new connection is live.
    let mut events = client.events();
    publish("kept", 1).await;
    assert_eq!(next_message(&mut events).await.offset, 5);

    node_a.drain();
    node_a.wait().await.unwrap();
}

#[tokio::test]
async fn reconnect_gives_up_at_once_on_401_and_after_the_attempt_limit() {
    let hub = TestHub::start().await;
    let client = Client::connect(
        ConnectOptions::new(hub.ws_url()).token(hub.token("a", &[("t", "viewer")])),
    )
    .await
    .unwrap();
    client.join("t", JoinOptions::default()).await.unwrap();
    let policy = Backoff::new(Duration::from_millis(1), Duration::from_millis(5));

    // A bad token is not retried: the first attempt's 401 comes back.
    let mut delays = policy.delays_seeded(1);
    let bad = ConnectOptions::new(hub.ws_url()).token("not-a-token");
    match client.reconnect(&bad, &mut delays).await {
        Err(e) => {
            assert!(
                matches!(e, teamhub_client::ClientError::Http { status: 401, .. }),
                "{e}"
            );
            assert!(!e.is_transient());
        }
        Ok(_) => panic!("a bad token connected"),
    }
    assert_eq!(delays.attempts(), 1);
    assert!(client.is_closed(), "reconnect closed the old connection");

    // A port nobody listens on is retried until the limit, then the last error returns.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("ws://{}/ws", dead.local_addr().unwrap());
    drop(dead);
    let mut delays = policy.max_attempts(4).delays_seeded(2);
    let err = client
        .reconnect(
            &ConnectOptions::new(dead_url).token(hub.token("a", &[])),
            &mut delays,
        )
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert_eq!(delays.attempts(), 4);
}
