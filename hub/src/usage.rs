//! Usage metering: what each team used per UTC day (messages, API calls, peak
//! connections, webhook deliveries), counted in memory on the node and added to the
//! database in batches.
//!
//! Counting is a map update (no I/O): a publish, a REST request or a join records into
//! a [`DashMap`] keyed by team and day, whose guards are never held across an
//! `.await`. Every `--usage-flush-interval`, on drain, and before the node answers a
//! usage request, [`Usage::flush`] takes what was counted and adds it as one batch
//! with a fresh id ([`UsageStore::add`]). A batch that fails is kept, id and all, and
//! retried before anything newer, so a flush whose commit landed but whose answer was
//! lost is not counted twice. Counts of several nodes add up in the database; a
//! node's `peak_connections` is the team's cluster-wide count it saw at a join, so the
//! maximum over every node's batches is the team's peak.
//!
//! What is not in the database yet is lost if the process is killed (at most one
//! flush interval); a drain flushes it all.

use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use teamhub_persistence::{StoreError, UsageCounts, UsageDelta, UsageStore};
use teamhub_protocol::TeamId;
use time::{Date, OffsetDateTime};
use tokio::sync::Mutex;
use uuid::Uuid;

/// How long batch ids are kept for deduplication.
const KEEP_BATCHES: time::Duration = time::Duration::days(2);

/// A batch waiting to be added (again).
struct Batch {
    id: Uuid,
    rows: Vec<UsageDelta>,
}

/// The node's usage counts not yet in the database.
pub struct Usage {
    node: Arc<str>,
    store: Arc<dyn UsageStore>,
    counts: DashMap<(TeamId, Date), UsageCounts>,
    /// The batch whose add failed, retried first; also one flush at a time.
    retry: Mutex<Option<Batch>>,
}

impl Usage {
    pub fn new(node: Arc<str>, store: Arc<dyn UsageStore>) -> Arc<Usage> {
        Arc::new(Usage {
            node,
            store,
            counts: DashMap::new(),
            retry: Mutex::new(None),
        })
    }

    fn record(&self, team: &TeamId, day: Date, f: impl FnOnce(&mut UsageCounts)) {
        if let Some(mut c) = self.counts.get_mut(&(team.clone(), day)) {
            f(&mut c);
            return;
        }
        f(&mut self.counts.entry((team.clone(), day)).or_default());
    }

    /// An accepted publish (WebSocket or REST, ephemeral types included) at `ts`.
    pub fn message(&self, team: &TeamId, ts: OffsetDateTime) {
        self.record(team, ts.date(), |c| c.messages += 1);
    }

    /// An authenticated REST request naming `team` in its path.
    pub fn api_call(&self, team: &TeamId) {
        self.record(team, today(), |c| c.api_calls += 1);
    }

    /// The team has `n` connections joined across the cluster, as a join found.
    pub fn connections(&self, team: &TeamId, n: u64) {
        self.record(team, today(), |c| {
            c.peak_connections = c.peak_connections.max(n);
        });
    }

    /// A webhook delivered for `team` (for the webhook sender to call).
    pub fn webhook_delivered(&self, team: &TeamId) {
        self.record(team, today(), |c| c.webhook_deliveries += 1);
    }

    /// Adds everything counted so far to the database: first a batch that failed
    /// before (same id), then the counts since, as a new batch. On error what was not
    /// added stays for the next flush.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let mut retry = self.retry.lock().await;
        if let Some(batch) = retry.as_ref() {
            self.store.add(batch.id, &self.node, &batch.rows).await?;
            *retry = None;
        }
        let keys: Vec<(TeamId, Date)> = self.counts.iter().map(|e| e.key().clone()).collect();
        let rows: Vec<UsageDelta> = keys
            .into_iter()
            .filter_map(|key| self.counts.remove(&key))
            .filter(|(_, counts)| !counts.is_empty())
            .map(|((team, day), counts)| UsageDelta { team, day, counts })
            .collect();
        if rows.is_empty() {
            return Ok(());
        }
        let batch = Batch {
            id: Uuid::now_v7(),
            rows,
        };
        if let Err(e) = self.store.add(batch.id, &self.node, &batch.rows).await {
            *retry = Some(batch);
            return Err(e);
        }
        Ok(())
    }

    /// Flushes every `every` until `stop`, then once more (the drain's flush is the
    /// caller's: see `server.rs`). Prunes old batch ids now and then.
    pub async fn run(self: Arc<Self>, every: Duration, stop: tokio_util::sync::CancellationToken) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        let mut rounds: u64 = 0;
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            if let Err(e) = self.flush().await {
                tracing::warn!(error = %e, "usage flush failed; retrying with the same batch");
            }
            rounds += 1;
            if rounds % 360 == 1 {
                let before = OffsetDateTime::now_utc() - KEEP_BATCHES;
                if let Err(e) = self.store.prune_batches(before).await {
                    tracing::warn!(error = %e, "pruning usage batch ids failed");
                }
            }
        }
    }
}

/// Today, UTC.
pub fn today() -> Date {
    OffsetDateTime::now_utc().date()
}
