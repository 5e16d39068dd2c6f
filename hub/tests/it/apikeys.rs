//! API keys over REST and on sockets, on SQLite and on Postgres.

use serde_json::json;
use teamhub_client::ConnectOptions;
use teamhub_protocol::{ErrorCode, KickReason};

use crate::harness::*;

const K: &str = "/api/v1/teams/t/api-keys";

async fn create(hub: &TestHub, token: &str, name: &str, role: &str) -> Answer {
    call(
        hub,
        "POST",
        K,
        Some(token),
        &[],
        Some(json!({"name": name, "role": role})),
    )
    .await
}

async fn lifecycle(backend: Db) {
    let mut hub = TestHub::start_on(backend, &[]).await;
    let admin = hub.token("ad", &[("t", "admin"), ("u", "owner")]);

    let a = create(&hub, &admin, "ci bot", "editor").await;
    assert_eq!(a.status, 201, "{:?}", a.body);
    let key = a.body["key"].as_str().unwrap().to_owned();
    let id = a.body["id"].as_str().unwrap().to_owned();
    assert!(key.starts_with("thk_") && key.len() >= 4 + 43, "{key}");
    assert_eq!(a.body["name"], "ci bot");
    assert_eq!(a.body["role"], "editor");
    assert_eq!(a.body["prefix"].as_str().unwrap(), &key[..12]);
    assert!(a.body["created_at"].as_str().unwrap().ends_with('Z'));
    let fields: Vec<&str> = a
        .body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(fields.len(), 6, "{fields:?}");

    // Listed without the key or its hash.
    let viewer_key = create(&hub, &admin, "dash", "viewer").await;
    assert_eq!(viewer_key.status, 201);
    let a = call(&hub, "GET", K, Some(&admin), &[], None).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.body["team"], "t");
    let listed = a.body["api_keys"].as_array().unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0]["id"], id.as_str());
    assert_eq!(listed[0]["prefix"], &key[..12]);
    assert_eq!(listed[0]["created_by"], "ad");
    let text = a.body.to_string();
    assert!(
        !text.contains(&key) && !text.contains("hash") && !text.contains("\"key\""),
        "{text}"
    );

    // The key acts as its role in its one team, as apikey:<id>.
    let mut sub = hub.connect("s", &[("t", "viewer")]).await;
    sub.join("t").await;
    let a = call(
        &hub,
        "POST",
        "/api/v1/teams/t/messages",
        Some(&key),
        &[],
        Some(json!({"type": "build.done", "data": 1})),
    )
    .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let m = sub.expect_message().await;
    assert_eq!(m.user.as_str(), format!("apikey:{id}"));
    let a = call(
        &hub,
        "GET",
        "/api/v1/teams/t/presence",
        Some(&key),
        &[],
        None,
    )
    .await;
    assert_eq!(a.status, 200);
    let a = call(
        &hub,
        "GET",
        "/api/v1/teams/u/presence",
        Some(&key),
        &[],
        None,
    )
    .await;
    assert_eq!((a.status, a.code()), (403, "forbidden"), "one team only");
    let a = call(&hub, "GET", K, Some(&key), &[], None).await;
    assert_eq!(
        (a.status, a.code()),
        (403, "forbidden"),
        "an editor key is not an admin"
    );
    let vk = viewer_key.body["key"].as_str().unwrap();
    let a = call(
        &hub,
        "POST",
        "/api/v1/teams/t/messages",
        Some(vk),
        &[],
        Some(json!({"type": "x", "data": 1})),
    )
    .await;
    assert_eq!((a.status, a.code()), (403, "forbidden"));

    // Sockets: ?token= and Authorization header.
    let mut by_query =
        TestClient::connect(ConnectOptions::new(hub.ws_url()).token(key.clone())).await;
    by_query.join("t").await;
    let id_forbidden = by_query
        .send(teamhub_protocol::ClientOp::Join(
            serde_json::from_value(json!({"team": "u"})).unwrap(),
        ))
        .await;
    by_query
        .expect_error(Some(id_forbidden), ErrorCode::Forbidden)
        .await;
    let mut by_header = TestClient::connect(header_client(hub.ws_url(), key.clone())).await;
    by_header.join("t").await;
    let mut idle = TestClient::connect(ConnectOptions::new(hub.ws_url()).token(key.clone())).await;
    idle.roundtrip().await;

    // Unknown and malformed keys: 401, at the handshake too.
    let forged = format!("thk_{}", "A".repeat(43));
    for bad in [forged.as_str(), "thk_", "thk_short"] {
        let a = call(
            &hub,
            "GET",
            "/api/v1/teams/t/presence",
            Some(bad),
            &[],
            None,
        )
        .await;
        assert_eq!((a.status, a.code()), (401, "unauthorized"), "{bad}");
    }
    match TestClient::try_connect(ConnectOptions::new(hub.ws_url()).token(forged)).await {
        Err(teamhub_client::ClientError::Http { status: 401, .. }) => {}
        other => panic!("forged key at the handshake: {:?}", other.map(|_| ())),
    }

    // Delete: joined sockets are kicked and closed 4001, idle ones closed, and the key
    // stops working.
    let a = call(
        &hub,
        "DELETE",
        &format!("{K}/{id}"),
        Some(&admin),
        &[],
        None,
    )
    .await;
    assert_eq!(a.status, 204);
    for c in [&mut by_query, &mut by_header] {
        let k = c.expect_kicked().await;
        assert_eq!((k.team.as_str(), k.reason), ("t", KickReason::Revoked));
        assert_eq!(c.expect_close().await.0, Some(4001));
    }
    assert_eq!(idle.expect_close().await.0, Some(4001));
    let a = call(
        &hub,
        "GET",
        "/api/v1/teams/t/presence",
        Some(&key),
        &[],
        None,
    )
    .await;
    assert_eq!((a.status, a.code()), (401, "unauthorized"));
    match TestClient::try_connect(ConnectOptions::new(hub.ws_url()).token(key.clone())).await {
        Err(teamhub_client::ClientError::Http { status: 401, .. }) => {}
        other => panic!("deleted key at the handshake: {:?}", other.map(|_| ())),
    }
    let a = call(
        &hub,
        "DELETE",
        &format!("{K}/{id}"),
        Some(&admin),
        &[],
        None,
    )
    .await;
    assert_eq!((a.status, a.code()), (404, "not_found"));
    let a = call(
        &hub,
        "DELETE",
        &format!(
            "/api/v1/teams/u/api-keys/{}",
            viewer_key.body["id"].as_str().unwrap()
        ),
        Some(&admin),
        &[],
        None,
    )
    .await;
    assert_eq!(
        (a.status, a.code()),
        (404, "not_found"),
        "keys are scoped to their team"
    );
    let a = call(
        &hub,
        "DELETE",
        &format!("{K}/bad%20id"),
        Some(&admin),
        &[],
        None,
    )
    .await;
    assert_eq!((a.status, a.code()), (400, "bad_request"));
    let a = call(&hub, "GET", K, Some(&admin), &[], None).await;
    assert_eq!(a.body["api_keys"].as_array().unwrap().len(), 1);

    let rows = hub.activity_after_drain("t").await;
    let mut actions: Vec<(&str, Option<&str>)> = rows
        .iter()
        .filter(|r| r.action.starts_with("apikey."))
        .map(|r| (r.action.as_str(), r.resource_id.as_deref()))
        .collect();
    actions.sort();
    let vid = viewer_key.body["id"].as_str().unwrap();
    let mut expected = vec![
        ("apikey.created", Some(id.as_str())),
        ("apikey.created", Some(vid)),
        ("apikey.deleted", Some(id.as_str())),
    ];
    expected.sort();
    assert_eq!(actions, expected);
    assert!(
        !rows.iter().any(|r| r.metadata.to_string().contains(&key)),
        "the key is never logged"
    );
}

