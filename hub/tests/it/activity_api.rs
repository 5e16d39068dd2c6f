//! `GET /api/v1/teams/{team}/activity`: status codes, filters, cursor pages and the
//! CSV / NDJSON exports, on SQLite and on Postgres (each node its own file or schema).

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{Value, json};
use teamhub_persistence::ActivityEvent;
use teamhub_protocol::{TeamId, UserId};
use time::OffsetDateTime;
use time::macros::time;

use crate::harness::*;

/// Noon, two days ago: well inside every plan's retention, which the node enforces
/// from its start on.
fn base() -> OffsetDateTime {
    (OffsetDateTime::now_utc() - time::Duration::days(2)).replace_time(time!(12:00))
}

/// The day of [`base`], `YYYY-MM-DD`.
fn day() -> String {
    let d = base().date();
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

/// A GET with `token`; returns status, content type and body text.
async fn get(hub: &TestHub, path: &str, token: Option<&str>) -> (u16, String, String) {
    let mut req = reqwest::Client::new().get(hub.http(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = tokio::time::timeout(WAIT, req.send())
        .await
        .expect("answer in time")
        .expect("request");
    let status = resp.status().as_u16();
    let ct = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = tokio::time::timeout(WAIT, resp.text())
        .await
        .expect("body in time")
        .expect("body");
    (status, ct, body)
}

async fn get_json(hub: &TestHub, path: &str, token: &str) -> Value {
    let (status, _, body) = get(hub, path, Some(token)).await;
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// Asserts the contract's error body with `code` and returns its message.
async fn expect_error(hub: &TestHub, path: &str, token: Option<&str>, status: u16, code: &str) {
    let (got, ct, body) = get(hub, path, token).await;
    assert_eq!(got, status, "{path}: {body}");
    assert!(ct.starts_with("application/json"), "{path}: {ct}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["code"], code, "{path}: {body}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

fn admin(hub: &TestHub, team: &str) -> String {
    hub.token("root", &[(team, "admin")])
}

/// Writes events straight to the node's database (as its writer would).
async fn seed(hub: &TestHub, events: &[ActivityEvent]) {
    hub.node
        .database
        .activity_sink()
        .write_batch(events)
        .await
        .expect("seed rows");
}

fn event(team: &str, user: &str, action: &str, minute: i64) -> ActivityEvent {
    let data = serde_json::value::to_raw_value(&json!({"minute": minute})).unwrap();
    ActivityEvent::new(
        TeamId::new(team).unwrap(),
        UserId::new(user).unwrap(),
        action,
    )
    .with_metadata(data)
    .with_created_at(base() + time::Duration::minutes(minute))
}

/// Every item of every page, following `next_cursor`.
async fn walk(hub: &TestHub, path: &str, token: &str) -> Vec<Value> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..1000 {
        let sep = if path.contains('?') { '&' } else { '?' };
        let url = match &cursor {
            Some(c) => format!("{path}{sep}cursor={c}"),
            None => path.to_owned(),
        };
        let page = get_json(hub, &url, token).await;
        items.extend(page["items"].as_array().unwrap().iter().cloned());
        match &page["next_cursor"] {
            Value::Null => return items,
            Value::String(c) => cursor = Some(c.clone()),
            other => panic!("next_cursor must be a string or null: {other}"),
        }
    }
    panic!("paging does not end");
}

fn ids(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn status_codes(db: Db) {
    let hub = TestHub::start_on(db, &[]).await;
    let path = "/api/v1/teams/t/activity";
    expect_error(&hub, path, None, 401, "unauthorized").await;
    expect_error(&hub, path, Some("not-a-token"), 401, "unauthorized").await;
    for role in ["viewer", "editor", "member"] {
        let token = hub.token("u", &[("t", role)]);
        expect_error(&hub, path, Some(&token), 403, "forbidden").await;
    }
    let other_team = hub.token("u", &[("other", "owner")]);
    expect_error(&hub, path, Some(&other_team), 403, "forbidden").await;

    let token = admin(&hub, "t");
    for bad in [
        "limit=abc",
        "limit=0",
        "limit=1001",
        "cursor=not-a-cursor",
        "cursor=AQAGYNqKYMpAAZo7flwdeiucPU5fYHGCk",
        "since=yesterday",
        "until=2025-13-01T00:00:00Z",
        "format=xml",
        "user=a%20b",
        "action=",
        "resource_type=%2F",
    ] {
        expect_error(
            &hub,
            &format!("{path}?{bad}"),
            Some(&token),
            400,
            "bad_request",
        )
        .await;
    }
    let bad_team = hub.token("u", &[("t", "owner")]);
    expect_error(
        &hub,
        "/api/v1/teams/a%20b/activity",
        Some(&bad_team),
        400,
        "bad_request",
    )
    .await;

    // An empty cursor is the first page.
    let page = get_json(&hub, &format!("{path}?cursor="), &token).await;
    assert_eq!(page, json!({"items": [], "next_cursor": null}));
    for role in ["admin", "owner"] {
        let token = hub.token("u", &[("t", role)]);
        let page = get_json(&hub, path, &token).await;
        assert_eq!(page, json!({"items": [], "next_cursor": null}), "{role}");
    }

    // The database gone: 503 with the error body, for pages and exports alike (an
    // export reads its first page before answering).
    hub.node.database.close().await;
    for format in ["json", "csv", "ndjson"] {
        expect_error(
            &hub,
            &format!("{path}?format={format}"),
            Some(&token),
            503,
            "unavailable",
        )
        .await;
    }
}

async fn rows_and_filters(db: Db) {
    let hub = TestHub::start_on(db, &[]).await;
    let mut events = Vec::new();
    for m in 0..30 {
        let user = ["ann", "bob", "cy"][m as usize % 3];
        let action = ["doc.edit", "chat.message"][m as usize % 2];
        let mut e = event("t", user, action, m);
        if m % 5 == 0 {
            e = e.with_resource("doc", format!("d{m}"));
        }
        events.push(e);
    }
    events.push(
        event("t", "ann", "pattern.updated", 40)
            .with_resource("pattern", "layout")
            .with_client(
                Some("2001:db8::7".parse().unwrap()),
                Some("curl/8 ✓".into()),
            ),
    );
    // Another team's rows never show up.
    events.push(event("u", "ann", "doc.edit", 1));
    seed(&hub, &events).await;
    let token = admin(&hub, "t");
    let path = "/api/v1/teams/t/activity";

    // The body is the contract's type (as the OpenAPI document describes it).
    let page = get_json(&hub, path, &token).await;
    let typed: teamhub_protocol::rest::ActivityPageResponse =
        serde_json::from_value(page.clone()).expect("a page decodes as ActivityPageResponse");
    assert_eq!(serde_json::to_value(&typed).unwrap(), page);
    let all = walk(&hub, &format!("{path}?limit=7"), &token).await;
    assert_eq!(all.len(), 31);
    let newest = &all[0];
    assert_eq!(
        *newest,
        json!({
            "id": events[30].id.to_string(),
            "team": "t",
            "user": "ann",
            "action": "pattern.updated",
            "resource_type": "pattern",
            "resource_id": "layout",
            "metadata": {"minute": 40},
            "ip": "2001:db8::7",
            "user_agent": "curl/8 ✓",
            "created_at": format!("{}T12:40:00.000000Z", day()),
        })
    );
    let times: Vec<&str> = all
        .iter()
        .map(|i| i["created_at"].as_str().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "newest first");

    let count = |items: &[Value], f: &dyn Fn(&Value) -> bool| items.iter().filter(|i| f(i)).count();
    let by_user = walk(&hub, &format!("{path}?user=bob"), &token).await;
    assert_eq!(by_user.len(), 10);
    assert_eq!(count(&by_user, &|i| i["user"] == "bob"), 10);
    let by_action = walk(&hub, &format!("{path}?action=chat.message"), &token).await;
    assert_eq!(by_action.len(), 15);
    assert_eq!(count(&by_action, &|i| i["action"] == "chat.message"), 15);
    let by_kind = walk(&hub, &format!("{path}?resource_type=doc"), &token).await;
    assert_eq!(by_kind.len(), 6);
    assert_eq!(count(&by_kind, &|i| i["resource_type"] == "doc"), 6);
    // since is inclusive, until exclusive; offsets other than Z are understood.
    let range = walk(
        &hub,
        &format!(
            "{path}?since={d}T12:10:00Z&until={d}T14:20:00%2B02:00",
            d = day()
        ),
        &token,
    )
    .await;
    assert_eq!(range.len(), 10, "minutes 10..20");
    assert_eq!(
        range[0]["created_at"],
        format!("{}T12:19:00.000000Z", day())
    );
    assert_eq!(
        range[9]["created_at"],
        format!("{}T12:10:00.000000Z", day())
    );
    let combined = walk(
        &hub,
        &format!(
            "{path}?user=ann&action=doc.edit&resource_type=doc&since={}T12:00:00Z&limit=1",
            day()
        ),
        &token,
    )
    .await;
    // ann: m % 3 == 0, doc.edit: m even, doc: m % 5 == 0 -> m in {0, 30}, only 0 < 30.
    assert_eq!(ids(&combined), [events[0].id.to_string()]);
    let none = get_json(&hub, &format!("{path}?user=nobody"), &token).await;
    assert_eq!(none, json!({"items": [], "next_cursor": null}));
}

async fn pages_while_rows_arrive(db: Db) {
    let hub = TestHub::start_on(db, &[]).await;
    let events: Vec<ActivityEvent> = (0..25).map(|m| event("t", "ann", "doc.edit", m)).collect();
    seed(&hub, &events).await;
    let token = admin(&hub, "t");
    let path = "/api/v1/teams/t/activity?limit=10";

    let first = get_json(&hub, path, &token).await;
    assert_eq!(first["items"].as_array().unwrap().len(), 10);
    let cursor = first["next_cursor"].as_str().unwrap().to_owned();
    // Newer rows arrive (a live team), and an older one (a replayed spill).
    let newer: Vec<ActivityEvent> = (100..110).map(|m| event("t", "bob", "x", m)).collect();
    seed(&hub, &newer).await;
    let older = event("t", "cy", "late", -5);
    seed(&hub, std::slice::from_ref(&older)).await;

    let second = get_json(&hub, &format!("{path}&cursor={cursor}"), &token).await;
    let third = get_json(
        &hub,
        &format!("{path}&cursor={}", second["next_cursor"].as_str().unwrap()),
        &token,
    )
    .await;
    assert_eq!(third["next_cursor"], Value::Null);
    let mut seen = ids(first["items"].as_array().unwrap());
    seen.extend(ids(second["items"].as_array().unwrap()));
    seen.extend(ids(third["items"].as_array().unwrap()));
    let mut want: Vec<&ActivityEvent> = events.iter().chain([&older]).collect();
    want.sort_by_key(|e| std::cmp::Reverse((e.created_at, e.id)));
    let want: Vec<String> = want.iter().map(|e| e.id.to_string()).collect();
    assert_eq!(seen, want, "no row repeated or skipped");

    // A fresh first page starts from the newest rows.
    let fresh = get_json(&hub, path, &token).await;
    assert_eq!(fresh["items"][0]["id"], newer[9].id.to_string());
}

async fn exports_stream_every_row(db: Db) {
    let hub = TestHub::start_on(db, &[]).await;
    // More rows than one database page of an export (1000).
    let events: Vec<ActivityEvent> = (0..2_345)
        .map(|m| {
            let e = event("t", ["ann", "bob"][m as usize % 2], "doc.edit", m);
            if m % 2 == 0 {
                e.with_resource("doc", format!("d,\"{m}\"\n"))
            } else {
                e
            }
        })
        .collect();
    seed(&hub, &events).await;
    let token = admin(&hub, "t");
    let path = "/api/v1/teams/t/activity";
    let json_rows = walk(&hub, &format!("{path}?limit=1000"), &token).await;
    assert_eq!(json_rows.len(), events.len());

    let (status, ct, body) =
        get(&hub, &format!("{path}?format=ndjson&limit=5"), Some(&token)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(ct, "application/x-ndjson");
    let lines: Vec<Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines, json_rows,
        "ndjson holds every row, as the JSON pages do"
    );

    let (status, ct, body) = get(&hub, &format!("{path}?format=csv"), Some(&token)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(ct, "text/csv; charset=utf-8");
    let mut reader = csv::Reader::from_reader(body.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        header,
        [
            "id",
            "team",
            "user",
            "action",
            "resource_type",
            "resource_id",
            "metadata",
            "ip",
            "user_agent",
            "created_at"
        ]
    );
    let records: Vec<csv::StringRecord> = reader.records().map(|r| r.unwrap()).collect();
    assert_eq!(records.len(), events.len());
    for (record, row) in records.iter().zip(&json_rows) {
        assert_eq!(&record[0], row["id"].as_str().unwrap());
        assert_eq!(&record[2], row["user"].as_str().unwrap());
        assert_eq!(&record[5], row["resource_id"].as_str().unwrap_or(""));
        let metadata: Value = serde_json::from_str(&record[6]).unwrap();
        assert_eq!(metadata, row["metadata"]);
        assert_eq!(&record[9], row["created_at"].as_str().unwrap());
    }
    let unique: HashSet<&str> = records.iter().map(|r| r.get(0).unwrap()).collect();
    assert_eq!(unique.len(), events.len());

    // Filters and a starting cursor apply to exports too.
    let first = get_json(&hub, &format!("{path}?user=bob&limit=100"), &token).await;
    let cursor = first["next_cursor"].as_str().unwrap();
    let (_, _, body) = get(
        &hub,
        &format!("{path}?user=bob&format=ndjson&cursor={cursor}"),
        Some(&token),
    )
    .await;
    let rest: Vec<Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rest.len(), 1172 - 100);
    assert!(rest.iter().all(|r| r["user"] == "bob"));
    let (_, _, body) = get(
        &hub,
        &format!("{path}?format=csv&user=nobody"),
        Some(&token),
    )
    .await;
    assert_eq!(body.lines().count(), 1, "just the header: {body:?}");
}

async fn published_messages_are_listed(db: Db) {
    let hub = TestHub::start_on(db, &[]).await;
    let editor = hub.token("ann", &[("t", "editor")]);
    let resp = reqwest::Client::new()
        .post(hub.http("/api/v1/teams/t/messages"))
        .bearer_auth(&editor)
        .header("user-agent", "activity-test")
        .json(
            &json!({"type": "doc.edited", "data": {"resource_type": "doc", "resource_id": "d-1"}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let token = admin(&hub, "t");
    // The writer is asynchronous: wait for the row, within a bound.
    let deadline = tokio::time::Instant::now() + WAIT;
    let page = loop {
        let page = get_json(&hub, "/api/v1/teams/t/activity?action=doc.edited", &token).await;
        if !page["items"].as_array().unwrap().is_empty() {
            break page;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the published message never reached the activity log"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let row = &page["items"][0];
    assert_eq!(row["user"], "ann");
    assert_eq!(row["resource_type"], "doc");
    assert_eq!(row["resource_id"], "d-1");
    assert_eq!(row["ip"], "127.0.0.1");
    assert_eq!(row["user_agent"], "activity-test");
}

async fn retention_deletes_expired_rows_per_plan(db: Db) {
    let hub = TestHub::start_on(
        db,
        &[
            "--team-plans",
            "pro-team=pro,ent-team=enterprise,free-team=free",
            "--retention-interval",
            "1",
        ],
    )
    .await;
    let now = OffsetDateTime::now_utc();
    let days = [1, 29, 31, 89, 91, 364, 366];
    let mut events = Vec::new();
    for team in ["pro-team", "ent-team", "free-team", "unlisted"] {
        for d in days {
            events.push(
                event(team, "ann", "doc.edit", 0).with_created_at(now - time::Duration::days(d)),
            );
        }
    }
    seed(&hub, &events).await;
    let left = |rows: &[teamhub_persistence::ActivityRow]| -> Vec<i64> {
        let mut d: Vec<i64> = rows
            .iter()
            .map(|r| (now - r.created_at).whole_days())
            .collect();
        d.sort();
        d
    };
    let want = [
        ("pro-team", vec![1, 29, 31, 89]),
        ("ent-team", vec![1, 29, 31, 89, 91, 364]),
        ("free-team", vec![1, 29]),
        ("unlisted", vec![1, 29]),
    ];
    let reader = hub.node.database.activity_reader();
    // The job passes every second: wait for the expired rows to go, within a bound.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut got = Vec::new();
        for (team, _) in &want {
            let rows = reader
                .recent(&TeamId::new(team).unwrap(), 100)
                .await
                .unwrap();
            got.push((*team, left(&rows)));
        }
        if got == want {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "retention did not reach the plans' state: {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Attacker-chosen text (a message's resource id, the User-Agent) cannot become a
/// spreadsheet formula in a CSV export; JSON and NDJSON carry it unchanged.
async fn csv_exports_neutralise_formulas(db: Db) {
    let hub = TestHub::start_on(db, &[]).await;
    let formula = "=HYPERLINK(\"http://evil.example\",\"open\")";
    let events = [
        event("t", "ann", "doc.edit", 1)
            .with_resource("doc", formula)
            .with_client(None, Some("@SUM(1+1)".into())),
        event("t", "ann", "doc.edit", 2).with_resource("doc", "-2+3"),
        event("t", "ann", "doc.edit", 3).with_resource("doc", "safe=text"),
    ];
    seed(&hub, &events).await;
    let token = admin(&hub, "t");
    let path = "/api/v1/teams/t/activity";
    let (status, _, body) = get(&hub, &format!("{path}?format=csv"), Some(&token)).await;
    assert_eq!(status, 200, "{body}");
    let mut reader = csv::Reader::from_reader(body.as_bytes());
    let mut cells: Vec<(String, String)> = reader
        .records()
        .map(|r| {
            let r = r.unwrap();
            (r[5].to_owned(), r[8].to_owned())
        })
        .collect();
    cells.sort();
    assert_eq!(
        cells,
        [
            ("'-2+3".to_owned(), String::new()),
            (format!("'{formula}"), "'@SUM(1+1)".to_owned()),
            ("safe=text".to_owned(), String::new()),
        ]
    );
    let (_, _, body) = get(&hub, &format!("{path}?format=ndjson"), Some(&token)).await;
    let ids: HashSet<String> = body
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["resource_id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert!(ids.contains(formula) && ids.contains("-2+3"), "{ids:?}");
}

macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test] async fn $name() { super::$name(super::Db::Sqlite).await })*
        }
        mod postgres {
            $(#[tokio::test] async fn $name() { super::$name(super::Db::Postgres).await })*
        }
    };
}

on_both!(
    status_codes,
    rows_and_filters,
    pages_while_rows_arrive,
    exports_stream_every_row,
    csv_exports_neutralise_formulas,
    published_messages_are_listed,
    retention_deletes_expired_rows_per_plan,
);
