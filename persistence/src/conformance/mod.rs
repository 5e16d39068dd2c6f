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
//!
//! The suites of the other stores ([`patterns`], [`keys`], [`revocations`]) use fixed
//! team ids and expect a freshly migrated database of their own.

pub mod control_log;
pub mod keys;
pub mod patterns;
pub mod revocations;
pub mod usage;
pub mod webhooks;

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use serde_json::value::RawValue;
use teamhub_protocol::{TeamId, UserId};
use time::macros::datetime;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use crate::Database;
use crate::activity::{
    ActivityEvent, ActivityReader, ActivityRetention, ActivityRow, ActivitySink,
};
use crate::error::StoreError;
use crate::query::{ActivityPage, ActivityQuery, Cursor, MAX_PAGE, RetentionScope};

/// Runs every check against `db`'s activity sink, reader and retention. The retention
/// check sweeps every team's old rows, so `db` must not hold rows others still need.
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
    pages_filter_by_every_field(s, r).await;
    cursor_pages_cover_every_row_once(s, r).await;
    new_rows_between_pages_are_neither_repeated_nor_skipped(s, r).await;
    page_limits(s, r).await;
    retention_deletes_only_expired_rows(s, r, db.activity_retention().as_ref()).await;
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

/// `page` applies each filter and their combinations (`since` inclusive, `until`
/// exclusive), newest first, exactly as filtering every row by hand would.
pub async fn pages_filter_by_every_field(sink: &dyn ActivitySink, reader: &dyn ActivityReader) {
    let team = fresh_team("filters");
    let other = fresh_team("filters-other");
    let base = datetime!(2025-04-01 00:00:00 UTC);
    let users = ["ann", "bob", "cy"];
    let actions = [
        "doc.edit",
        "presence.joined",
        "pattern.updated",
        "chat.message",
    ];
    let kinds = [Some("doc"), Some("pattern"), None];
    let events: Vec<ActivityEvent> = (0..60)
        .map(|i| {
            let mut e = ActivityEvent::new(team.clone(), user(users[i % 3]), actions[i % 4])
                .with_metadata(raw(&format!(r#"{{"i":{i}}}"#)))
                .with_created_at(base + Duration::minutes(i as i64));
            if let Some(kind) = kinds[i % 5 % 3] {
                e = e.with_resource(kind, format!("r{i}"));
            }
            e
        })
        .collect();
    // The same shapes in another team must never match.
    let noise: Vec<ActivityEvent> = events
        .iter()
        .map(|e| ActivityEvent {
            id: Uuid::now_v7(),
            team: other.clone(),
            ..e.clone()
        })
        .collect();
    ok(sink.write_batch(&events).await, "write");
    ok(sink.write_batch(&noise).await, "write noise");

    let since = base + Duration::minutes(10);
    let until = base + Duration::minutes(50);
    let cases: Vec<(&str, ActivityQuery)> = vec![
        ("none", query(&team, |_| {})),
        ("user", query(&team, |q| q.user = Some(user("bob")))),
        (
            "action",
            query(&team, |q| q.action = Some("doc.edit".into())),
        ),
        (
            "resource_type",
            query(&team, |q| q.resource_type = Some("pattern".into())),
        ),
        ("since", query(&team, |q| q.since = Some(since))),
        ("until", query(&team, |q| q.until = Some(until))),
        (
            "everything",
            query(&team, |q| {
                q.user = Some(user("ann"));
                q.action = Some("doc.edit".into());
                q.resource_type = Some("doc".into());
                q.since = Some(since);
                q.until = Some(until);
            }),
        ),
        ("unknown user", query(&team, |q| q.user = Some(user("zed")))),
        (
            "empty range",
            query(&team, |q| {
                q.since = Some(until);
                q.until = Some(since);
            }),
        ),
    ];
    for (name, q) in cases {
        let mut want: Vec<&ActivityEvent> = events.iter().filter(|e| matches(&q, e)).collect();
        want.sort_by_key(|e| std::cmp::Reverse((e.created_at, e.id)));
        let want: Vec<ActivityRow> = want.into_iter().map(expected_row).collect();
        let got = read_pages(reader, q.clone()).await;
        assert_eq!(got, want, "filter {name}: {q:?}");
    }
    // The bounds themselves: `since` includes its instant, `until` excludes it.
    let at_since = events.iter().find(|e| e.created_at == since).unwrap();
    let at_until = events.iter().find(|e| e.created_at == until).unwrap();
    let got = read_pages(
        reader,
        query(&team, |q| {
            q.since = Some(since);
            q.until = Some(until);
        }),
    )
    .await;
    assert!(
        got.iter().any(|r| r.id == at_since.id),
        "since is inclusive"
    );
    assert!(
        got.iter().all(|r| r.id != at_until.id),
        "until is exclusive"
    );
    assert_eq!(got.len(), 40);
}

/// Walking `next` cursors visits every row exactly once, newest first, with `next`
/// set on every page but the last (also when the last page is full), including rows
/// that share one `created_at`.
pub async fn cursor_pages_cover_every_row_once(
    sink: &dyn ActivitySink,
    reader: &dyn ActivityReader,
) {
    let team = fresh_team("cursor");
    let base = datetime!(2025-04-01 00:00:00 UTC);
    // 21 rows, seven instants, three rows at each: ties are broken by id.
    let events: Vec<ActivityEvent> = (0..21)
        .map(|i| numbered(&team, i).with_created_at(base + Duration::seconds((i / 3) as i64)))
        .collect();
    ok(sink.write_batch(&events).await, "write");
    let mut want = events.clone();
    want.sort_by_key(|e| std::cmp::Reverse((e.created_at, e.id)));
    let want: Vec<Uuid> = want.iter().map(|e| e.id).collect();

    for limit in [1, 2, 3, 5, 7, 20, 21, 22, 1000] {
        let mut q = ActivityQuery::team(team.clone(), limit);
        let mut got = Vec::new();
        let mut pages = 0;
        loop {
            let page = ok(reader.page(&q).await, "page");
            pages += 1;
            assert!(page.items.len() <= limit as usize);
            got.extend(page.items.iter().map(|r| r.id));
            match page.next {
                Some(next) => {
                    assert_eq!(page.items.len(), limit as usize, "only full pages go on");
                    assert_eq!(Some(next), page.items.last().map(Cursor::after_row));
                    // The cursor survives its text form.
                    q.after = Some(Cursor::decode(&next.encode()).expect("own cursor decodes"));
                }
                None => break,
            }
            assert!(pages <= 21, "paging does not end (limit {limit})");
        }
        assert_eq!(got, want, "limit {limit}");
        assert_eq!(pages, 21usize.div_ceil(limit as usize), "limit {limit}");
    }
}

/// Rows written between two pages (newer ones, as a live team produces, and older
/// ones, as a spill replay does) neither repeat a row nor make the next pages skip
/// one: the pages return exactly the rows older than the first page's cursor.
pub async fn new_rows_between_pages_are_neither_repeated_nor_skipped(
    sink: &dyn ActivitySink,
    reader: &dyn ActivityReader,
) {
    let team = fresh_team("live");
    let base = datetime!(2025-04-01 00:00:00 UTC);
    let at = |s: i64| base + Duration::seconds(s);
    let first: Vec<ActivityEvent> = (0..20)
        .map(|i| numbered(&team, i).with_created_at(at(100 + i as i64)))
        .collect();
    ok(sink.write_batch(&first).await, "write");

    let mut q = ActivityQuery::team(team.clone(), 5);
    let page1 = ok(reader.page(&q).await, "first page");
    assert_eq!(page1.items.len(), 5);
    let cursor = page1.next.expect("more pages");

    // Newer rows, one at the cursor's very instant (but a later id), and older rows.
    let newer: Vec<ActivityEvent> = (0..10)
        .map(|i| numbered(&team, 100 + i).with_created_at(at(200 + i as i64)))
        .collect();
    let same_instant = numbered(&team, 200).with_created_at(cursor.created_at);
    let older: Vec<ActivityEvent> = (0..3)
        .map(|i| numbered(&team, 300 + i).with_created_at(at(50 + i as i64)))
        .collect();
    ok(sink.write_batch(&newer).await, "write newer");
    ok(sink.write_batch(&older).await, "write older");
    ok(
        sink.write_batch(std::slice::from_ref(&same_instant)).await,
        "write tie",
    );

    let mut seen: Vec<Uuid> = page1.items.iter().map(|r| r.id).collect();
    q.after = Some(cursor);
    loop {
        let page = ok(reader.page(&q).await, "next page");
        seen.extend(page.items.iter().map(|r| r.id));
        // More rows keep arriving while the client pages.
        let late = numbered(&team, 400 + seen.len()).with_created_at(at(300 + seen.len() as i64));
        ok(sink.write_batch(&[late]).await, "write during paging");
        match page.next {
            Some(next) => q.after = Some(next),
            None => break,
        }
        assert!(seen.len() <= 100, "paging does not end");
    }

    let unique: HashSet<Uuid> = seen.iter().copied().collect();
    assert_eq!(unique.len(), seen.len(), "a row was repeated: {seen:?}");
    let mut want: Vec<&ActivityEvent> = first.iter().chain(&older).collect();
    want.sort_by_key(|e| std::cmp::Reverse((e.created_at, e.id)));
    let want: Vec<Uuid> = want.iter().map(|e| e.id).collect();
    assert_eq!(
        seen, want,
        "pages must hold every row older than the cursor"
    );
    assert!(
        !unique.contains(&same_instant.id),
        "later id at the cursor's instant"
    );
    assert!(newer.iter().all(|e| !unique.contains(&e.id)));
}

/// `limit` 0 reads nothing; a limit above [`MAX_PAGE`] reads [`MAX_PAGE`] rows.
pub async fn page_limits(sink: &dyn ActivitySink, reader: &dyn ActivityReader) {
    let team = fresh_team("limits");
    let events: Vec<ActivityEvent> = (0..MAX_PAGE as usize + 5)
        .map(|i| numbered(&team, i))
        .collect();
    ok(sink.write_batch(&events).await, "write");
    let none = ok(
        reader.page(&ActivityQuery::team(team.clone(), 0)).await,
        "limit 0",
    );
    assert!(none.items.is_empty());
    let big = ok(
        reader
            .page(&ActivityQuery::team(team.clone(), MAX_PAGE * 10))
            .await,
        "big limit",
    );
    assert_eq!(big.items.len(), MAX_PAGE as usize);
    assert!(big.next.is_some());
    let rest = ok(
        reader
            .page(&ActivityQuery {
                after: big.next,
                ..ActivityQuery::team(team.clone(), MAX_PAGE)
            })
            .await,
        "rest",
    );
    assert_eq!(rest.items.len(), 5);
    assert_eq!(rest.next, None);
}

/// Retention deletes rows older than the cut-off in bounded batches, only in its
/// scope: newer rows stay, other teams are untouched, and `AllExcept` spares the
/// teams it lists.
pub async fn retention_deletes_only_expired_rows(
    sink: &dyn ActivitySink,
    reader: &dyn ActivityReader,
    retention: &dyn ActivityRetention,
) {
    let pro = fresh_team("ret-pro");
    let free = fresh_team("ret-free");
    let enterprise = fresh_team("ret-ent");
    let now = OffsetDateTime::now_utc();
    let write = |team: &TeamId, days: &[i64]| -> Vec<ActivityEvent> {
        days.iter()
            .enumerate()
            .map(|(i, d)| numbered(team, i).with_created_at(now - Duration::days(*d)))
            .collect()
    };
    let days = [1, 10, 29, 31, 45, 89, 91, 200, 364, 366, 400, 500];
    for team in [&pro, &free, &enterprise] {
        ok(sink.write_batch(&write(team, &days)).await, "write");
    }
    let days_left = |rows: &[ActivityRow]| -> Vec<i64> {
        let mut d: Vec<i64> = rows
            .iter()
            .map(|r| (now - r.created_at).whole_days())
            .collect();
        d.sort();
        d
    };

    // The pro team: 90 days, in batches of 2 (so several calls).
    let cutoff = now - Duration::days(90);
    let mut calls = 0;
    loop {
        let n = ok(
            retention
                .delete_expired(RetentionScope::Team(&pro), cutoff, 2)
                .await,
            "delete_expired",
        );
        assert!(n <= 2, "batch bound exceeded: {n}");
        calls += 1;
        if n < 2 {
            break;
        }
        assert!(calls < 20, "retention does not finish");
    }
    assert!(calls >= 3, "6 rows in batches of 2 take several calls");
    assert_eq!(
        days_left(&read_all(reader, &pro).await),
        [1, 10, 29, 31, 45, 89]
    );
    assert_eq!(
        read_all(reader, &free).await.len(),
        days.len(),
        "other teams untouched"
    );

    // Everyone else on 30 days, except the teams with plans of their own.
    let spared = [pro.clone(), enterprise.clone()];
    while ok(
        retention
            .delete_expired(
                RetentionScope::AllExcept(&spared),
                now - Duration::days(30),
                1000,
            )
            .await,
        "delete_expired",
    ) == 1000
    {}
    assert_eq!(days_left(&read_all(reader, &free).await), [1, 10, 29]);
    assert_eq!(days_left(&read_all(reader, &pro).await).len(), 6);
    assert_eq!(
        read_all(reader, &enterprise).await.len(),
        days.len(),
        "spared team untouched"
    );
    let n = ok(
        retention
            .delete_expired(
                RetentionScope::Team(&enterprise),
                now - Duration::days(365),
                1000,
            )
            .await,
        "delete_expired",
    );
    assert_eq!(n, 3);
    assert_eq!(days_left(&read_all(reader, &enterprise).await).len(), 9);
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

/// A first page of `team` (100 rows), adjusted by `edit`.
fn query(team: &TeamId, edit: impl FnOnce(&mut ActivityQuery)) -> ActivityQuery {
    let mut q = ActivityQuery::team(team.clone(), 100);
    edit(&mut q);
    q
}

/// Whether `e` matches `q`'s filters (the reference the backends are checked against).
fn matches(q: &ActivityQuery, e: &ActivityEvent) -> bool {
    e.team == q.team
        && q.user.as_ref().is_none_or(|u| *u == e.user)
        && q.action.as_ref().is_none_or(|a| *a == e.action)
        && q.resource_type
            .as_ref()
            .is_none_or(|t| Some(t) == e.resource_type.as_ref())
        && q.since.is_none_or(|s| e.created_at >= s)
        && q.until.is_none_or(|u| e.created_at < u)
}

/// Every row `q` matches, following `next` cursors with pages of 7.
async fn read_pages(reader: &dyn ActivityReader, mut q: ActivityQuery) -> Vec<ActivityRow> {
    q.limit = 7;
    let mut rows = Vec::new();
    loop {
        let ActivityPage { items, next } = ok(reader.page(&q).await, "page");
        rows.extend(items);
        match next {
            Some(next) => q.after = Some(next),
            None => return rows,
        }
        assert!(rows.len() <= 100_000, "paging does not end");
    }
}
