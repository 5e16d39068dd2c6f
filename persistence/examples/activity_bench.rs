//! Benchmarks of the activity log, as recorded in BENCHMARKS.md.
//!
//! ```sh
//! cargo run --release -p teamhub-persistence --example activity_bench -- query
//! cargo run --release -p teamhub-persistence --example activity_bench -- writer
//! ```
//!
//! `query`: seeds a fresh Postgres schema with 1,000,000 rows across 1,000 teams (one
//! large team of 200,000 rows, the rest ~800 each), then times `ActivityReader::page`
//! (decoding included) for first pages, filtered first pages and deep cursor pages,
//! beside the same deep page read with `OFFSET`, and prints the plans. `writer`: times
//! the batched `ActivityWriter` over the Postgres sink and over a SQLite file.
//!
//! The server is `TEAMHUB_TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`); the schema is dropped at the end. Every
//! loop is bounded in count.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::Connection;
use sqlx::postgres::PgConnection;
use teamhub_persistence::{
    ActivityEvent, ActivityQuery, Cursor, Database, WriterConfig, connect, spawn_writer,
};
use teamhub_protocol::{TeamId, UserId};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::{NoContext, Timestamp, Uuid};

const TEAMS: usize = 1_000;
const ROWS: usize = 1_000_000;
const BIG_TEAM_ROWS: usize = 200_000;
const USERS_PER_TEAM: usize = 20;
const ACTIONS: [&str; 8] = [
    "doc.edit",
    "chat.message",
    "presence.joined",
    "presence.left",
    "pattern.updated",
    "build.finished",
    "review.comment",
    "deploy.started",
];
/// Timed repetitions of each query (after a warm-up of a tenth of that).
const RUNS: usize = 300;
const PAGE: u32 = 100;
/// Position of the deep pages in the large team.
const DEEP: usize = 150_000;

fn base_url() -> String {
    std::env::var("TEAMHUB_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

#[tokio::main]
async fn main() -> anyhow_like::Result {
    let mode = std::env::args().nth(1).unwrap_or_default();
    match mode.as_str() {
        "query" => query_bench().await,
        "writer" => writer_bench().await,
        _ => Err("usage: activity_bench query|writer".into()),
    }
}

/// Tiny error plumbing for a program that only reports.
mod anyhow_like {
    pub type Result = std::result::Result<(), Box<dyn std::error::Error>>;
}

struct Schema {
    name: String,
    url: String,
}

async fn create_schema(tag: &str) -> Result<Schema, Box<dyn std::error::Error>> {
    let name = format!("teamhub_bench_{tag}_{}", Uuid::new_v4().simple());
    let mut admin = PgConnection::connect(&base_url()).await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {name}")))
        .execute(&mut admin)
        .await?;
    let base = base_url();
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}options=-c%20search_path%3D{name}");
    Ok(Schema { name, url })
}

async fn drop_schema(schema: &Schema) -> anyhow_like::Result {
    let mut admin = PgConnection::connect(&base_url()).await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS {} CASCADE",
        schema.name
    )))
    .execute(&mut admin)
    .await?;
    Ok(())
}

fn team_name(t: usize) -> TeamId {
    TeamId::new(&format!("team-{t:04}")).unwrap()
}

fn user_name(u: usize) -> UserId {
    UserId::new(&format!("user-{u:02}")).unwrap()
}

/// The `i`-th row of `team` (user `i % 20`, action `i % 8`), created `secs` seconds
/// after `start`.
fn row(team: &TeamId, i: usize, secs: usize, start: OffsetDateTime) -> ActivityEvent {
    let at = start + time::Duration::seconds(secs as i64);
    let nanos = at.unix_timestamp_nanos();
    let ts = Timestamp::from_unix(
        NoContext,
        (nanos / 1_000_000_000) as u64,
        (nanos % 1_000_000_000) as u32,
    );
    let meta = serde_json::value::RawValue::from_string(format!(
        r#"{{"i":{i},"text":"benchmark row with a few words of payload"}}"#
    ))
    .unwrap();
    let mut e = ActivityEvent::new(
        team.clone(),
        user_name(i % USERS_PER_TEAM),
        ACTIONS[i % ACTIONS.len()],
    )
    .with_metadata(meta)
    .with_client(
        Some("203.0.113.7".parse().unwrap()),
        Some("bench/1.0".into()),
    )
    .with_created_at(at)
    .with_resource(
        if i.is_multiple_of(3) {
            "doc"
        } else {
            "message"
        },
        i.to_string(),
    );
    e.id = Uuid::new_v7(ts);
    e
}

