//! The activity log written by a node.

use serde_json::json;
use teamhub_protocol::TeamId;

use crate::harness::*;

#[tokio::test]
async fn messages_and_presence_are_recorded_and_ephemeral_types_are_not() {
    let mut hub = TestHub::start().await;
    let mut ann = hub.connect("ann", &[("t", "editor")]).await;
    ann.join("t").await;
    ann.publish(
        "t",
        "doc.edited",
        json!({"resource_type": "doc", "resource_id": "d-1", "n": 1}),
        false,
    )
    .await;
    ann.publish("t", "chat.message", json!({"text": "hi"}), false)
        .await;
    ann.publish("t", "cursor.moved", json!({"x": 1}), false)
        .await;
    ann.publish("t", "typing.start", json!({}), false).await;
    ann.conn.close().await.unwrap();
    hub.drain().await;

    let db = teamhub_persistence::connect(&format!("sqlite://{}", hub.db_path.display()))
        .await
        .unwrap();
    let rows = db
        .activity_reader()
        .recent(&TeamId::new("t").unwrap(), 100)
        .await
        .unwrap();
    let mut actions: Vec<&str> = rows.iter().map(|r| r.action.as_str()).collect();
    actions.sort();
    assert_eq!(
        actions,
        [
            "chat.message",
            "doc.edited",
            "presence.joined",
            "presence.left"
        ]
    );
    let doc = rows.iter().find(|r| r.action == "doc.edited").unwrap();
    assert_eq!(
        (doc.resource_type.as_deref(), doc.resource_id.as_deref()),
        (Some("doc"), Some("d-1"))
    );
    assert_eq!(doc.metadata["n"], 1);
    assert_eq!(doc.ip.as_deref(), Some("127.0.0.1"));
    let chat = rows.iter().find(|r| r.action == "chat.message").unwrap();
    assert_eq!(
        (chat.resource_type.as_deref(), chat.resource_id.as_deref()),
        (Some("message"), Some("2"))
    );
    assert!(rows.iter().all(|r| r.user.as_str() == "ann"));
}
