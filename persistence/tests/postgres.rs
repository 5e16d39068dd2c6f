//! The Postgres backend against the activity conformance suite, plus what is specific to
//! Postgres: the schema other tools read, error classes, and a connection pool broken
//! mid-traffic.
//!
//! Needs a real server: `TEAMHUB_TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`). An unreachable server FAILS these tests,
//! it does not skip them: a green run must mean the backend was exercised.
//!
//! Isolation: every test creates its own schema (`teamhub_test_<uuid>`), connects with
//! `options=-c search_path=<schema>` and a unique `application_name`, migrates into it
//! and drops it (`CASCADE`) when its guard is dropped, also when the test panics. Tests
//! therefore run in parallel on one database without seeing each other's rows, tables
//! or connections.

use std::collections::HashSet;
use std::time::Duration;

use sqlx::Row;
use sqlx::postgres::{PgPool, PgPoolOptions};
use teamhub_persistence::{
    ActivityEvent, Database, StoreError, WriterConfig, conformance, connect, spawn_writer,
};
use teamhub_protocol::{TeamId, UserId};
use uuid::Uuid;

/// Longest any test waits for a condition before failing.
const PATIENCE: Duration = Duration::from_secs(30);
/// How often a condition on the database is re-checked while waiting for it.
const POLL: Duration = Duration::from_millis(10);

async fn within<F: std::future::Future>(what: &str, fut: F) -> F::Output {
    tokio::time::timeout(PATIENCE, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out after {PATIENCE:?} waiting for {what}"))
}

fn event(team: &TeamId, i: usize) -> ActivityEvent {
    let raw = serde_json::value::RawValue::from_string(format!(r#"{{"i":{i}}}"#)).unwrap();
    ActivityEvent::new(team.clone(), UserId::new("pg-test").unwrap(), "test.event")
        .with_metadata(raw)
}

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

fn base_url() -> String {
    std::env::var("TEAMHUB_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

/// The URL without its credentials, for messages.
fn shown(url: &str) -> &str {
    url.rsplit_once('@').map_or(url, |(_, host)| host)
}

/// A pool on the base URL (the `public` schema), for creating and inspecting test
/// schemas as an outside tool would. Panics, with what to do, if the server is down.
async fn admin() -> PgPool {
    let url = base_url();
    PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(5))
        .connect(&url)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "PostgreSQL at {} is unreachable ({e}). These tests need a real server: \
                 set TEAMHUB_TEST_DATABASE_URL (default {DEFAULT_URL}) or start one, e.g. \
                 `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`",
                shown(&url)
            )
        })
}

/// A migrated database in a schema of its own; dropping it drops the schema.
struct TestDb {
    db: Database,
    admin: PgPool,
    schema: String,
    /// The `application_name` of every connection `db` opens.
    app: String,
}

impl TestDb {
    async fn new() -> TestDb {
        let admin = admin().await;
        let tag = Uuid::new_v4().simple().to_string();
        let schema = format!("teamhub_test_{tag}");
        let app = format!("teamhub-test-{tag}");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(&admin)
            .await
            .expect("create test schema");
        let base = base_url();
        let sep = if base.contains('?') { '&' } else { '?' };
        // `options` carries server settings for every connection of the pool.
        let url = format!("{base}{sep}application_name={app}&options=-c%20search_path%3D{schema}");
        let db = connect(&url).await.expect("connect");
        let test = TestDb {
            db,
            admin,
            schema,
            app,
        };
        test.db.migrate().await.expect("migrate");
        test
    }

    /// Terminates every connection of this test's pool; returns how many there were.
    async fn terminate_connections(&self) -> i64 {
        sqlx::query(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) AS n \
             FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid() \
               AND application_name = $1",
        )
        .bind(&self.app)
        .fetch_one(&self.admin)
        .await
        .expect("terminate backends")
        .get("n")
    }

    /// Whether one of this test's connections is waiting for a lock (its insert is
    /// blocked behind the test's `LOCK TABLE`).
    async fn writer_waits_on_lock(&self) -> bool {
        sqlx::query(
            "SELECT EXISTS (SELECT 1 FROM pg_stat_activity \
             WHERE datname = current_database() AND application_name = $1 \
               AND wait_event_type = 'Lock') AS waiting",
        )
        .bind(&self.app)
        .fetch_one(&self.admin)
        .await
        .expect("pg_stat_activity")
        .get("waiting")
    }

    async fn count_rows(&self, team: &TeamId) -> i64 {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) AS n FROM {}.activity_logs WHERE team_id = $1",
            self.schema
        )))
        .bind(team.as_str())
        .fetch_one(&self.admin)
        .await
        .expect("count rows")
        .get("n")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Dropping runs outside any runtime guarantee (maybe while a test panics), so
        // the schema is dropped from a thread with a runtime of its own.
        // (The test's own pool is not closed here: its connections run on the test's
        // runtime, which is blocked in this drop. Idle connections hold no locks, so
        // they do not stand in the way of DROP SCHEMA.)
        let schema = self.schema.clone();
        let outcome = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let admin = admin().await;
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP SCHEMA IF EXISTS {schema} CASCADE"
                )))
                .execute(&admin)
                .await
                .map(drop)
            })
        })
        .join();
        if !matches!(outcome, Ok(Ok(()))) && !std::thread::panicking() {
            panic!("dropping the test schema failed: {outcome:?}");
        }
    }
}

