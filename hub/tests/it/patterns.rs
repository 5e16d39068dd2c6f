//! The pattern library over REST, on SQLite and on Postgres: every status code, the
//! change feed, racing writers, and the live `pattern.updated` notices.

use serde_json::{Value, json};

use crate::harness::*;

const P: &str = "/api/v1/teams/t/patterns";

fn tokens(hub: &TestHub) -> (String, String, String) {
    (
        hub.token("vic", &[("t", "viewer")]),
        hub.token("ed", &[("t", "editor")]),
        hub.token("ad", &[("t", "admin")]),
    )
}

async fn lifecycle(backend: Db) {
    let mut hub = TestHub::start_on(backend, &[]).await;
    let (viewer, editor, admin) = tokens(&hub);
    let path = format!("{P}/greeting");
    let put = |token: String, headers: Vec<(&'static str, String)>, body: Value| {
        let (hub, path) = (&hub, path.clone());
        async move {
            let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            call(hub, "PUT", &path, Some(&token), &h, Some(body)).await
        }
    };

    // Missing: 404; the empty feed is at version 0.
    let a = call(&hub, "GET", &path, Some(&viewer), &[], None).await;
    assert_eq!((a.status, a.code()), (404, "not_found"));
    let a = call(&hub, "GET", P, Some(&viewer), &[], None).await;
    assert_eq!(
        (a.status, a.body.clone()),
        (200, json!({"version": 0, "patterns": []}))
    );

    // Create.
    let a = put(
        editor.clone(),
        vec![("if-none-match", "*".into())],
        json!({"content": {"text": "hi", "n": [1]}}),
    )
    .await;
    assert_eq!(a.status, 201, "{:?}", a.body);
    assert_eq!(a.etag(), Some("\"1\""));
    assert_eq!(a.body["name"], "greeting");
    assert_eq!(a.body["version"], 1);
    assert_eq!(a.body["content"], json!({"text": "hi", "n": [1]}));
    assert_eq!(a.body["updated_by"], "ed");
    assert_eq!(a.body["deleted"], false);
    assert!(a.body["updated_at"].as_str().unwrap().ends_with('Z'));
    let created = a.body.clone();

    // Read, conditional read.
    let a = call(&hub, "GET", &path, Some(&viewer), &[], None).await;
    assert_eq!(
        (a.status, a.etag(), &a.body),
        (200, Some("\"1\""), &created)
    );
    let a = call(
        &hub,
        "GET",
        &path,
        Some(&viewer),
        &[("if-none-match", "\"1\"")],
        None,
    )
    .await;
    assert_eq!((a.status, a.etag()), (304, Some("\"1\"")));
    let a = call(
        &hub,
        "GET",
        &path,
        Some(&viewer),
        &[("if-none-match", "\"0\"")],
        None,
    )
    .await;
    assert_eq!(a.status, 200);
    let a = call(
        &hub,
        "GET",
        &path,
        Some(&viewer),
        &[("if-none-match", "1")],
        None,
    )
    .await;
    assert_eq!((a.status, a.code()), (400, "bad_request"));

    // Create over an existing pattern: 409 with the current one.
    let a = put(
        editor.clone(),
        vec![("if-none-match", "*".into())],
        json!({"content": 2}),
    )
    .await;
    assert_eq!((a.status, a.code()), (409, "conflict"));
    assert_eq!(a.body["current"], created);

    // Update, then a stale update.
    let a = put(
        editor.clone(),
        vec![("if-match", "\"1\"".into())],
        json!({"content": "two"}),
    )
    .await;
    assert_eq!((a.status, a.etag()), (200, Some("\"2\"")));
    assert_eq!(
        (a.body["version"].clone(), a.body["content"].clone()),
        (json!(2), json!("two"))
    );
    let updated = a.body.clone();
    let a = put(
        editor.clone(),
        vec![("if-match", "\"1\"".into())],
        json!({"content": "stale"}),
    )
    .await;
    assert_eq!((a.status, a.code()), (409, "conflict"));
    assert_eq!(a.body["current"], updated);

    // Preconditions and bodies.
    let a = put(editor.clone(), vec![], json!({"content": 1})).await;
    assert_eq!((a.status, a.code()), (428, "precondition_required"));
    for bad in ["2", "\"two\"", "W/\"2\"", "*", ""] {
        let a = put(
            editor.clone(),
            vec![("if-match", bad.into())],
            json!({"content": 1}),
        )
        .await;
        assert_eq!(
            (a.status, a.code()),
            (400, "bad_request"),
            "If-Match {bad:?}"
        );
    }
    let a = put(
        editor.clone(),
        vec![("if-none-match", "\"2\"".into())],
        json!({"content": 1}),
    )
    .await;
    assert_eq!((a.status, a.code()), (400, "bad_request"));
    let a = put(
        editor.clone(),
        vec![("if-match", "\"2\"".into()), ("if-none-match", "*".into())],
        json!({"content": 1}),
    )
    .await;
    assert_eq!((a.status, a.code()), (400, "bad_request"));
    let a = put(
        editor.clone(),
        vec![("if-match", "\"2\"".into())],
        json!({"text": "no content field"}),
    )
    .await;
    assert_eq!((a.status, a.code()), (400, "bad_request"));
    let a = call(
        &hub,
        "PUT",
        &path,
        Some(&editor),
        &[("if-match", "\"2\""), ("content-type", "application/json")],
        None,
    )
    .await;
    assert_eq!((a.status, a.code()), (400, "bad_request"), "empty body");
    let raw = reqwest::Client::new()
        .put(hub.http(&path))
        .bearer_auth(&editor)
        .header("if-match", "\"2\"")
        .header("content-type", "application/json")
        .body("{\"content\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), 400, "malformed JSON");
    let raw = reqwest::Client::new()
        .put(hub.http(&path))
        .bearer_auth(&editor)
        .header("if-match", "\"2\"")
        .header("content-type", "text/plain")
        .body("{\"content\": 1}")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), 400, "wrong content type");
    let big = json!({"content": "x".repeat(100 * 1024)});
    let a = put(editor.clone(), vec![("if-match", "\"2\"".into())], big).await;
    assert_eq!((a.status, a.code()), (413, "too_large"));

    // If-Match on a name that never existed is 404; bad names are 400.
    let a = call(
        &hub,
        "PUT",
        &format!("{P}/nope"),
        Some(&editor),
        &[("if-match", "\"1\"")],
        Some(json!({"content": 1})),
    )
    .await;
    assert_eq!((a.status, a.code()), (404, "not_found"));
    for bad in ["bad%20name", "a%2Fb", &"x".repeat(129)] {
        let a = call(
            &hub,
            "PUT",
            &format!("{P}/{bad}"),
            Some(&editor),
            &[("if-none-match", "*")],
            Some(json!({"content": 1})),
        )
        .await;
        assert_eq!((a.status, a.code()), (400, "bad_request"), "{bad}");
        let a = call(&hub, "GET", &format!("{P}/{bad}"), Some(&viewer), &[], None).await;
        assert_eq!((a.status, a.code()), (400, "bad_request"), "{bad}");
    }
    let a = call(
        &hub,
        "GET",
        "/api/v1/teams/bad%20team/patterns",
        Some(&viewer),
        &[],
        None,
    )
    .await;
    assert_eq!((a.status, a.code()), (400, "bad_request"));
    let a = call(
        &hub,
        "GET",
        &format!("{P}?since_version=-1"),
        Some(&viewer),
        &[],
        None,
    )
    .await;
    assert_eq!((a.status, a.code()), (400, "bad_request"));

    // Roles.
    let a = put(
        viewer.clone(),
        vec![("if-match", "\"2\"".into())],
        json!({"content": 1}),
    )
    .await;
    assert_eq!((a.status, a.code()), (403, "forbidden"));
    let a = call(
        &hub,
        "DELETE",
        &path,
        Some(&editor),
        &[("if-match", "\"2\"")],
        None,
    )
    .await;
    assert_eq!((a.status, a.code()), (403, "forbidden"));
    let outsider = hub.token("out", &[("other", "owner")]);
    let a = call(&hub, "GET", P, Some(&outsider), &[], None).await;
    assert_eq!((a.status, a.code()), (403, "forbidden"));
    let a = call(&hub, "GET", P, None, &[], None).await;
    assert_eq!((a.status, a.code()), (401, "unauthorized"));

    // Delete: 428 without If-Match, 409 stale, 204, then 404.
    let a = call(&hub, "DELETE", &path, Some(&admin), &[], None).await;
    assert_eq!((a.status, a.code()), (428, "precondition_required"));
    let a = call(
        &hub,
        "DELETE",
        &path,
        Some(&admin),
        &[("if-match", "nope")],
        None,
    )
    .await;
    assert_eq!((a.status, a.code()), (400, "bad_request"));
    let a = call(
        &hub,
        "DELETE",
        &path,
        Some(&admin),
        &[("if-match", "\"1\"")],
        None,
    )
    .await;
    assert_eq!((a.status, a.code()), (409, "conflict"));
    assert_eq!(a.body["current"], updated);
    let a = call(
        &hub,
        "DELETE",
        &path,
        Some(&admin),
        &[("if-match", "\"2\"")],
        None,
    )
    .await;
    assert_eq!(a.status, 204);
    let a = call(&hub, "GET", &path, Some(&viewer), &[], None).await;
    assert_eq!((a.status, a.code()), (404, "not_found"));
    let a = call(
        &hub,
        "DELETE",
        &path,
        Some(&admin),
        &[("if-match", "\"3\"")],
        None,
    )
    .await;
    assert_eq!((a.status, a.code()), (404, "not_found"));
    // Updating the deleted pattern conflicts, showing the tombstone.
    let a = put(
        editor.clone(),
        vec![("if-match", "\"2\"".into())],
        json!({"content": 1}),
    )
    .await;
    assert_eq!((a.status, a.code()), (409, "conflict"));
    assert_eq!(
        (
            a.body["current"]["deleted"].clone(),
            a.body["current"]["version"].clone()
        ),
        (json!(true), json!(3))
    );

    // The feed: every change after V, tombstones included; failed writes took no version.
    let b = put(
        editor.clone(),
        vec![("if-none-match", "*".into())],
        json!({"content": null}),
    )
    .await;
    assert_eq!(b.status, 201);
    let a = call(
        &hub,
        "PUT",
        &format!("{P}/other"),
        Some(&editor),
        &[("if-none-match", "*")],
        Some(json!({"content": [1, 2]})),
    )
    .await;
    assert_eq!(a.body["version"], 5);
    let a = call(
        &hub,
        "GET",
        &format!("{P}?since_version=2"),
        Some(&viewer),
        &[],
        None,
    )
    .await;
    assert_eq!(a.status, 200);
    assert_eq!(a.body["version"], 5);
    let names: Vec<(String, u64, bool)> = a.body["patterns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_owned(),
                p["version"].as_u64().unwrap(),
                p["deleted"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        names,
        [
            ("greeting".to_owned(), 4, false),
            ("other".to_owned(), 5, false)
        ]
    );
    let a = call(
        &hub,
        "GET",
        &format!("{P}?since_version=5"),
        Some(&viewer),
        &[],
        None,
    )
    .await;
    assert_eq!(a.body, json!({"version": 5, "patterns": []}));

    // The activity log has every change.
    let rows = hub.activity_after_drain("t").await;
    let mut changes: Vec<(String, Option<String>, Value)> = rows
        .iter()
        .filter(|r| r.action.starts_with("pattern."))
        .map(|r| {
            (
                r.action.clone(),
                r.resource_id.clone(),
                r.metadata["version"].clone(),
            )
        })
        .collect();
    changes.sort_by_key(|c| c.2.as_u64());
    assert_eq!(
        changes,
        [
            (
                "pattern.updated".to_owned(),
                Some("greeting".to_owned()),
                json!(1)
            ),
            (
                "pattern.updated".to_owned(),
                Some("greeting".to_owned()),
                json!(2)
            ),
            (
                "pattern.deleted".to_owned(),
                Some("greeting".to_owned()),
                json!(3)
            ),
            (
                "pattern.updated".to_owned(),
                Some("greeting".to_owned()),
                json!(4)
            ),
            (
                "pattern.updated".to_owned(),
                Some("other".to_owned()),
                json!(5)
            ),
        ]
    );
    assert!(
        rows.iter()
            .filter(|r| r.action.starts_with("pattern."))
            .all(|r| r.resource_type.as_deref() == Some("pattern"))
    );
}