async fn seed(db: &Database, start: OffsetDateTime) -> anyhow_like::Result {
    let sink = db.activity_sink();
    let per_small = (ROWS - BIG_TEAM_ROWS) / (TEAMS - 1);
    let mut batch = Vec::with_capacity(20_000);
    let mut written = 0usize;
    let began = Instant::now();
    let mut flush = async |batch: &mut Vec<ActivityEvent>| -> anyhow_like::Result {
        sink.write_batch(batch).await?;
        written += batch.len();
        batch.clear();
        Ok(())
    };
    for t in 0..TEAMS {
        let team = team_name(t);
        let n = if t == 0 {
            BIG_TEAM_ROWS
        } else {
            per_small + usize::from(t <= (ROWS - BIG_TEAM_ROWS) % (TEAMS - 1))
        };
        for i in 0..n {
            // The large team's rows are a second apart, a small team's 250 s: both
            // span ~2.3 days and interleave.
            batch.push(row(&team, i, i * if t == 0 { 1 } else { 250 }, start));
            if batch.len() == batch.capacity() {
                flush(&mut batch).await?;
            }
        }
    }
    flush(&mut batch).await?;
    let secs = began.elapsed().as_secs_f64();
    println!(
        "seeded {written} rows across {TEAMS} teams in {secs:.1} s ({:.0} rows/s, UNNEST batches of 20,000)",
        written as f64 / secs
    );
    Ok(())
}

struct Stats {
    p50: Duration,
    p95: Duration,
    p99: Duration,
    max: Duration,
}

