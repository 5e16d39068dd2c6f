//! The contract every activity backend must meet, as runnable checks.
//!
//! SQLite and Postgres (and any test double that claims to be a store) run the same
//! functions, so "works on SQLite" means the same as "works on Postgres". Each function
//! takes a sink and a reader over the same database and panics with a description of
//! the broken promise. They use fresh, random team ids, so they can share one database
//! with each other and with leftovers of earlier runs; backends' test files still run
//! each one as its own test, so a failure is named.
//!
//! Compiled into the library (not `cfg(test)`) so other crates' and backends' tests can
//! call it; it has no dependencies beyond the library's own.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use serde_json::value::RawValue;
use teamhub_protocol::{TeamId, UserId};
use time::macros::datetime;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use crate::Database;
use crate::activity::{ActivityEvent, ActivityReader, ActivityRow, ActivitySink};
use crate::error::StoreError;

/// Runs every check against `db`'s activity sink and reader.
pub async fn run_all(db: &Database) {
    let sink = db.activity_sink();
    let reader = db.activity_reader();
    let (s, r) = (sink.as_ref(), reader.as_ref());
    ping_answers(s, r).await;
    empty_batch_is_a_no_op(s, r).await;
    every_field_round_trips(s, r).await;
    rewriting_creates_no_duplicates(s, r).await;
    newest_first(s, r).await;
    teams_are_isolated(s, r).await;
    large_batch(s, r).await;
    message_events_extract_resources(s, r).await;
}

/// The row a reader must return for `event`.
pub fn expected_row(event: &ActivityEvent) -> ActivityRow {
    ActivityRow {
        id: event.id,
        team: event.team.clone(),
        user: event.user.clone(),
        action: event.action.clone(),
        resource_type: event.resource_type.clone(),
        resource_id: event.resource_id.clone(),
        metadata: serde_json::from_str(event.metadata.get()).expect("event metadata is valid JSON"),
        ip: event.ip.map(|ip| ip.to_string()),
        user_agent: event.user_agent.clone(),
        created_at: event.created_at,
    }
}

/// `ping` succeeds on a healthy database.
pub async fn ping_answers(sink: &dyn ActivitySink, _reader: &dyn ActivityReader) {
    ok(sink.ping().await, "ping");
}

/// Writing no events succeeds and stores nothing.
pub async fn empty_batch_is_a_no_op(sink: &dyn ActivitySink, reader: &dyn ActivityReader) {
    let team = fresh_team("empty");
    ok(sink.write_batch(&[]).await, "write_batch(&[])");
    assert!(read_all(reader, &team).await.is_empty());
}

