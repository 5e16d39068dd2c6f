//! Graceful drain on shutdown.

use serde_json::json;

use crate::harness::*;

#[tokio::test]
async fn drain_closes_1012_refuses_new_sockets_and_flushes() {
    let mut hub = TestHub::start().await;
    let mut a = hub.connect("a", &[("t", "editor")]).await;
    let mut b = hub.connect("b", &[("t", "viewer")]).await;
    a.join("t").await;
    b.join("t").await;
    for i in 0..20 {
        a.publish("t", "n", json!(i), false).await;
    }
    let node = hub.node.clone();
    let addr = hub.addr;
    let report = hub.drain().await;
    assert_eq!(report.sessions_left, 0);
    assert!(node.is_draining());
    assert_eq!(a.expect_close().await.0, Some(1012));
    assert_eq!(b.expect_close().await.0, Some(1012));
    // The listener is gone.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    // Every message (and the presence rows) reached the database before exit.
    let db = teamhub_persistence::connect(&format!("sqlite://{}", hub.db_path.display()))
        .await
        .unwrap();
    let rows = db
        .activity_reader()
        .recent(&"t".try_into().unwrap(), 1000)
        .await
        .unwrap();
    let messages = rows.iter().filter(|r| r.action == "n").count();
    assert_eq!(messages, 20);
}

#[tokio::test]
async fn readyz_turns_503_and_new_sockets_get_503_while_draining() {
    let hub = TestHub::start().await;
    let mut a = hub.connect("a", &[]).await;
    // Start the drain without finishing it: a session that is slow to close keeps it open.
    hub.node.start_drain();
    assert_eq!(a.expect_close().await.0, Some(1012));
    // The HTTP listener may already be shutting down; if it still answers, it says 503.
    if let Ok(resp) = reqwest::get(hub.http("/readyz")).await {
        assert_eq!(resp.status(), 503);
    }
    match TestClient::try_connect(
        teamhub_client::ConnectOptions::new(hub.ws_url()).token(hub.token("z", &[])),
    )
    .await
    {
        Err(teamhub_client::ClientError::Http { status, .. }) => assert_eq!(status, 503),
        Err(_) => {} // listener already closed: also a refusal
        Ok(_) => panic!("a draining node accepted a socket"),
    }
    assert!(hub.node.readiness().await.is_err());
}