/// One test per conformance check, each in its own schema, so a failure is named.
macro_rules! conformance_tests {
    ($($check:ident),* $(,)?) => {$(
        #[tokio::test]
        async fn $check() {
            let test = TestDb::new().await;
            conformance::$check(
                test.db.activity_sink().as_ref(),
                test.db.activity_reader().as_ref(),
            )
            .await;
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
    let test = TestDb::new().await;
    conformance::retention_deletes_only_expired_rows(
        test.db.activity_sink().as_ref(),
        test.db.activity_reader().as_ref(),
        test.db.activity_retention().as_ref(),
    )
    .await;
}

#[tokio::test]
async fn whole_suite_twice_in_one_schema() {
    let test = TestDb::new().await;
    assert_eq!(test.db.backend_name(), "postgres");
    test.db.migrate().await.expect("migrating twice is a no-op");
    conformance::run_all(&test.db).await;
    conformance::run_all(&test.db).await;
}

#[tokio::test]
async fn unreachable_server_is_unavailable() {
    // Port 1 on loopback: nothing listens, the connection is refused at once.
    match connect("postgresql://postgres:hunter2@127.0.0.1:1/test").await {
        Err(err @ StoreError::Unavailable(_)) => {
            assert!(err.is_retryable());
            let text = err.to_string();
            assert!(text.contains("127.0.0.1:1"), "{text}");
            assert!(text.contains("refused"), "says why: {text}");
            assert!(!text.contains("hunter2"), "leaks the password: {text}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn malformed_url_is_refused_without_echoing_credentials() {
    match connect("postgres://teamhub:hunter2@db.example:notaport/teamhub").await {
        Err(err @ StoreError::InvalidUrl(_)) => {
            let text = err.to_string();
            assert!(!text.contains("hunter2"), "leaks the password: {text}");
        }
        other => panic!("expected InvalidUrl, got {other:?}"),
    }
}

#[tokio::test]
async fn closed_database_is_unavailable() {
    let test = TestDb::new().await;
    let sink = test.db.activity_sink();
    test.db.close().await;
    let event = ActivityEvent::new(TeamId::new("t").unwrap(), UserId::new("u").unwrap(), "x");
    let err = sink
        .write_batch(&[event])
        .await
        .expect_err("pool is closed");
    assert!(err.is_retryable(), "{err:?}");
    assert!(matches!(sink.ping().await, Err(StoreError::Unavailable(_))));
}

#[tokio::test]
async fn unstorable_data_is_rejected() {
    let test = TestDb::new().await;
    // Valid JSON, but JSONB cannot hold a NUL character.
    let nul = serde_json::value::RawValue::from_string(r#"{"a":"\u0000"}"#.into()).unwrap();
    let team = TeamId::new("reject").unwrap();
    let event = ActivityEvent::new(team.clone(), UserId::new("u").unwrap(), "x").with_metadata(nul);
    match test.db.activity_sink().write_batch(&[event]).await {
        Err(err @ StoreError::Rejected(_)) => assert!(!err.is_retryable()),
        other => panic!("expected Rejected, got {other:?}"),
    }
    assert_eq!(test.count_rows(&team).await, 0, "the batch must not land");
}

/// Reporting tools read `activity_logs` directly (PROTOCOL.md section 7): its columns,
/// types and indexes are part of the contract.
#[tokio::test]
async fn schema_is_the_documented_one() {
    let test = TestDb::new().await;
    let team = TeamId::new("schema").unwrap();
    let event = ActivityEvent::new(team.clone(), UserId::new("u").unwrap(), "x")
        .with_client(Some("2001:db8::1".parse().unwrap()), None)
        .with_created_at(time::macros::datetime!(2025-01-31 10:05:03.00012 +01:00));
    test.db
        .activity_sink()
        .write_batch(std::slice::from_ref(&event))
        .await
        .expect("write");

    let columns: Vec<(String, String, bool)> = sqlx::query(
        "SELECT column_name::text AS name, data_type::text AS ty, is_nullable = 'YES' AS null \
         FROM information_schema.columns \
         WHERE table_schema = $1 AND table_name = 'activity_logs' ORDER BY ordinal_position",
    )
    .bind(&test.schema)
    .fetch_all(&test.admin)
    .await
    .expect("columns")
    .iter()
    .map(|r| (r.get("name"), r.get("ty"), r.get("null")))
    .collect();
    let expected = [
        ("id", "uuid", false),
        ("team_id", "text", false),
        ("user_id", "text", false),
        ("action", "text", false),
        ("resource_type", "text", true),
        ("resource_id", "text", true),
        ("metadata", "jsonb", false),
        ("ip_address", "inet", true),
        ("user_agent", "text", true),
        ("created_at", "timestamp with time zone", false),
    ];
    let expected: Vec<(String, String, bool)> = expected
        .iter()
        .map(|(n, t, null)| (n.to_string(), t.to_string(), *null))
        .collect();
    assert_eq!(columns, expected, "(name, type, nullable)");

    let indexes: Vec<(String, String)> = sqlx::query(
        "SELECT indexname::text AS name, indexdef FROM pg_indexes \
         WHERE schemaname = $1 AND tablename = 'activity_logs' ORDER BY indexname",
    )
    .bind(&test.schema)
    .fetch_all(&test.admin)
    .await
    .expect("indexes")
    .iter()
    .map(|r| (r.get("name"), r.get("indexdef")))
    .collect();
    let names: Vec<&str> = indexes.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "activity_logs_pkey",
            "activity_logs_team_time",
            "activity_logs_team_user_time",
            "activity_logs_time"
        ]
    );
    assert!(indexes[0].1.contains("UNIQUE") && indexes[0].1.ends_with("(id)"));
    assert!(
        indexes[1]
            .1
            .ends_with("(team_id, created_at DESC, id DESC)"),
        "{}",
        indexes[1].1
    );
    assert!(
        indexes[2]
            .1
            .ends_with("(team_id, user_id, created_at DESC, id DESC)"),
        "{}",
        indexes[2].1
    );
    assert!(indexes[3].1.ends_with("(created_at)"), "{}", indexes[3].1);

    // Native types, as another tool reads them.
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT id, ip_address::text AS ip, \
                to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') AS at, \
                metadata = '{{}}'::jsonb AS empty \
         FROM {}.activity_logs",
        test.schema
    )))
    .fetch_one(&test.admin)
    .await
    .expect("row");
    assert_eq!(row.get::<Uuid, _>("id"), event.id);
    assert_eq!(row.get::<String, _>("ip"), "2001:db8::1/128");
    assert_eq!(row.get::<String, _>("at"), "2025-01-31 09:05:03.000120");
    assert!(row.get::<bool, _>("empty"));
}

/// The sink's connections are killed over and over while events flow through the
/// writer, among them one in the middle of its insert in every round: failed writes are
/// retried with the same ids, so every event lands exactly once.
///
/// To catch a write in flight without relying on timing, each round holds an
/// `EXCLUSIVE` lock on the table from another connection, waits until the writer's
/// insert is seen blocked on it (`pg_stat_activity.wait_event_type = 'Lock'`), then
/// terminates the writer's connections and releases the lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_pool_mid_traffic_loses_and_duplicates_nothing() {
    const ROUNDS: usize = 10;
    const PER_ROUND: usize = 200;
    let test = TestDb::new().await;
    let team = TeamId::new(&format!("broken-{}", Uuid::new_v4().simple())).unwrap();
    let spill_dir = tempfile::tempdir().unwrap();
    let config = WriterConfig {
        queue_capacity: 64,
        max_batch: 50,
        max_delay: Duration::from_millis(5),
        retry_max_backoff: Duration::from_millis(50),
        // A small queue, so the overflow goes through the spill file too.
        spill_path: Some(spill_dir.path().join("activity-spill.ndjson")),
        spill_max_bytes: 64 << 20,
        journal: false,
    };
    let (writer, task) = spawn_writer(test.db.activity_sink(), config);

    let mut recorded = HashSet::new();
    let mut terminated = 0;
    for round in 0..ROUNDS {
        let mut lock = test.admin.begin().await.expect("begin");
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "LOCK TABLE {}.activity_logs IN EXCLUSIVE MODE",
            test.schema
        )))
        .execute(&mut *lock)
        .await
        .expect("lock the table");
        for i in 0..PER_ROUND {
            let e = event(&team, round * PER_ROUND + i);
            recorded.insert(e.id);
            writer.record(e);
            if i == PER_ROUND / 2 {
                // Mid-round: kill the writer's connection inside its blocked insert.
                within("the writer's insert to block on the lock", async {
                    let mut poll = tokio::time::interval(POLL);
                    while !test.writer_waits_on_lock().await {
                        poll.tick().await;
                    }
                })
                .await;
                terminated += test.terminate_connections().await;
            }
        }
        lock.commit().await.expect("release the lock");
        // Progress despite the kills: this round's rows arrive before the next one.
        let want = ((round + 1) * PER_ROUND) as i64;
        within(&format!("{want} rows"), async {
            let mut poll = tokio::time::interval(POLL);
            while test.count_rows(&team).await < want {
                poll.tick().await;
            }
        })
        .await;
        terminated += test.terminate_connections().await;
    }
    assert!(
        terminated >= ROUNDS as i64,
        "terminated only {terminated} connections"
    );

    let stats = within("shutdown", task.shutdown(PATIENCE))
        .await
        .expect("writer flushed");
    eprintln!("terminated {terminated} connections; writer stats {stats:?}");
    assert_eq!(stats.written as usize, recorded.len());
    assert_eq!(stats.dropped, 0);
    assert!(
        stats.write_errors >= ROUNDS as u64,
        "every round must break an insert in flight: {stats:?}"
    );
    assert!(
        !spill_dir.path().join("activity-spill.ndjson").exists(),
        "spill file left behind after shutdown"
    );

    let rows = test
        .db
        .activity_reader()
        .recent(&team, 100_000)
        .await
        .expect("read");
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    assert_eq!(ids.len(), recorded.len(), "row count");
    assert_eq!(ids.into_iter().collect::<HashSet<_>>(), recorded);
}

