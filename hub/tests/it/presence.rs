//! Presence: user-level diffs and connection counts.

use teamhub_protocol::ServerFrame;

use crate::harness::*;

#[tokio::test]
async fn diffs_are_user_level_and_never_about_oneself() {
    let hub = TestHub::start().await;
    let mut ann = hub.connect("ann", &[("t", "viewer")]).await;
    ann.join("t").await;

    let mut bob = hub.connect("bob", &[("t", "viewer")]).await;
    let reply = bob.join("t").await;
    let users: Vec<_> = reply.presence.iter().map(|e| e.user.as_str()).collect();
    assert_eq!(users, ["ann", "bob"]);
    let d = ann.expect_diff().await;
    assert_eq!(
        (d.team.as_str(), d.joins.len(), d.leaves.len()),
        ("t", 1, 0)
    );
    assert_eq!((d.joins[0].user.as_str(), d.joins[0].conns), ("bob", 1));
    // ann got the diff, so fan-out has passed bob's outbox too; bob's own join must have
    // been filtered: his very next frame is the pong.
    let id = bob.send(teamhub_protocol::ClientOp::Ping).await;
    assert_eq!(bob.next_frame().await, ServerFrame::Pong { id: Some(id) });

    // A second connection of bob is not a join; closing one of two is not a leave.
    let mut bob2 = hub.connect("bob", &[("t", "viewer")]).await;
    assert_eq!(
        bob2.join("t")
            .await
            .presence
            .iter()
            .find(|e| e.user.as_str() == "bob")
            .unwrap()
            .conns,
        2
    );
    bob2.conn.close().await.unwrap();
    drop(bob2);
    bob.conn.close().await.unwrap();
    let d = ann.expect_diff().await;
    assert_eq!(
        (d.joins.len(), d.leaves.len()),
        (0, 1),
        "only the last connection leaving is a leave"
    );
    assert_eq!(d.leaves[0].user.as_str(), "bob");
}

#[tokio::test]
async fn meta_shows_in_presence() {
    let hub = TestHub::start().await;
    let mut ann = hub.connect("ann", &[("t", "viewer")]).await;
    let reply = ann
        .join_with(serde_json::json!({"team": "t", "meta": {"status": "busy"}}))
        .await;
    assert_eq!(reply.presence[0].meta.as_ref().unwrap()["status"], "busy");
    let mut bob = hub.connect("bob", &[("t", "viewer")]).await;
    bob.join("t").await;
    let id = bob
        .send(teamhub_protocol::ClientOp::Presence(
            teamhub_protocol::PresenceRequest {
                team: "t".try_into().unwrap(),
            },
        ))
        .await;
    match bob.next_frame().await {
        ServerFrame::Reply(r) if r.id == Some(id) => match r.body {
            teamhub_protocol::ReplyBody::Presence(p) => {
                let ann = p
                    .presence
                    .iter()
                    .find(|e| e.user.as_str() == "ann")
                    .unwrap();
                assert_eq!(ann.meta.as_ref().unwrap()["status"], "busy");
                assert!(
                    p.presence
                        .iter()
                        .find(|e| e.user.as_str() == "bob")
                        .unwrap()
                        .meta
                        .is_none()
                );
            }
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_dropped_socket_leaves_presence() {
    let hub = TestHub::start().await;
    let mut ann = hub.connect("ann", &[("t", "viewer")]).await;
    ann.join("t").await;
    let mut bob = hub.connect("bob", &[("t", "viewer")]).await;
    bob.join("t").await;
    assert_eq!(ann.expect_diff().await.joins.len(), 1);
    drop(bob); // no close handshake: the TCP connection just goes
    let d = ann.expect_diff().await;
    assert_eq!(d.leaves[0].user.as_str(), "bob");
}
