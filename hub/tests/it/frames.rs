//! Section 3: the ops on /ws and the frames they produce.

use serde_json::json;
use teamhub_protocol::{
    ClientOp, ErrorCode, KickReason, Leave, PresenceRequest, Refresh, ReplyBody, ServerFrame,
};

use crate::harness::*;

#[tokio::test]
async fn join_reply_has_every_field() {
    let hub = TestHub::start().await;
    let mut ann = hub.connect("ann", &[("t", "viewer")]).await;
    let reply = ann.join("t").await;
    assert_eq!(reply.team.as_str(), "t");
    assert!(!reply.epoch.is_empty());
    assert_eq!(reply.offset, 0, "0 before the first message");
    assert_eq!(
        reply.presence.len(),
        1,
        "this connection's user is included"
    );
    assert_eq!(
        (reply.presence[0].user.as_str(), reply.presence[0].conns),
        ("ann", 1)
    );
    assert_eq!(reply.presence[0].name.as_deref(), Some("ann name"));
    assert!(!reply.recovered);
    assert!(reply.missed.is_empty());
}

#[tokio::test]
async fn join_needs_a_known_role() {
    let hub = TestHub::start().await;
    let mut c = hub
        .connect("ann", &[("a", "viewer"), ("b", "wizard")])
        .await;
    let id = c
        .send(ClientOp::Join(
            serde_json::from_value(json!({"team": "b"})).unwrap(),
        ))
        .await;
    c.expect_error(Some(id), ErrorCode::Forbidden).await;
    let id = c
        .send(ClientOp::Join(
            serde_json::from_value(json!({"team": "c"})).unwrap(),
        ))
        .await;
    c.expect_error(Some(id), ErrorCode::Forbidden).await;
    // Aliases of editor work.
    let mut d = hub.connect("dev", &[("a", "developer")]).await;
    d.join("a").await;
    d.publish("a", "chat", json!(1), false).await;
}

#[tokio::test]
async fn join_is_idempotent() {
    let hub = TestHub::start().await;
    let mut c = hub.connect("ann", &[("t", "editor")]).await;
    c.join("t").await;
    c.publish("t", "chat", json!(1), false).await;
    let again = c.join("t").await;
    assert_eq!(again.offset, 1);
    assert_eq!(again.presence[0].conns, 1, "one connection, joined twice");
}

#[tokio::test]
async fn publish_fans_out_with_offsets_and_no_self_delivery() {
    let hub = TestHub::start().await;
    let mut ann = hub.connect("ann", &[("t", "editor")]).await;
    let mut bob = hub.connect("bob", &[("t", "viewer")]).await;
    ann.join("t").await;
    bob.join("t").await;
    let o1 = ann
        .publish("t", "chat.message", json!({"text": "hi"}), false)
        .await;
    let o2 = ann
        .publish("t", "chat.message", json!({"text": "again"}), true)
        .await;
    assert_eq!((o1, o2), (1, 2));
    let m = bob.expect_message().await;
    assert_eq!(
        (m.team.as_str(), m.offset, m.ty.as_str(), m.user.as_str()),
        ("t", 1, "chat.message", "ann")
    );
    assert_eq!(m.data, json!({"text": "hi"}));
    assert_eq!(m.ts.len(), 24, "RFC 3339 UTC with milliseconds: {}", m.ts);
    assert!(
        m.ts.ends_with('Z') && m.ts.as_bytes()[19] == b'.',
        "{}",
        m.ts
    );
    assert_eq!(bob.expect_message().await.offset, 2);
    // ann published 1 without echo and 2 with: the first message she sees is 2.
    let own = ann.expect_message().await;
    assert_eq!(
        (own.offset, own.data.clone()),
        (2, json!({"text": "again"}))
    );
}

#[tokio::test]
async fn publish_needs_editor_but_not_a_join_and_reserved_types_are_refused() {
    let hub = TestHub::start().await;
    let mut viewer = hub.connect("v", &[("t", "viewer")]).await;
    let id = viewer
        .send(TestClient::publish_op("t", "chat", json!(1), false))
        .await;
    viewer.expect_error(Some(id), ErrorCode::Forbidden).await;
    let mut editor = hub.connect("e", &[("t", "editor")]).await;
    for ty in ["presence.join", "pattern.updated", "system.x"] {
        let id = editor
            .send(TestClient::publish_op("t", ty, json!(1), false))
            .await;
        editor.expect_error(Some(id), ErrorCode::Forbidden).await;
    }
    assert_eq!(
        editor.publish("t", "chat", json!(null), false).await,
        1,
        "no join needed"
    );
    let id = editor
        .send(TestClient::publish_op("other", "chat", json!(1), false))
        .await;
    editor.expect_error(Some(id), ErrorCode::Forbidden).await;
}

