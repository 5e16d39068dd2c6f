//! REST endpoints of this node: messages, presence, history; and the ops endpoints.

use serde_json::{Value, json};

use crate::harness::*;

async fn post(
    hub: &TestHub,
    path: &str,
    token: Option<&str>,
    content_type: Option<&str>,
    body: String,
) -> (u16, Value) {
    let mut req = reqwest::Client::new().post(hub.http(path)).body(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn get(hub: &TestHub, path: &str, token: Option<&str>) -> (u16, Value) {
    let mut req = reqwest::Client::new().get(hub.http(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<no error body>")
}

#[tokio::test]
async fn publish_over_rest_reaches_sockets() {
    let hub = TestHub::start().await;
    let mut sub = hub.connect("s", &[("t", "viewer")]).await;
    sub.join("t").await;
    let editor = hub.token("ed", &[("t", "editor")]);
    let (status, body) = post(
        &hub,
        "/api/v1/teams/t/messages",
        Some(&editor),
        Some("application/json"),
        json!({"type": "deploy.done", "data": {"v": 2}}).to_string(),
    )
    .await;
    assert_eq!((status, body), (200, json!({"offset": 1})));
    let m = sub.expect_message().await;
    assert_eq!(
        (m.ty.as_str(), m.user.as_str(), m.data.clone()),
        ("deploy.done", "ed", json!({"v": 2}))
    );
}

#[tokio::test]
async fn publish_errors() {
    let hub = TestHub::start_with(&["--max-frame-bytes", "2048"]).await;
    let editor = hub.token("ed", &[("t", "editor")]);
    let viewer = hub.token("v", &[("t", "viewer")]);
    let ok = json!({"type": "x", "data": 1}).to_string();
    let path = "/api/v1/teams/t/messages";
    let json_ct = Some("application/json");
    let cases: Vec<(&str, u16, &str, (u16, Value))> = vec![
        (
            "no token",
            401,
            "unauthorized",
            post(&hub, path, None, json_ct, ok.clone()).await,
        ),
        (
            "bad token",
            401,
            "unauthorized",
            post(&hub, path, Some("nope"), json_ct, ok.clone()).await,
        ),
        (
            "viewer",
            403,
            "forbidden",
            post(&hub, path, Some(&viewer), json_ct, ok.clone()).await,
        ),
        (
            "other team",
            403,
            "forbidden",
            post(
                &hub,
                "/api/v1/teams/u/messages",
                Some(&editor),
                json_ct,
                ok.clone(),
            )
            .await,
        ),
        (
            "bad team id",
            400,
            "bad_request",
            post(
                &hub,
                "/api/v1/teams/b%20d/messages",
                Some(&editor),
                json_ct,
                ok.clone(),
            )
            .await,
        ),
        (
            "malformed json",
            400,
            "bad_request",
            post(&hub, path, Some(&editor), json_ct, "{".into()).await,
        ),
        (
            "missing type",
            400,
            "bad_request",
            post(
                &hub,
                path,
                Some(&editor),
                json_ct,
                json!({"data": 1}).to_string(),
            )
            .await,
        ),
        (
            "bad type",
            400,
            "bad_request",
            post(
                &hub,
                path,
                Some(&editor),
                json_ct,
                json!({"type": "a b", "data": 1}).to_string(),
            )
            .await,
        ),
        (
            "wrong content type",
            400,
            "bad_request",
            post(&hub, path, Some(&editor), Some("text/plain"), ok.clone()).await,
        ),
        (
            "no content type",
            400,
            "bad_request",
            post(&hub, path, Some(&editor), None, ok.clone()).await,
        ),
        (
            "reserved type",
            403,
            "forbidden",
            post(
                &hub,
                path,
                Some(&editor),
                json_ct,
                json!({"type": "system.x", "data": 1}).to_string(),
            )
            .await,
        ),
        (
            "oversize",
            413,
            "too_large",
            post(
                &hub,
                path,
                Some(&editor),
                json_ct,
                json!({"type": "x", "data": "y".repeat(4096)}).to_string(),
            )
            .await,
        ),
    ];
    for (what, status, expected, (got_status, body)) in cases {
        assert_eq!(
            (got_status, code(&body)),
            (status, expected),
            "{what}: {body}"
        );
    }
    // Nothing above was published.
    let (_, history) = get(&hub, "/api/v1/teams/t/history", Some(&viewer)).await;
    assert_eq!(history["offset"], 0);
}

#[tokio::test]
async fn presence_and_history() {
    let hub = TestHub::start().await;
    let viewer = hub.token("v", &[("t", "viewer")]);
    let mut ann = hub.connect("ann", &[("t", "editor")]).await;
    ann.join("t").await;
    for i in 1..=5 {
        ann.publish("t", "n", json!(i), false).await;
    }
    let (status, body) = get(&hub, "/api/v1/teams/t/presence", Some(&viewer)).await;
    assert_eq!(status, 200);
    assert_eq!(body["team"], "t");
    assert_eq!(body["presence"][0]["user"], "ann");
    assert_eq!(body["presence"][0]["conns"], 1);

    let (status, body) = get(
        &hub,
        "/api/v1/teams/t/history?since=2&limit=2",
        Some(&viewer),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        (body["team"].clone(), body["offset"].clone()),
        (json!("t"), json!(5))
    );
    assert!(body["epoch"].is_string());
    let offsets: Vec<_> = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, [3, 4]);
    assert_eq!(body["messages"][0]["op"], "message");
    assert_eq!(body["messages"][0]["data"], 3);

    for (query, status) in [
        ("?limit=abc", 400),
        ("?limit=0", 400),
        ("?limit=1001", 400),
        ("?since=x", 400),
        ("?limit=1000", 200),
    ] {
        let (got, body) = get(
            &hub,
            &format!("/api/v1/teams/t/history{query}"),
            Some(&viewer),
        )
        .await;
        assert_eq!(got, status, "{query}: {body}");
    }
    assert_eq!(get(&hub, "/api/v1/teams/t/history", None).await.0, 401);
    assert_eq!(
        get(&hub, "/api/v1/teams/u/presence", Some(&viewer)).await.0,
        403
    );
}

#[tokio::test]
async fn operations_endpoints() {
    let hub = TestHub::start().await;
    assert_eq!(
        reqwest::get(hub.http("/healthz")).await.unwrap().status(),
        200
    );
    assert_eq!(
        reqwest::get(hub.http("/readyz")).await.unwrap().status(),
        200
    );
    let mut c = hub.connect("ann", &[("t", "editor")]).await;
    c.join("t").await;
    c.publish("t", "x", json!(1), false).await;
    let metrics = reqwest::get(hub.http("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "teamhub_connections",
        "teamhub_joins_total",
        "teamhub_frames_in_total",
        "teamhub_messages_published_total",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }
    let (status, body) = get(&hub, "/nope", None).await;
    assert_eq!((status, code(&body)), (404, "not_found"));
}
