//! Reconnecting with `since`.

use serde_json::json;

use crate::harness::*;

#[tokio::test]
async fn a_reconnecting_client_gets_exactly_what_it_missed() {
    let hub = TestHub::start().await;
    let mut pubr = hub.connect("p", &[("t", "editor")]).await;
    let mut sub = hub.connect("s", &[("t", "viewer")]).await;
    let joined = sub.join("t").await;
    pubr.publish("t", "n", json!(1), false).await;
    let seen = sub.expect_message().await;
    sub.conn.close().await.unwrap();
    for i in 2..=4 {
        pubr.publish("t", "n", json!(i), false).await;
    }
    let mut back = hub.connect("s", &[("t", "viewer")]).await;
    let reply = back
        .join_with(json!({"team": "t", "since": {"epoch": joined.epoch, "offset": seen.offset}}))
        .await;
    assert!(reply.recovered);
    assert_eq!(reply.offset, 4);
    let offsets: Vec<u64> = reply.missed.iter().map(|m| m.offset).collect();
    assert_eq!(offsets, [2, 3, 4]);
    assert_eq!(reply.missed[2].data, json!(4));
    // Live delivery continues after the reply, with nothing twice.
    pubr.publish("t", "n", json!(5), false).await;
    assert_eq!(back.expect_message().await.offset, 5);
}

#[tokio::test]
async fn another_epoch_or_evicted_history_is_not_recovered() {
    let hub = TestHub::start_with(&["--history-size", "2"]).await;
    let mut pubr = hub.connect("p", &[("t", "editor")]).await;
    let epoch = pubr.join("t").await.epoch;
    for i in 1..=5 {
        pubr.publish("t", "n", json!(i), false).await;
    }
    let mut c = hub.connect("s", &[("t", "viewer")]).await;
    let r = c
        .join_with(json!({"team": "t", "since": {"epoch": "not-the-epoch", "offset": 4}}))
        .await;
    assert!(!r.recovered && r.missed.is_empty());
    let r = c
        .join_with(json!({"team": "t", "since": {"epoch": epoch, "offset": 1}}))
        .await;
    assert!(!r.recovered && r.missed.is_empty(), "2 was evicted");
    let r = c
        .join_with(json!({"team": "t", "since": {"epoch": epoch, "offset": 3}}))
        .await;
    assert!(r.recovered);
    assert_eq!(
        r.missed.iter().map(|m| m.offset).collect::<Vec<_>>(),
        [4, 5]
    );
    let r = c
        .join_with(json!({"team": "t", "since": {"epoch": epoch, "offset": 9}}))
        .await;
    assert!(!r.recovered, "an offset the team never reached");
}

#[tokio::test]
async fn a_restarted_node_has_a_new_epoch() {
    let mut first = TestHub::start().await;
    let mut c = first.connect("s", &[("t", "viewer")]).await;
    let epoch = c.join("t").await.epoch;
    drop(c);
    first.drain().await;
    let second = TestHub::start().await;
    let mut c = second.connect("s", &[("t", "viewer")]).await;
    let r = c
        .join_with(json!({"team": "t", "since": {"epoch": epoch, "offset": 0}}))
        .await;
    assert!(
        !r.recovered,
        "history from before the restart is gone, and the epoch says so"
    );
}