#[tokio::test]
async fn offsets_stay_gapless_under_concurrent_publishers() {
    let hub = TestHub::start_with(&["--rate-limit", "0"]).await;
    let mut watcher = hub.connect("w", &[("t", "viewer")]).await;
    watcher.join("t").await;
    let mut tasks = Vec::new();
    for p in 0..4 {
        let token = hub.token(&format!("p{p}"), &[("t", "editor")]);
        let url = hub.ws_url();
        tasks.push(tokio::spawn(async move {
            let client = teamhub_client::Client::connect(
                teamhub_client::ConnectOptions::new(url).token(token),
            )
            .await
            .unwrap();
            for i in 0..50 {
                client.publish("t", "n", &i, false).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    for expected in 1..=200 {
        assert_eq!(watcher.expect_message().await.offset, expected);
    }
}

#[tokio::test]
async fn leave_stops_delivery() {
    let hub = TestHub::start().await;
    let mut ann = hub
        .connect("ann", &[("t", "editor"), ("u", "editor")])
        .await;
    let mut bob = hub
        .connect("bob", &[("t", "viewer"), ("u", "viewer")])
        .await;
    bob.join("t").await;
    bob.join("u").await;
    let id = bob
        .send(ClientOp::Leave(Leave {
            team: "t".try_into().unwrap(),
        }))
        .await;
    assert!(matches!(bob.expect_reply(id).await, ReplyBody::Empty {}));
    ann.publish("t", "chat", json!("to t"), false).await;
    ann.publish("u", "chat", json!("to u"), false).await;
    // Same outbox, in order: had the message to t arrived, it would come first.
    let m = bob.expect_message().await;
    assert_eq!(m.team.as_str(), "u");
}

#[tokio::test]
async fn presence_op_and_ping() {
    let hub = TestHub::start().await;
    let mut ann = hub.connect("ann", &[("t", "viewer")]).await;
    let mut ann2 = hub.connect("ann", &[("t", "viewer")]).await;
    ann.join("t").await;
    ann2.join("t").await;
    let id = ann
        .send(ClientOp::Presence(PresenceRequest {
            team: "t".try_into().unwrap(),
        }))
        .await;
    match ann.expect_reply(id).await {
        ReplyBody::Presence(p) => assert_eq!((p.presence.len(), p.presence[0].conns), (1, 2)),
        other => panic!("{other:?}"),
    }
    let id = ann.send(ClientOp::Ping).await;
    assert_eq!(ann.next_frame().await, ServerFrame::Pong { id: Some(id) });
    let id = ann
        .send(ClientOp::Presence(PresenceRequest {
            team: "x".try_into().unwrap(),
        }))
        .await;
    ann.expect_error(Some(id), ErrorCode::Forbidden).await;
}

#[tokio::test]
async fn refresh_replaces_claims_and_kicks_from_lost_teams() {
    let hub = TestHub::start().await;
    let mut c = hub
        .connect("ann", &[("a", "viewer"), ("b", "viewer")])
        .await;
    c.join("a").await;
    c.join("b").await;
    let id = c
        .send(ClientOp::Refresh(Refresh {
            token: hub.token("bob", &[("a", "viewer")]),
        }))
        .await;
    c.expect_error(Some(id), ErrorCode::Unauthorized).await;
    let id = c
        .send(ClientOp::Refresh(Refresh {
            token: "garbage".into(),
        }))
        .await;
    c.expect_error(Some(id), ErrorCode::Unauthorized).await;
    let id = c
        .send(ClientOp::Refresh(Refresh {
            token: hub.token("ann", &[("a", "editor")]),
        }))
        .await;
    assert!(matches!(c.expect_reply(id).await, ReplyBody::Refresh(_)));
    match c.next_frame().await {
        ServerFrame::Kicked(k) => {
            assert_eq!((k.team.as_str(), k.reason), ("b", KickReason::RoleRemoved))
        }
        other => panic!("expected kicked, got {other:?}"),
    }
    // The new role applies: ann may now publish in a.
    assert_eq!(c.publish("a", "chat", json!(1), false).await, 1);
}

#[tokio::test]
async fn unknown_fields_are_ignored() {
    let hub = TestHub::start().await;
    let mut c = hub.connect("ann", &[("t", "viewer")]).await;
    c.send_text(r#"{"op":"ping","id":9,"extra":{"nested":[1,2]}}"#)
        .await;
    assert_eq!(c.next_frame().await, ServerFrame::Pong { id: Some(9) });
}
