//! The SQLite backend against the activity conformance suite, plus what is specific to
//! SQLite: URLs, the file, the schema other tools read, and closed-pool errors.

use std::path::PathBuf;

use sqlx::Row;
use teamhub_persistence::{ActivityEvent, Database, StoreError, conformance, connect};
use teamhub_protocol::{TeamId, UserId};

/// A migrated database in a fresh file; keep the `TempDir` alive while using it.
async fn fresh() -> (tempfile::TempDir, PathBuf, Database) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("activity.db");
    let db = connect(&format!("sqlite://{}", path.display()))
        .await
        .expect("connect");
    db.migrate().await.expect("migrate");
    (dir, path, db)
}

/// One test per conformance check, each on its own database, so a failure is named.
macro_rules! conformance_tests {
    ($($check:ident),* $(,)?) => {$(
        #[tokio::test]
        async fn $check() {
            let (_dir, _path, db) = fresh().await;
            conformance::$check(db.activity_sink().as_ref(), db.activity_reader().as_ref())
                .await;
            db.close().await;
        }
    )*};
}

conformance_tests!(
    ping_answers,
    empty_batch_is_a_no_op,
    every_field_round_trips,
    rewriting_creates_no_duplicates,
    newest_first,
    teams_are_isolated,
    large_batch,
    message_events_extract_resources,
    pages_filter_by_every_field,
    cursor_pages_cover_every_row_once,
    new_rows_between_pages_are_neither_repeated_nor_skipped,
    page_limits,
);

#[tokio::test]
async fn retention_deletes_only_expired_rows() {
    let (_dir, _path, db) = fresh().await;
    conformance::retention_deletes_only_expired_rows(
        db.activity_sink().as_ref(),
        db.activity_reader().as_ref(),
        db.activity_retention().as_ref(),
    )
    .await;
    db.close().await;
}

#[tokio::test]
async fn whole_suite_twice_on_one_file() {
    // The checks must coexist in one database (as they will on a shared Postgres).
    let (_dir, _path, db) = fresh().await;
    conformance::run_all(&db).await;
    conformance::run_all(&db).await;
    db.close().await;
}

#[tokio::test]
async fn in_memory_database_passes_the_suite() {
    let db = connect("sqlite::memory:").await.expect("connect");
    assert_eq!(db.backend_name(), "sqlite");
    db.migrate().await.expect("migrate");
    conformance::run_all(&db).await;
    db.close().await;
}

#[tokio::test]
async fn unknown_scheme_is_refused_without_echoing_credentials() {
    match connect("mysql://root:hunter2@db.example/teamhub").await {
        Err(err @ StoreError::InvalidUrl(_)) => {
            let text = err.to_string();
            assert!(text.contains("\"mysql\""), "{text}");
            assert!(!text.contains("hunter2"), "leaks the password: {text}");
        }
        other => panic!("expected InvalidUrl, got {other:?}"),
    }
}

#[tokio::test]
async fn missing_directory_is_reported_with_the_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("no-such-dir").join("activity.db");
    match connect(&format!("sqlite://{}", path.display())).await {
        Err(err @ StoreError::Unavailable(_)) => {
            assert!(err.to_string().contains("no-such-dir"), "{err}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn file_is_created_in_wal_mode_and_survives_reopening() {
    let (_dir, path, db) = fresh().await;
    assert!(path.exists(), "database file created");
    db.migrate().await.expect("migrating twice is a no-op");

    let team = TeamId::new("reopen").unwrap();
    let event = ActivityEvent::new(team.clone(), UserId::new("u").unwrap(), "x");
    db.activity_sink()
        .write_batch(std::slice::from_ref(&event))
        .await
        .expect("write");
    let wal = path.with_file_name("activity.db-wal");
    assert!(wal.exists(), "WAL journal in use: {}", wal.display());
    db.close().await;

    let db = connect(&format!("sqlite://{}", path.display()))
        .await
        .expect("reopen");
    db.migrate().await.expect("migrate on reopen");
    let rows = db.activity_reader().recent(&team, 10).await.expect("read");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0], conformance::expected_row(&event));
    db.close().await;
}

#[tokio::test]
async fn closed_database_is_unavailable() {
    let (_dir, _path, db) = fresh().await;
    let sink = db.activity_sink();
    db.close().await;
    let event = ActivityEvent::new(TeamId::new("t").unwrap(), UserId::new("u").unwrap(), "x");
    let err = sink
        .write_batch(&[event])
        .await
        .expect_err("pool is closed");
    assert!(err.is_retryable(), "{err:?}");
    assert!(matches!(sink.ping().await, Err(StoreError::Unavailable(_))));
}