async fn creation_rules(backend: Db) {
    let hub = TestHub::start_on(backend, &[]).await;
    let admin = hub.token("ad", &[("t", "admin")]);
    let owner = hub.token("ow", &[("t", "owner")]);
    let editor = hub.token("ed", &[("t", "editor")]);

    let a = create(&hub, &admin, "too strong", "owner").await;
    assert_eq!(
        (a.status, a.code()),
        (403, "forbidden"),
        "no stronger than the creator"
    );
    assert_eq!(create(&hub, &owner, "ok", "owner").await.status, 201);
    assert_eq!(create(&hub, &admin, "ok", "admin").await.status, 201);
    assert_eq!(
        create(&hub, &admin, "alias", "member").await.body["role"],
        "editor"
    );
    let a = create(&hub, &editor, "x", "viewer").await;
    assert_eq!(
        (a.status, a.code()),
        (403, "forbidden"),
        "admins manage keys"
    );
    let a = call(&hub, "GET", K, Some(&editor), &[], None).await;
    assert_eq!((a.status, a.code()), (403, "forbidden"));
    let a = call(&hub, "GET", K, None, &[], None).await;
    assert_eq!((a.status, a.code()), (401, "unauthorized"));
    for body in [
        json!({"name": "x", "role": "wizard"}),
        json!({"name": "", "role": "viewer"}),
        json!({"name": "x".repeat(129), "role": "viewer"}),
        json!({"role": "viewer"}),
        json!({"name": "x"}),
        json!([1]),
    ] {
        let a = call(&hub, "POST", K, Some(&admin), &[], Some(body.clone())).await;
        assert_eq!((a.status, a.code()), (400, "bad_request"), "{body}");
    }
    let raw = reqwest::Client::new()
        .post(hub.http(K))
        .bearer_auth(&admin)
        .header("content-type", "text/plain")
        .body(json!({"name": "x", "role": "viewer"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), 400);
    let a = call(
        &hub,
        "POST",
        "/api/v1/teams/bad%20team/api-keys",
        Some(&admin),
        &[],
        Some(json!({"name": "x", "role": "viewer"})),
    )
    .await;
    assert_eq!((a.status, a.code()), (400, "bad_request"));
    // Nothing was created by the refused requests.
    let a = call(&hub, "GET", K, Some(&admin), &[], None).await;
    assert_eq!(a.body["api_keys"].as_array().unwrap().len(), 3);
}

crate::on_both_backends!(lifecycle, creation_rules);