fn stats(mut samples: Vec<Duration>) -> Stats {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 * q).ceil() as usize).saturating_sub(1)];
    Stats {
        p50: at(0.50),
        p95: at(0.95),
        p99: at(0.99),
        max: *samples.last().unwrap(),
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

fn report(name: &str, rows: usize, s: &Stats) {
    println!(
        "| {name} | {rows} | {} | {} | {} | {} |",
        ms(s.p50),
        ms(s.p95),
        ms(s.p99),
        ms(s.max)
    );
}

/// Times `f` RUNS times after a warm-up; `f` returns the rows it read.
async fn time_it<F, Fut>(mut f: F) -> Result<(usize, Stats), Box<dyn std::error::Error>>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = Result<usize, Box<dyn std::error::Error>>>,
{
    for i in 0..RUNS / 10 {
        f(i).await?;
    }
    let mut samples = Vec::with_capacity(RUNS);
    let mut rows = 0;
    for i in 0..RUNS {
        let began = Instant::now();
        rows = f(i).await?;
        samples.push(began.elapsed());
    }
    Ok((rows, stats(samples)))
}

async fn query_bench() -> anyhow_like::Result {
    let schema = create_schema("query").await?;
    let result = query_bench_in(&schema).await;
    drop_schema(&schema).await?;
    result
}

async fn query_bench_in(schema: &Schema) -> anyhow_like::Result {
    let db = connect(&schema.url).await?;
    db.migrate().await?;
    let start = OffsetDateTime::now_utc() - time::Duration::days(20);
    seed(&db, start).await?;
    let mut admin = PgConnection::connect(&schema.url).await?;
    sqlx::raw_sql("VACUUM ANALYZE activity_logs")
        .execute(&mut admin)
        .await?;

    let reader = db.activity_reader();
    let big = team_name(0);
    // The cursor of the row at position DEEP (newest first) of the large team, and of
    // the row at 90% of user-03's rows there.
    let cursor_at = async |user: Option<&UserId>, depth: usize| {
        let mut q = ActivityQuery::team(big.clone(), 1000);
        q.user = user.cloned();
        let mut seen = 0;
        loop {
            let page = reader.page(&q).await.expect("page");
            if seen + page.items.len() >= depth {
                return Cursor::after_row(&page.items[depth - seen - 1]);
            }
            seen += page.items.len();
            q.after = Some(page.next.expect("deep enough"));
        }
    };
    let deep = cursor_at(None, DEEP).await;
    let user = user_name(3);
    let user_rows = BIG_TEAM_ROWS / USERS_PER_TEAM;
    let user_depth = user_rows * 9 / 10;
    let deep_user = cursor_at(Some(&user), user_depth).await;

    println!();
    println!(
        "{RUNS} runs each after {} warm-up runs, page size {PAGE}, times in ms:",
        RUNS / 10
    );
    println!();
    println!("| query | rows | p50 | p95 | p99 | max |");
    println!("|---|---:|---:|---:|---:|---:|");
    let page = |q: ActivityQuery| {
        let reader = reader.clone();
        async move {
            reader
                .page(&q)
                .await
                .map(|p| p.items.len())
                .map_err(|e| e.into())
        }
    };
    let first = ActivityQuery::team(big.clone(), PAGE);
    let (n, s) = time_it(|_| page(first.clone())).await?;
    report("large team, first page", n, &s);
    let (n, s) = time_it(|_| {
        page(ActivityQuery {
            user: Some(user.clone()),
            ..first.clone()
        })
    })
    .await?;
    report("large team, first page, user filter", n, &s);
    let (n, s) = time_it(|_| {
        page(ActivityQuery {
            action: Some("doc.edit".into()),
            ..first.clone()
        })
    })
    .await?;
    report("large team, first page, action filter", n, &s);
    let (n, s) = time_it(|i| {
        page(ActivityQuery {
            user: Some(user_name(i % USERS_PER_TEAM)),
            action: Some(ACTIONS[(i % USERS_PER_TEAM) % ACTIONS.len()].into()),
            ..ActivityQuery::team(team_name(1 + i * 7 % (TEAMS - 1)), PAGE)
        })
    })
    .await?;
    report(
        "small teams (rotating), first page, user + action filter",
        n,
        &s,
    );
    let since = start + time::Duration::hours(12);
    let until = start + time::Duration::hours(36);
    let (n, s) = time_it(|_| {
        page(ActivityQuery {
            since: Some(since),
            until: Some(until),
            ..first.clone()
        })
    })
    .await?;
    report("large team, first page, since/until", n, &s);
    let (n, s) = time_it(|_| {
        page(ActivityQuery {
            after: Some(deep),
            ..first.clone()
        })
    })
    .await?;
    report(&format!("large team, cursor page at row {DEEP}"), n, &s);
    let (n, s) = time_it(|_| {
        page(ActivityQuery {
            user: Some(user.clone()),
            after: Some(deep_user),
            ..first.clone()
        })
    })
    .await?;
    report(
        &format!("large team, user filter, cursor page at row {user_depth}"),
        n,
        &s,
    );

    // Baseline: the same deep pages by OFFSET, the same columns and decoding work
    // left out (so the baseline is, if anything, flattered).
    let offset_sql = |user: bool, offset: usize| {
        format!(
            "SELECT id, team_id, user_id, action, resource_type, resource_id, \
             metadata::text AS metadata, host(ip_address) AS ip_address, user_agent, created_at \
             FROM activity_logs WHERE team_id = 'team-0000' {} \
             ORDER BY created_at DESC, id DESC LIMIT {} OFFSET {offset}",
            if user { "AND user_id = 'user-03'" } else { "" },
            PAGE + 1
        )
    };
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&schema.url)
        .await?;
    for (name, sql) in [
        (
            format!("baseline: OFFSET {DEEP}, large team"),
            offset_sql(false, DEEP),
        ),
        (
            format!("baseline: OFFSET {user_depth}, large team, user filter"),
            offset_sql(true, user_depth),
        ),
    ] {
        let (n, s) = time_it(|_| {
            let pool = pool.clone();
            let sql = sql.clone();
            async move {
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .fetch_all(&pool)
                    .await?;
                Ok(rows.len())
            }
        })
        .await?;
        report(&name, n, &s);
    }

    println!();
    let cursor_sql = |user: bool, c: &Cursor| {
        format!(
            "SELECT id, team_id, user_id, action, resource_type, resource_id, \
             metadata::text AS metadata, host(ip_address) AS ip_address, user_agent, created_at \
             FROM activity_logs WHERE team_id = 'team-0000' {} \
             AND (created_at, id) < ('{}'::timestamptz, '{}'::uuid) \
             ORDER BY created_at DESC, id DESC LIMIT {}",
            if user { "AND user_id = 'user-03'" } else { "" },
            c.created_at.format(&Rfc3339).unwrap(),
            c.id,
            PAGE + 1
        )
    };
    for (name, sql) in [
        ("cursor page, large team", cursor_sql(false, &deep)),
        ("cursor page, user filter", cursor_sql(true, &deep_user)),
        ("OFFSET page, large team", offset_sql(false, DEEP)),
    ] {
        println!("EXPLAIN (ANALYZE, BUFFERS) {name}:");
        let plan = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(format!(
            "EXPLAIN (ANALYZE, BUFFERS) {sql}"
        )))
        .fetch_all(&mut admin)
        .await?;
        for line in plan {
            println!("    {line}");
        }
    }
    db.close().await;
    Ok(())
}