/// Reporting tools read `activity_logs` directly (PROTOCOL.md section 7): its columns,
/// indexes and text encodings are part of the contract.
#[tokio::test]
async fn schema_is_the_documented_one() {
    let (_dir, path, db) = fresh().await;
    let team = TeamId::new("schema").unwrap();
    let event = ActivityEvent::new(team.clone(), UserId::new("u").unwrap(), "x")
        .with_client(Some("2001:db8::1".parse().unwrap()), None)
        .with_created_at(time::macros::datetime!(2025-01-31 10:05:03.00012 +01:00));
    db.activity_sink()
        .write_batch(std::slice::from_ref(&event))
        .await
        .expect("write");

    // A second, independent connection, as a reporting tool would open.
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display()))
        .await
        .expect("open");
    let columns: Vec<(String, String, bool)> = sqlx::query("PRAGMA table_info(activity_logs)")
        .fetch_all(&pool)
        .await
        .expect("table_info")
        .iter()
        .map(|r| {
            (
                r.get("name"),
                r.get("type"),
                r.get::<i64, _>("notnull") == 0,
            )
        })
        .collect();
    let expected = [
        ("id", "TEXT", false),
        ("team_id", "TEXT", false),
        ("user_id", "TEXT", false),
        ("action", "TEXT", false),
        ("resource_type", "TEXT", true),
        ("resource_id", "TEXT", true),
        ("metadata", "TEXT", false),
        ("ip_address", "TEXT", true),
        ("user_agent", "TEXT", true),
        ("created_at", "TEXT", false),
    ];
    let expected: Vec<(String, String, bool)> = expected
        .iter()
        .map(|(n, t, null)| (n.to_string(), t.to_string(), *null))
        .collect();
    assert_eq!(columns, expected, "(name, type, nullable)");

    let mut indexes: Vec<String> = sqlx::query(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'activity_logs' \
         AND name NOT LIKE 'sqlite_autoindex%'",
    )
    .fetch_all(&pool)
    .await
    .expect("indexes")
    .iter()
    .map(|r| r.get("name"))
    .collect();
    indexes.sort();
    assert_eq!(
        indexes,
        [
            "activity_logs_team_time",
            "activity_logs_team_user_time",
            "activity_logs_time"
        ]
    );

    let row = sqlx::query("SELECT id, ip_address, created_at, metadata FROM activity_logs")
        .fetch_one(&pool)
        .await
        .expect("row");
    assert_eq!(
        row.get::<String, _>("id"),
        event.id.hyphenated().to_string()
    );
    assert_eq!(row.get::<String, _>("ip_address"), "2001:db8::1");
    assert_eq!(
        row.get::<String, _>("created_at"),
        "2025-01-31T09:05:03.000120Z"
    );
    assert_eq!(row.get::<String, _>("metadata"), "{}");

    // The team + time index serves the activity page's query.
    let plan: Vec<String> = sqlx::query(
        "EXPLAIN QUERY PLAN SELECT id FROM activity_logs WHERE team_id = ?1 \
         ORDER BY created_at DESC, id DESC LIMIT 50",
    )
    .bind(team.as_str())
    .fetch_all(&pool)
    .await
    .expect("plan")
    .iter()
    .map(|r| r.get("detail"))
    .collect();
    assert!(
        plan.iter().any(|d| d.contains("activity_logs_team_time")),
        "{plan:?}"
    );
    assert!(
        !plan.iter().any(|d| d.contains("TEMP B-TREE")),
        "sorts instead of using the index: {plan:?}"
    );

    // Other writers are held to the timestamp encoding.
    let bad = sqlx::query(
        "INSERT INTO activity_logs (id, team_id, user_id, action, created_at) \
         VALUES ('x', 't', 'u', 'a', '2025-01-31 09:05:03')",
    )
    .execute(&pool)
    .await;
    assert!(bad.is_err(), "a non fixed-width created_at must be refused");
    pool.close().await;
    db.close().await;
}

// The pattern library, API keys and revocations: the same suites as on Postgres.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pattern_store_conformance() {
    let (_dir, _path, db) = fresh().await;
    conformance::patterns::run_all(db.pattern_store()).await;
    db.close().await;
}

#[tokio::test]
async fn key_store_conformance() {
    let (_dir, _path, db) = fresh().await;
    conformance::keys::run_all(db.key_store().as_ref()).await;
    db.close().await;
}

#[tokio::test]
async fn control_log_conformance() {
    let (_dir, _path, db) = fresh().await;
    conformance::control_log::run_all(db.control_log().as_ref()).await;
    db.close().await;
}

#[tokio::test]
async fn revocation_store_conformance() {
    let (_dir, _path, db) = fresh().await;
    conformance::revocations::run_all(db.revocation_store().as_ref()).await;
    db.close().await;
}

#[tokio::test]
async fn usage_store_conformance() {
    let (_dir, _path, db) = fresh().await;
    conformance::usage::run_all(db.usage_store().as_ref()).await;
    db.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn usage_batches_across_pools() {
    let (_dir, path, db) = fresh().await;
    let second = connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    conformance::usage::concurrent_batches_add_up(db.usage_store(), second.usage_store()).await;
    second.close().await;
    db.close().await;
}

/// Two pools on one file (two processes' worth): racing writers from both, one wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_writers_across_pools() {
    let (_dir, path, db) = fresh().await;
    let second = connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    let (a, b) = (db.pattern_store(), second.pattern_store());
    teamhub_persistence::conformance::patterns::racing_writers_across_stores(a, b).await;
    second.close().await;
    db.close().await;
}

/// Webhook endpoints and the outbox; the racing claims use a second pool on the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn webhook_conformance() {
    let (_dir, path, db) = fresh().await;
    let other = connect(&format!("sqlite://{}", path.display()))
        .await
        .expect("second pool");
    conformance::webhooks::run_all(&db, &other).await;
    other.close().await;
    db.close().await;
}
