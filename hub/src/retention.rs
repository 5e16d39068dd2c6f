//! Activity retention: each team's plan says how long its activity is kept, and a
//! background job deletes what has expired.
//!
//! Plans (`plans.rs`): by default `free` 30 days (every team not configured
//! otherwise), `pro` 90, `enterprise` 365, set per team with
//! `--team-plans design=pro,acme=enterprise`; a plan without retention keeps its
//! teams' activity for good. The job runs at
//! start and then every `--retention-interval`. It deletes in batches of at most
//! [`BATCH`] rows, each its own short transaction, with a [`PAUSE`] between batches, so
//! the activity writer (and, on SQLite, every other writer of the file) never waits for
//! more than one batch. Teams with a plan of their own are swept one by one on the
//! team index; all other teams together on the time index. Several nodes may run the
//! job at once: Postgres skips rows another node is deleting, and deleting is
//! idempotent anyway.

use std::sync::Arc;
use std::time::Duration;

use teamhub_persistence::{ActivityRetention, RetentionScope, StoreError};
use teamhub_protocol::TeamId;
use time::OffsetDateTime;

use crate::plans::{DEFAULT_PLAN, PlanBook, PlanName};
use tokio_util::sync::CancellationToken;

/// Rows deleted per statement.
pub const BATCH: u32 = 500;
/// Pause between two batches, so writers get the database in between.
pub const PAUSE: Duration = Duration::from_millis(50);
/// Counter of deleted rows.
pub const DELETED: &str = "teamhub_activity_retention_deleted_total";

/// Runs a retention pass now and then every `interval`, until `stop`.
pub async fn run(
    store: Arc<dyn ActivityRetention>,
    plans: Arc<PlanBook>,
    interval: Duration,
    stop: CancellationToken,
) {
    loop {
        match pass(store.as_ref(), &plans, OffsetDateTime::now_utc(), &stop).await {
            Ok(deleted) if deleted > 0 => tracing::info!(deleted, "activity retention pass"),
            Ok(_) => {}
            // The next pass retries; nothing is lost by waiting.
            Err(e) => tracing::warn!(error = %e, "activity retention pass failed"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}

/// One pass over every team as of `now`; returns the rows deleted.
pub async fn pass(
    store: &dyn ActivityRetention,
    plans: &PlanBook,
    now: OffsetDateTime,
    stop: &CancellationToken,
) -> Result<u64, StoreError> {
    // `None`: the plan keeps activity for good.
    let cutoff = |plan: &PlanName| {
        plans
            .limits(plan)
            .retention_days
            .map(|days| now - time::Duration::days(i64::from(days)))
    };
    let own: Vec<(TeamId, PlanName)> = plans
        .teams()
        .listed()
        .map(|(team, plan)| (team.clone(), plan.clone()))
        .collect();
    let mut deleted = 0;
    for (team, plan) in &own {
        if let Some(before) = cutoff(plan) {
            deleted += sweep(store, RetentionScope::Team(team), before, stop).await?;
        }
    }
    let own: Vec<TeamId> = own.into_iter().map(|(team, _)| team).collect();
    let free = PlanName::new(DEFAULT_PLAN).expect("a valid plan name");
    if let Some(before) = cutoff(&free) {
        deleted += sweep(store, RetentionScope::AllExcept(&own), before, stop).await?;
    }
    Ok(deleted)
}

/// Deletes `scope`'s rows older than `before`, batch by batch, pausing in between.
async fn sweep(
    store: &dyn ActivityRetention,
    scope: RetentionScope<'_>,
    before: OffsetDateTime,
    stop: &CancellationToken,
) -> Result<u64, StoreError> {
    let mut deleted = 0;
    loop {
        let n = store.delete_expired(scope, before, BATCH).await?;
        deleted += n;
        ::metrics::counter!(DELETED).increment(n);
        if n < u64::from(BATCH) {
            return Ok(deleted);
        }
        tokio::select! {
            () = stop.cancelled() => return Ok(deleted),
            () = tokio::time::sleep(PAUSE) => {}
        }
    }
}