/// Events recorded per writer run.
const WRITER_EVENTS: usize = 200_000;

async fn writer_bench() -> anyhow_like::Result {
    let schema = create_schema("writer").await?;
    let pg = connect(&schema.url).await?;
    pg.migrate().await?;
    let dir = tempfile::tempdir()?;
    let sqlite = connect(&format!(
        "sqlite://{}",
        dir.path().join("bench.db").display()
    ))
    .await?;
    sqlite.migrate().await?;
    println!("| backend | max_batch | journal | events | seconds | rows/s | record() ns/event |");
    println!("|---|---:|---|---:|---:|---:|---:|");
    let mut result = Ok(());
    for (name, db) in [("postgres", &pg), ("sqlite", &sqlite)] {
        for max_batch in [512, 4096] {
            // The journal (one write(2) per event on `record`) against none, in one run.
            for journal in [false, true] {
                if let Err(e) = writer_run(name, db, max_batch, journal).await {
                    result = Err(e);
                }
            }
        }
    }
    pg.close().await;
    sqlite.close().await;
    drop_schema(&schema).await?;
    result
}

async fn writer_run(
    name: &str,
    db: &Database,
    max_batch: usize,
    journal: bool,
) -> anyhow_like::Result {
    let sink = db.activity_sink();
    let spill_dir = tempfile::tempdir()?;
    let (writer, task) = spawn_writer(
        Arc::clone(&sink),
        WriterConfig {
            // Room for every event: the run measures the writer, not drops.
            queue_capacity: WRITER_EVENTS,
            max_batch,
            spill_path: Some(spill_dir.path().join("activity.spill")),
            journal,
            ..WriterConfig::default()
        },
    );
    // Each run its own team, so the rows of one do not collide with another's.
    let team = team_name(max_batch + usize::from(journal));
    let start = OffsetDateTime::now_utc();
    let events: Vec<ActivityEvent> = (0..WRITER_EVENTS)
        .map(|i| row(&team, i, i, start))
        .collect();
    let began = Instant::now();
    for e in events {
        writer.record(e);
    }
    let recorded = began.elapsed();
    let stats = task.shutdown(Duration::from_secs(300)).await?;
    let secs = began.elapsed().as_secs_f64();
    if stats.written != WRITER_EVENTS as u64 || writer.dropped() != 0 {
        return Err(format!(
            "{name}: wrote {} of {WRITER_EVENTS}: {stats:?}",
            stats.written
        )
        .into());
    }
    println!(
        "| {name} | {max_batch} | {} | {WRITER_EVENTS} | {secs:.2} | {:.0} | {:.0} |",
        if journal { "on" } else { "off" },
        WRITER_EVENTS as f64 / secs,
        recorded.as_nanos() as f64 / WRITER_EVENTS as f64
    );
    Ok(())
}