// The pattern library, API keys and revocations: the same suites as on SQLite.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pattern_store_conformance() {
    let test = TestDb::new().await;
    conformance::patterns::run_all(test.db.pattern_store()).await;
}

#[tokio::test]
async fn key_store_conformance() {
    let test = TestDb::new().await;
    conformance::keys::run_all(test.db.key_store().as_ref()).await;
}

#[tokio::test]
async fn control_log_conformance() {
    let test = TestDb::new().await;
    conformance::control_log::run_all(test.db.control_log().as_ref()).await;
}

#[tokio::test]
async fn revocation_store_conformance() {
    let test = TestDb::new().await;
    conformance::revocations::run_all(test.db.revocation_store().as_ref()).await;
}

#[tokio::test]
async fn usage_store_conformance() {
    let test = TestDb::new().await;
    conformance::usage::run_all(test.db.usage_store().as_ref()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn usage_batches_across_pools() {
    let test = TestDb::new().await;
    let base = base_url();
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}options=-c%20search_path%3D{}", test.schema);
    let second = connect(&url).await.expect("second pool");
    conformance::usage::concurrent_batches_add_up(test.db.usage_store(), second.usage_store())
        .await;
    second.close().await;
}

/// Two databases (two nodes' pools) on one schema: racing writers from both, one wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_writers_across_pools() {
    let test = TestDb::new().await;
    let base = base_url();
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}options=-c%20search_path%3D{}", test.schema);
    let second = connect(&url).await.expect("second pool");
    let (a, b) = (test.db.pattern_store(), second.pattern_store());
    teamhub_persistence::conformance::patterns::racing_writers_across_stores(a, b).await;
    second.close().await;
}

/// Webhook endpoints and the outbox; the racing claims come from a second pool (a
/// second node) on the same schema.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn webhook_conformance() {
    let test = TestDb::new().await;
    let base = base_url();
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}options=-c%20search_path%3D{}", test.schema);
    let second = connect(&url).await.expect("second pool");
    conformance::webhooks::run_all(&test.db, &second).await;
    second.close().await;
}