/// Every field reads back exactly as written: IPv4 and IPv6 addresses, null optionals,
/// a unicode user agent, nested and non-object metadata, microsecond timestamps.
pub async fn every_field_round_trips(sink: &dyn ActivitySink, reader: &dyn ActivityReader) {
    let team = fresh_team("fields");
    let at = datetime!(2025-03-01 12:00:00.123_456_789 UTC);
    let full = ActivityEvent::new(team.clone(), user("alice"), "doc.edit")
        .with_resource("document", "doc-1")
        .with_metadata(raw(
            r#"{"text":"h\u00e9llo \"quoted\" \\ back\nslash","n":[1,2.5,-3,{"deep":{"deeper":[true,false,null]}}],"empty":{},"list":[],"big":12345678901234,"emoji":"🚀"}"#,
        ))
        .with_client(
            Some(ip("203.0.113.7")),
            Some("Mozilla/5.0 (X11; Linux) — ünïcødé ✓ 🚀 日本語 'single' \"double\"".into()),
        )
        .with_created_at(at);
    let v6 = ActivityEvent::new(team.clone(), user("apikey:k1"), "pattern.updated")
        .with_resource("pattern", "layout")
        .with_metadata(raw(r#"[1,"two",{"three":3}]"#))
        .with_client(Some(ip("2001:db8::1")), None)
        .with_created_at(at - Duration::seconds(1));
    let bare = ActivityEvent::new(team.clone(), user("bob"), "presence.joined")
        .with_created_at(at - Duration::seconds(2));
    let scalar = ActivityEvent::new(team.clone(), user("bob"), "note")
        .with_metadata(raw(r#""just a string""#))
        .with_created_at(at - Duration::seconds(3));
    assert_eq!(
        full.created_at,
        datetime!(2025-03-01 12:00:00.123_456 UTC),
        "events carry microsecond precision"
    );

    let events = [full, v6, bare, scalar];
    ok(sink.write_batch(&events).await, "write_batch");
    let rows = read_all(reader, &team).await;
    assert_eq!(rows.len(), events.len(), "one row per event: {rows:#?}");
    let by_id: HashMap<Uuid, &ActivityRow> = rows.iter().map(|r| (r.id, r)).collect();
    for event in &events {
        let row = by_id
            .get(&event.id)
            .unwrap_or_else(|| panic!("event {} was not stored", event.id));
        assert_eq!(
            **row,
            expected_row(event),
            "row differs from the event written"
        );
    }
    assert_eq!(
        rows[2].metadata,
        serde_json::json!({}),
        "default metadata is {{}}"
    );
    assert_eq!(rows[2].ip, None);
    assert_eq!(rows[2].resource_type, None);
}

/// Idempotency by id: rewriting a batch (a retry), a batch overlapping an earlier one,
/// and a batch holding the same event twice add no duplicate rows, and the first stored
/// version of an id wins.
pub async fn rewriting_creates_no_duplicates(sink: &dyn ActivitySink, reader: &dyn ActivityReader) {
    let team = fresh_team("idempotent");
    let first: Vec<ActivityEvent> = (0..10).map(|i| numbered(&team, i)).collect();
    ok(sink.write_batch(&first).await, "first write");
    ok(sink.write_batch(&first).await, "same batch again");

    let mut overlapping: Vec<ActivityEvent> = first[5..].to_vec();
    overlapping.extend((10..15).map(|i| numbered(&team, i)));
    ok(sink.write_batch(&overlapping).await, "overlapping batch");

    let twice = numbered(&team, 15);
    ok(
        sink.write_batch(&[twice.clone(), twice.clone()]).await,
        "batch with one event twice",
    );

    let mut changed = first[0].clone();
    changed.action = "changed.on.retry".into();
    ok(sink.write_batch(&[changed]).await, "same id, other content");

    let rows = read_all(reader, &team).await;
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let unique: HashSet<Uuid> = ids.iter().copied().collect();
    assert_eq!(ids.len(), unique.len(), "duplicate rows: {ids:?}");
    let expected: HashSet<Uuid> = first
        .iter()
        .chain(&overlapping)
        .chain([&twice])
        .map(|e| e.id)
        .collect();
    assert_eq!(unique, expected, "stored ids differ from the ids written");
    assert_eq!(rows.len(), 16);
    let original = rows.iter().find(|r| r.id == first[0].id);
    assert_eq!(
        original.map(|r| r.action.as_str()),
        Some(first[0].action.as_str()),
        "the first stored version of an id must win"
    );
}

/// `recent` returns newest first, by `created_at` then `id`, and honours `limit`,
/// whatever order the events were written in.
pub async fn newest_first(sink: &dyn ActivitySink, reader: &dyn ActivityReader) {
    let team = fresh_team("order");
    let base = datetime!(2025-03-01 12:00:00 UTC);
    // Distinct times, one microsecond apart at the closest, written out of order ...
    let offsets_us = [5_000_000, 1, 0, 3_600_000_000, 2, 86_400_000_000];
    let mut events: Vec<ActivityEvent> = offsets_us
        .iter()
        .enumerate()
        .map(|(i, us)| numbered(&team, i).with_created_at(base + Duration::microseconds(*us)))
        .collect();
    // ... and three at the same instant, whose order is their (v7, increasing) ids.
    let tie = base + Duration::seconds(10);
    let tied: Vec<ActivityEvent> = (100..103)
        .map(|i| numbered(&team, i).with_created_at(tie))
        .collect();
    ok(sink.write_batch(&events[3..]).await, "write");
    ok(sink.write_batch(&[tied[1].clone()]).await, "write");
    ok(sink.write_batch(&events[..3]).await, "write");
    ok(
        sink.write_batch(&[tied[2].clone(), tied[0].clone()]).await,
        "write",
    );

    events.extend(tied);
    events.sort_by_key(|e| std::cmp::Reverse((e.created_at, e.id)));
    let want: Vec<Uuid> = events.iter().map(|e| e.id).collect();

    let got: Vec<Uuid> = read_all(reader, &team).await.iter().map(|r| r.id).collect();
    assert_eq!(got, want, "not newest first (created_at DESC, id DESC)");
    let top: Vec<Uuid> = ok(reader.recent(&team, 4).await, "recent(4)")
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(top, want[..4], "limit must keep the newest rows");
    assert!(ok(reader.recent(&team, 0).await, "recent(0)").is_empty());
}

/// A team only ever reads its own activity, even when ids share a prefix.
pub async fn teams_are_isolated(sink: &dyn ActivitySink, reader: &dyn ActivityReader) {
    let a = fresh_team("iso");
    let b = TeamId::new(&format!("{a}-b")).expect("valid team id");
    let never = fresh_team("iso-none");
    let mut batch: Vec<ActivityEvent> = (0..3).map(|i| numbered(&a, i)).collect();
    batch.extend((0..2).map(|i| numbered(&b, i)));
    ok(sink.write_batch(&batch).await, "write");

    let rows_a = read_all(reader, &a).await;
    let rows_b = read_all(reader, &b).await;
    assert_eq!(rows_a.len(), 3);
    assert_eq!(rows_b.len(), 2);
    assert!(rows_a.iter().all(|r| r.team == a), "{rows_a:#?}");
    assert!(rows_b.iter().all(|r| r.team == b), "{rows_b:#?}");
    assert!(read_all(reader, &never).await.is_empty());
}

/// A batch far larger than one statement can bind (5,000 events) is stored whole, and
/// rewriting it stays idempotent.
pub async fn large_batch(sink: &dyn ActivitySink, reader: &dyn ActivityReader) {
    const N: usize = 5_000;
    let team = fresh_team("large");
    let events: Vec<ActivityEvent> = (0..N).map(|i| numbered(&team, i)).collect();
    ok(sink.write_batch(&events).await, "large write");
    ok(sink.write_batch(&events).await, "large rewrite");

    let rows = ok(reader.recent(&team, (N + 10) as u32).await, "recent");
    assert_eq!(rows.len(), N);
    let got: HashSet<Uuid> = rows.iter().map(|r| r.id).collect();
    let want: HashSet<Uuid> = events.iter().map(|e| e.id).collect();
    assert_eq!(got, want);
    let by_id: HashMap<Uuid, &ActivityEvent> = events.iter().map(|e| (e.id, e)).collect();
    for row in rows.iter().step_by(997) {
        assert_eq!(*row, expected_row(by_id[&row.id]));
    }
}

/// Published messages become rows whose resource comes from the data's string
/// `resource_type` / `resource_id`, else the message itself (`message`, offset).
pub async fn message_events_extract_resources(
    sink: &dyn ActivitySink,
    reader: &dyn ActivityReader,
) {
    let team = fresh_team("messages");
    let at = datetime!(2025-03-01 12:00:00.5 +02:00);
    let named_data = raw(r#"{"resource_type":"doc","resource_id":"d-\u00e9","body":{"x":[1]}}"#);
    let named =
        ActivityEvent::for_message(team.clone(), user("u1"), "doc.edit", 7, &named_data, at);
    let plain_data = raw(r#"{"text":"hi","resource_id":{"not":"a string"}}"#);
    let plain = ActivityEvent::for_message(
        team.clone(),
        user("u1"),
        "chat.message",
        8,
        &plain_data,
        at + Duration::seconds(1),
    );
    ok(
        sink.write_batch(&[named.clone(), plain.clone()]).await,
        "write",
    );

    let rows = read_all(reader, &team).await;
    assert_eq!(rows.len(), 2);
    let (p, n) = (&rows[0], &rows[1]);
    assert_eq!(n.action, "doc.edit");
    assert_eq!(n.resource_type.as_deref(), Some("doc"));
    assert_eq!(n.resource_id.as_deref(), Some("d-é"));
    assert_eq!(
        n.metadata,
        serde_json::json!({"resource_type":"doc","resource_id":"d-é","body":{"x":[1]}})
    );
    assert_eq!(n.created_at, datetime!(2025-03-01 10:00:00.5 UTC));
    assert_eq!(p.action, "chat.message");
    assert_eq!(p.resource_type.as_deref(), Some("message"));
    assert_eq!(p.resource_id.as_deref(), Some("8"));
    assert_eq!(*n, expected_row(&named));
    assert_eq!(*p, expected_row(&plain));
}

// ---------------------------------------------------------------------------------------

/// Unwraps a store result, reporting the failing check's line rather than this one.
#[track_caller]
fn ok<T>(result: Result<T, StoreError>, what: &str) -> T {
    match result {
        Ok(value) => value,
        Err(e) => panic!("{what} failed: {e}"),
    }
}

/// A team id no earlier run has used.
fn fresh_team(tag: &str) -> TeamId {
    TeamId::new(&format!("conf-{tag}-{}", Uuid::new_v4().simple())).expect("valid team id")
}

fn user(name: &str) -> UserId {
    UserId::new(name).expect("valid user id")
}

fn raw(json: &str) -> Box<RawValue> {
    RawValue::from_string(json.to_owned()).expect("valid JSON")
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("valid IP address")
}

/// A distinct event for `team`, numbered in its metadata.
fn numbered(team: &TeamId, i: usize) -> ActivityEvent {
    ActivityEvent::new(team.clone(), user("conformance"), "test.event")
        .with_metadata(raw(&format!(r#"{{"i":{i}}}"#)))
        .with_created_at(OffsetDateTime::now_utc())
}

/// Every row of `team` (the suites never write more than this).
async fn read_all(reader: &dyn ActivityReader, team: &TeamId) -> Vec<ActivityRow> {
    ok(reader.recent(team, 100_000).await, "recent")
}
