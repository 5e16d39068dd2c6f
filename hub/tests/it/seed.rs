//! The seed-compatible endpoint `/ws/{team}`.

use serde_json::json;
use teamhub_client::{ConnectOptions, Incoming};
use teamhub_protocol::SeedFrame;

use crate::harness::*;

fn seed_url(hub: &TestHub, team: &str, token: &str) -> ConnectOptions {
    ConnectOptions::new(format!("ws://{}/ws/{team}?token={token}", hub.addr))
}

async fn next_seed(c: &mut TestClient) -> SeedFrame {
    match c.next().await {
        Incoming::Seed(f) => f,
        Incoming::Text(t) => panic!("not exactly {{type,user_id,data}}: {t}"),
        other => panic!("expected a seed frame, got {other:?}"),
    }
}

#[tokio::test]
async fn seed_clients_get_three_field_frames_from_others_only() {
    let hub = TestHub::start().await;
    let mut seed =
        TestClient::connect(seed_url(&hub, "t", &hub.token("sam", &[("t", "editor")]))).await;
    let mut ann = hub.connect("ann", &[("t", "editor")]).await;
    ann.join("t").await;
    let join = next_seed(&mut seed).await;
    assert_eq!(
        (join.ty.as_str(), join.user_id.as_str()),
        ("presence.join", "ann")
    );
    assert_eq!(join.data, json!({"user": "ann", "name": "ann name"}));

    ann.publish("t", "chat", json!({"text": "hi"}), false).await;
    let m = next_seed(&mut seed).await;
    assert_eq!(
        m,
        SeedFrame {
            ty: "chat".try_into().unwrap(),
            user_id: "ann".try_into().unwrap(),
            data: json!({"text": "hi"})
        }
    );

    // The seed client publishes; /ws clients get a normal message, the seed client nothing.
    seed.send_text(&json!({"type": "chat", "data": "from seed"}).to_string())
        .await;
    let m = ann.expect_message().await;
    assert_eq!(
        (m.user.as_str(), m.data.clone()),
        ("sam", json!("from seed"))
    );
    ann.publish("t", "chat", json!("next"), false).await;
    assert_eq!(
        next_seed(&mut seed).await.data,
        json!("next"),
        "its own message was not sent back"
    );

    ann.conn.close().await.unwrap();
    let leave = next_seed(&mut seed).await;
    assert_eq!(
        (leave.ty.as_str(), leave.user_id.as_str()),
        ("presence.leave", "ann")
    );
}

#[tokio::test]
async fn seed_non_members_are_closed_1008_and_errors_keep_the_framing() {
    let hub = TestHub::start().await;
    let mut outsider =
        TestClient::connect(seed_url(&hub, "t", &hub.token("o", &[("u", "owner")]))).await;
    let (code, reason) = outsider.expect_close().await;
    assert_eq!((code, reason.as_str()), (Some(1008), "not a team member"));

    let mut viewer =
        TestClient::connect(seed_url(&hub, "t", &hub.token("v", &[("t", "viewer")]))).await;
    viewer
        .send_text(&json!({"type": "chat", "data": 1}).to_string())
        .await;
    let e = next_seed(&mut viewer).await;
    assert_eq!(
        (e.ty.as_str(), e.user_id.as_str()),
        ("system.error", "system")
    );
    assert_eq!(e.data["code"], "forbidden");
    viewer.send_text("{").await;
    assert_eq!(next_seed(&mut viewer).await.data["code"], "bad_request");

    let bad = TestClient::try_connect(seed_url(
        &hub,
        "bad%20team",
        &hub.token("v", &[("t", "viewer")]),
    ))
    .await;
    assert!(matches!(
        bad,
        Err(teamhub_client::ClientError::Http { status: 400, .. })
    ));
    let unauth =
        TestClient::try_connect(ConnectOptions::new(format!("ws://{}/ws/t", hub.addr))).await;
    assert!(matches!(
        unauth,
        Err(teamhub_client::ClientError::Http { status: 401, .. })
    ));
}
