//! Activity retention: each team's plan says how long its activity is kept, and a
//! background job deletes what has expired.
//!
//! Plans: `free` 30 days (every team not configured otherwise), `pro` 90, `enterprise`
//! 365, set per team with `--team-plans design=pro,acme=enterprise`. The job runs at
//! start and then every `--retention-interval`. It deletes in batches of at most
//! [`BATCH`] rows, each its own short transaction, with a [`PAUSE`] between batches, so
//! the activity writer (and, on SQLite, every other writer of the file) never waits for
//! more than one batch. Teams with a plan of their own are swept one by one on the
//! team index; all other teams together on the time index. Several nodes may run the
//! job at once: Postgres skips rows another node is deleting, and deleting is
//! idempotent anyway.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use teamhub_persistence::{ActivityRetention, RetentionScope, StoreError};
use teamhub_protocol::TeamId;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

/// Rows deleted per statement.
pub const BATCH: u32 = 500;
/// Pause between two batches, so writers get the database in between.
pub const PAUSE: Duration = Duration::from_millis(50);
/// Counter of deleted rows.
pub const DELETED: &str = "teamhub_activity_retention_deleted_total";

/// A team's plan, which sets how long its activity is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Plan {
    Free,
    Pro,
    Enterprise,
}

impl Plan {
    /// Days of activity kept.
    pub const fn retention_days(self) -> i64 {
        match self {
            Plan::Free => 30,
            Plan::Pro => 90,
            Plan::Enterprise => 365,
        }
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Plan::Free => "free",
            Plan::Pro => "pro",
            Plan::Enterprise => "enterprise",
        })
    }
}

impl FromStr for Plan {
    type Err = String;
    fn from_str(s: &str) -> Result<Plan, String> {
        match s {
            "free" => Ok(Plan::Free),
            "pro" => Ok(Plan::Pro),
            "enterprise" => Ok(Plan::Enterprise),
            other => Err(format!(
                "unknown plan {other:?}: expected free, pro or enterprise"
            )),
        }
    }
}

/// The plans set per team; every other team is on `free`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TeamPlans(BTreeMap<TeamId, Plan>);

impl TeamPlans {
    pub fn plan(&self, team: &TeamId) -> Plan {
        self.0.get(team).copied().unwrap_or(Plan::Free)
    }
}

impl FromStr for TeamPlans {
    type Err = String;
    /// `design=pro,acme=enterprise` (spaces around items allowed; empty is none).
    fn from_str(s: &str) -> Result<TeamPlans, String> {
        let mut plans = BTreeMap::new();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (team, plan) = item
                .split_once('=')
                .ok_or_else(|| format!("{item:?}: expected TEAM=PLAN"))?;
            let team = TeamId::new(team.trim()).map_err(|e| format!("{item:?}: {e}"))?;
            let plan: Plan = plan.trim().parse().map_err(|e| format!("{item:?}: {e}"))?;
            if plans.insert(team.clone(), plan).is_some() {
                return Err(format!("team {team} is given a plan twice"));
            }
        }
        Ok(TeamPlans(plans))
    }
}

/// Runs a retention pass now and then every `interval`, until `stop`.
pub async fn run(
    store: Arc<dyn ActivityRetention>,
    plans: TeamPlans,
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
    plans: &TeamPlans,
    now: OffsetDateTime,
    stop: &CancellationToken,
) -> Result<u64, StoreError> {
    let cutoff = |plan: Plan| now - time::Duration::days(plan.retention_days());
    let own: Vec<TeamId> = plans
        .0
        .iter()
        .filter(|(_, plan)| **plan != Plan::Free)
        .map(|(team, _)| team.clone())
        .collect();
    let mut deleted = 0;
    for team in &own {
        let before = cutoff(plans.plan(team));
        deleted += sweep(store, RetentionScope::Team(team), before, stop).await?;
    }
    deleted += sweep(
        store,
        RetentionScope::AllExcept(&own),
        cutoff(Plan::Free),
        stop,
    )
    .await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_parse() {
        let plans: TeamPlans = " design=pro, acme = enterprise ,x=free,".parse().unwrap();
        let t = |s: &str| TeamId::new(s).unwrap();
        assert_eq!(plans.plan(&t("design")), Plan::Pro);
        assert_eq!(plans.plan(&t("acme")), Plan::Enterprise);
        assert_eq!(plans.plan(&t("x")), Plan::Free);
        assert_eq!(plans.plan(&t("other")), Plan::Free);
        assert_eq!("".parse::<TeamPlans>().unwrap(), TeamPlans::default());
        for bad in ["design", "design=gold", "a b=pro", "a=pro,a=free", "=pro"] {
            assert!(bad.parse::<TeamPlans>().is_err(), "{bad}");
        }
        assert_eq!(
            [Plan::Free, Plan::Pro, Plan::Enterprise].map(Plan::retention_days),
            [30, 90, 365]
        );
    }
}
