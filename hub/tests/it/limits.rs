//! Per-connection limits: rate, joins, outbound queue, idle timeout.

use std::time::Duration;

use serde_json::json;
use teamhub_protocol::{ClientOp, ErrorCode, ServerFrame};

use crate::harness::*;

#[tokio::test]
async fn rate_limit_refuses_then_closes_4008() {
    let hub = TestHub::start_with(&["--rate-limit", "5"]).await;
    let mut c = hub.connect("ann", &[("t", "viewer")]).await;
    let mut other = hub.connect("bob", &[("t", "viewer")]).await;
    // Burst of 10 (twice the rate) goes through; then refusals carry the frame's id.
    for i in 1..=80u64 {
        c.send_text(&format!(r#"{{"op":"ping","id":{i}}}"#)).await;
    }
    let (mut pongs, mut limited) = (0, 0);
    loop {
        match c.next().await {
            teamhub_client::Incoming::Frame(ServerFrame::Pong { .. }) => pongs += 1,
            teamhub_client::Incoming::Frame(ServerFrame::Error(e)) => {
                assert_eq!(e.code, ErrorCode::RateLimited);
                assert!(e.id.is_some());
                limited += 1;
            }
            teamhub_client::Incoming::Closed { code, .. } => {
                assert_eq!(code, Some(4008));
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(
        (10..=12).contains(&pongs),
        "burst of twice the rate, got {pongs}"
    );
    assert_eq!(limited, 49, "the 50th refusal closes");
    other.roundtrip().await;
}

#[tokio::test]
async fn joins_per_connection_are_capped() {
    let hub = TestHub::start_with(&["--max-joins", "2"]).await;
    let mut c = hub
        .connect("ann", &[("a", "viewer"), ("b", "viewer"), ("c", "viewer")])
        .await;
    c.join("a").await;
    c.join("b").await;
    c.join("b").await; // rejoining is not another team
    let id = c
        .send(ClientOp::Join(
            serde_json::from_value(json!({"team": "c"})).unwrap(),
        ))
        .await;
    let msg = c.expect_error(Some(id), ErrorCode::BadRequest).await;
    assert!(msg.contains("maximum of 2"), "{msg}");
}

#[tokio::test]
async fn a_client_that_cannot_keep_up_is_closed_1013_and_nobody_else_suffers() {
    let hub = TestHub::start_with(&["--outbox-size", "8", "--rate-limit", "0"]).await;
    let mut slow = hub.connect("slow", &[("t", "viewer")]).await;
    slow.join("t").await;
    let mut fast = hub.connect("fast", &[("t", "viewer")]).await;
    fast.join("t").await;
    let publisher = teamhub_client::Client::connect(
        teamhub_client::ConnectOptions::new(hub.ws_url()).token(hub.token("p", &[("t", "editor")])),
    )
    .await
    .unwrap();
    // `slow` stops reading. Big messages fill the socket buffers, then its outbox.
    let blob = "x".repeat(60_000);
    let before = hub.metric("teamhub_outbox_overflows_total").await;
    let mut sent = 0u64;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while hub.metric("teamhub_outbox_overflows_total").await <= before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "slow consumer never overflowed"
        );
        for _ in 0..50 {
            publisher.publish("t", "blob", &blob, false).await.unwrap();
            sent += 1;
        }
        // fast keeps reading everything, in order.
        for _ in 0..50 {
            fast.expect_message().await;
        }
    }
    assert!(sent >= 50);
    assert_eq!(slow.expect_close().await.0, Some(1013));
    publisher.publish("t", "after", &1, false).await.unwrap();
    assert_eq!(fast.expect_message().await.ty.as_str(), "after");
}

#[tokio::test]
async fn a_silent_peer_is_closed_and_a_live_one_is_kept() {
    let hub = TestHub::start_with(&["--ping-interval", "1", "--idle-timeout", "2"]).await;
    let mut silent = hub.connect("s", &[]).await;
    let mut live = hub.connect("l", &[]).await;
    // `live` reads (and so answers pings) for three idle timeouts; `silent` does not read.
    let until = tokio::time::Instant::now() + Duration::from_secs(6);
    if let Ok(r) = tokio::time::timeout_at(until, live.conn.recv()).await {
        panic!("nothing was sent to the live client, got {r:?}");
    }
    live.roundtrip().await;
    assert_eq!(silent.expect_close().await.0, Some(1001));
}