/// Writers racing from the same version over REST: exactly one 200, the rest 409.
async fn racing_writers(backend: Db) {
    let hub = TestHub::start_on(backend, &[]).await;
    let editor = hub.token("ed", &[("t", "editor")]);
    let path = format!("{P}/hot");
    let a = call(
        &hub,
        "PUT",
        &path,
        Some(&editor),
        &[("if-none-match", "*")],
        Some(json!({"content": 0})),
    )
    .await;
    assert_eq!(a.status, 201);
    racing_puts_one_wins(&[hub.http(&path)], &editor).await;
    let a = call(&hub, "GET", &path, Some(&editor), &[], None).await;
    assert_eq!(a.etag(), Some("\"2\""));
}

/// Every change reaches joined sockets as `pattern.updated` / `pattern.deleted`.
async fn live_notices(backend: Db) {
    let hub = TestHub::start_on(backend, &[]).await;
    let (_, editor, admin) = tokens(&hub);
    let mut watcher = hub.connect("w", &[("t", "viewer")]).await;
    watcher.join("t").await;
    let path = format!("{P}/live");
    call(
        &hub,
        "PUT",
        &path,
        Some(&editor),
        &[("if-none-match", "*")],
        Some(json!({"content": 1})),
    )
    .await;
    let m = watcher.expect_message().await;
    assert_eq!(
        (m.ty.as_str(), m.user.as_str(), m.data.clone()),
        (
            "pattern.updated",
            "ed",
            json!({"name": "live", "version": 1})
        )
    );
    call(
        &hub,
        "PUT",
        &path,
        Some(&editor),
        &[("if-match", "\"1\"")],
        Some(json!({"content": 2})),
    )
    .await;
    let m = watcher.expect_message().await;
    assert_eq!(
        (m.ty.as_str(), m.data.clone()),
        ("pattern.updated", json!({"name": "live", "version": 2}))
    );
    let a = call(
        &hub,
        "DELETE",
        &path,
        Some(&admin),
        &[("if-match", "\"2\"")],
        None,
    )
    .await;
    assert_eq!(a.status, 204);
    let m = watcher.expect_message().await;
    assert_eq!(
        (m.ty.as_str(), m.user.as_str(), m.data.clone()),
        (
            "pattern.deleted",
            "ad",
            json!({"name": "live", "version": 3})
        )
    );
    // A failed write sends nothing: the next frame after it is our pong.
    let a = call(
        &hub,
        "PUT",
        &path,
        Some(&editor),
        &[("if-match", "\"1\"")],
        Some(json!({"content": 3})),
    )
    .await;
    assert_eq!(a.status, 409);
    watcher.roundtrip_strict().await;
    // Clients still may not publish the reserved type themselves.
    let mut ed = hub.connect("ed", &[("t", "editor")]).await;
    let id = ed
        .send(TestClient::publish_op(
            "t",
            "pattern.updated",
            json!({}),
            false,
        ))
        .await;
    ed.expect_error(Some(id), teamhub_protocol::ErrorCode::Forbidden)
        .await;
}

crate::on_both_backends!(lifecycle, racing_writers, live_notices);
