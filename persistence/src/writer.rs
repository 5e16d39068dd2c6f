//! The batched activity writer: the hot path never waits on the database.
//!
//! Connections call [`ActivityWriter::record`], which only tries to put the event into a
//! bounded queue and returns at once. One background task drains the queue into the
//! [`ActivitySink`] in batches (up to `max_batch` events, or whatever arrived within
//! `max_delay` of a batch's first event), so the database sees a few large transactions
//! instead of one per message.
//!
//! Delivery: an event that entered the queue is written exactly once as far as the table
//! is concerned. A failed write is retried with the *same* batch (same ids) with
//! exponential backoff until it succeeds, and sinks are idempotent by id, so a write that
//! landed but reported a failure (a timeout) does not duplicate rows.
//!
//! Overflow: when the queue is full (the database is slower than the hub, or down for
//! longer than the queue covers) and [`WriterConfig::spill_path`] is set, `record`
//! appends the event to that local file instead (NDJSON, one `write(2)` per event, see
//! the `spill` module). The task replays the file into the sink once the sink is healthy
//! again (after a successful write, interleaved with the queue, or whenever the queue is
//! empty), with the events' own ids, so a replay never duplicates a row. A clean shutdown
//! writes the queue, then the whole spill, and removes the file. Making connections wait
//! instead would turn a database outage into a chat outage.
//!
//! These lose events, each counted in `teamhub_activity_dropped_total` and logged (at
//! most once a second, with the number of drops not logged):
//! - `reason="queue_full"`: the queue is full and no spill file is configured.
//! - `reason="spill_full"`: the queue is full and so is the spill file
//!   ([`WriterConfig::spill_max_bytes`]); `teamhub_activity_spill_bytes` shows it at
//!   its bound.
//! - `reason="spill_failed"`: the queue is full and appending to the spill file failed
//!   (disk full, missing directory, permissions).
//! - `reason="spill_corrupt"`: a line of the spill file did not decode at replay (a
//!   line cut short when a previous process was killed mid-append).
//! - `reason="closed"`: `record` after [`WriterTask::shutdown`] began.
//! - `reason="rejected"`: the sink refused an event as unstorable
//!   ([`StoreError::Rejected`]). The batch is then retried one event at a time so only
//!   the offending events are set aside.
//!
//! What a kill loses. On `SIGKILL` (or a panic that aborts, or the OOM killer) nothing
//! runs, so everything only in memory is gone: the events in the queue, the batch being
//! collected, and the batch being written unless its transaction had committed. With a
//! spill file and [`WriterConfig::journal`] (the default), every event is also in the
//! journal (module `journal`) before `record` returns, and the next writer started
//! with the same `spill_path` replays it: a kill loses nothing that was recorded.
//! Without the journal, a kill loses what was in memory (up to the queue's 65,536
//! events by default). The journal and the spill survive a process kill (they are in
//! the OS page cache), not an OS crash or power loss (no `fsync`). A line being appended
//! at the moment of the kill is lost (`spill_corrupt`); its `record` had not returned.
//! Lines replayed but not yet truncated are replayed again after a restart, which adds
//! no rows (ids). The same holds when `shutdown`'s deadline passes: the queue's
//! remainder is in the journal and the spill file, which stay for the next start.
//!
//! Shutdown does not wait for the (many) `ActivityWriter` clones to be dropped: it flips
//! a shared flag that turns every clone into a counting no-op, closes the queue, and the
//! task drains what was already queued.
//!
//! Metrics: gauges `teamhub_activity_queue_depth` and `teamhub_activity_spill_bytes`,
//! histogram `teamhub_activity_batch_seconds` (every write attempt, label `outcome` =
//! `ok`/`error`), counters `teamhub_activity_rows_total` (events written),
//! `teamhub_activity_spilled_total` (events sent to the spill file),
//! `teamhub_activity_dropped_total` (label `reason`) and
//! `teamhub_activity_write_errors_total` (failed write attempts).

use std::future::Future;
use std::path::PathBuf;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::activity::{ActivityEvent, ActivitySink};
use crate::error::StoreError;
use crate::journal::Journal;
use crate::spill::{AppendError, Spill};

/// An event in the queue, with its journal sequence number (0: not journaled).
struct Queued {
    seq: u64,
    event: ActivityEvent,
}

/// Names of the metrics this module emits, for dashboards and `describe_*` calls.
pub mod metric {
    /// Gauge: events waiting in the queue.
    pub const QUEUE_DEPTH: &str = "teamhub_activity_queue_depth";
    /// Histogram: seconds per `write_batch` attempt, label `outcome` (`ok`, `error`).
    pub const BATCH_SECONDS: &str = "teamhub_activity_batch_seconds";
    /// Counter: events written to the sink.
    pub const ROWS: &str = "teamhub_activity_rows_total";
    /// Counter: events lost, label `reason` (`queue_full`, `spill_full`, `spill_failed`,
    /// `spill_corrupt`, `closed`, `rejected`).
    pub const DROPPED: &str = "teamhub_activity_dropped_total";
    /// Counter: events appended to the spill file because the queue was full.
    pub const SPILLED: &str = "teamhub_activity_spilled_total";
    /// Gauge: bytes in the spill file (at `spill_max_bytes`, further overflow is lost).
    pub const SPILL_BYTES: &str = "teamhub_activity_spill_bytes";
    /// Counter: failed `write_batch` attempts (each is retried).
    pub const WRITE_ERRORS: &str = "teamhub_activity_write_errors_total";
}

/// Registers descriptions of the writer's metrics with the installed recorder, so
/// `/metrics` shows `# HELP` lines. Call once after installing the recorder.
pub fn describe_metrics() {
    metrics::describe_gauge!(metric::QUEUE_DEPTH, "Activity events waiting to be written");
    metrics::describe_histogram!(
        metric::BATCH_SECONDS,
        metrics::Unit::Seconds,
        "Duration of one activity write_batch attempt"
    );
    metrics::describe_counter!(metric::ROWS, "Activity events written to the store");
    metrics::describe_counter!(
        metric::DROPPED,
        "Activity events lost (queue and spill full, writer closed, or rejected by the store)"
    );
    metrics::describe_counter!(
        metric::SPILLED,
        "Activity events sent to the local spill file because the queue was full"
    );
    metrics::describe_gauge!(
        metric::SPILL_BYTES,
        metrics::Unit::Bytes,
        "Size of the activity spill file"
    );
    metrics::describe_counter!(
        metric::WRITE_ERRORS,
        "Failed activity write attempts (retried)"
    );
}

/// Tuning of the writer. The defaults suit a node publishing up to tens of thousands of
/// messages a second.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// Events the queue holds before `record` spills (or, without a spill file, drops);
    /// at least 1. At the default 65,536 and 1 KiB per event that is ~64 MiB, and
    /// several seconds of a database outage at high load. All of it is lost if the
    /// process is killed (module docs).
    pub queue_capacity: usize,
    /// Most events per `write_batch` call (at least 1).
    pub max_batch: usize,
    /// Longest an event waits in a partial batch: the log lags the hub by about this much.
    pub max_delay: Duration,
    /// Cap of the exponential backoff between retries of a failed batch (which starts at
    /// 50 ms, or this cap if smaller).
    pub retry_max_backoff: Duration,
    /// Local file that takes the overflow of a full queue (NDJSON, append-only), or
    /// `None` to drop it. Its directory must exist. One writer per path. A file left by
    /// an earlier process is replayed at start.
    pub spill_path: Option<PathBuf>,
    /// Largest size of the spill file; overflow beyond it is dropped (`spill_full`).
    pub spill_max_bytes: u64,
    /// With a spill file: also append every event to a journal beside it before
    /// `record` returns (module `journal`), so a killed process loses none.
    pub journal: bool,
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig {
            queue_capacity: 65_536,
            max_batch: 512,
            max_delay: Duration::from_millis(50),
            retry_max_backoff: Duration::from_secs(5),
            spill_path: None,
            spill_max_bytes: 1 << 30,
            journal: true,
        }
    }
}

/// First retry delay after a failed write.
const INITIAL_BACKOFF: Duration = Duration::from_millis(50);
/// Shortest interval between two "dropped" log lines.
const DROP_LOG_INTERVAL: Duration = Duration::from_secs(1);
/// Extra time `shutdown` gives the task past the deadline to report before aborting it
/// (it only matters if a sink blocks its thread instead of awaiting).
const ABORT_GRACE: Duration = Duration::from_secs(1);

/// Counts of what the writer did, returned by [`WriterTask::shutdown`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Events the sink confirmed.
    pub written: u64,
    /// Events lost for any reason (queue and spill full, after close, rejected, ...).
    pub dropped: u64,
    /// Of `dropped`, events the sink rejected as unstorable.
    pub rejected: u64,
    /// Failed write attempts (each was retried).
    pub write_errors: u64,
    /// Events that went to the spill file because the queue was full.
    pub spilled: u64,
    /// Events found in a spill file left by an earlier process, at start.
    pub recovered: u64,
}

/// Why [`WriterTask::shutdown`] could not confirm that every queued event was written.
#[derive(Debug, thiserror::Error)]
pub enum WriterError {
    /// The deadline passed first. `unwritten` events were accepted but not confirmed;
    /// an in-flight batch among them may still have landed.
    #[error(
        "activity writer did not finish before its shutdown deadline: {unwritten} events not written"
    )]
    DeadlineExceeded { unwritten: u64, stats: WriterStats },
    /// The writer task panicked (a bug in a sink); queued events are lost.
    #[error("activity writer task failed: {0}")]
    TaskFailed(String),
}

/// Why an event was dropped; the `reason` label of `teamhub_activity_dropped_total`.
#[derive(Debug, Clone, Copy)]
enum DropReason {
    QueueFull,
    SpillFull,
    SpillFailed,
    SpillCorrupt,
    Closed,
    Rejected,
}

impl DropReason {
    fn as_str(self) -> &'static str {
        match self {
            DropReason::QueueFull => "queue_full",
            DropReason::SpillFull => "spill_full",
            DropReason::SpillFailed => "spill_failed",
            DropReason::SpillCorrupt => "spill_corrupt",
            DropReason::Closed => "closed",
            DropReason::Rejected => "rejected",
        }
    }
}

/// State shared by every `ActivityWriter` clone, the task and the `WriterTask`.
struct Shared {
    /// Set by `shutdown`: `record` drops instead of queueing.
    closed: AtomicBool,
    /// Events that entered the queue.
    accepted: AtomicU64,
    /// Events the sink confirmed.
    written: AtomicU64,
    /// Events lost, all reasons.
    dropped: AtomicU64,
    /// Of `dropped`, rejected by the sink.
    rejected: AtomicU64,
    /// Failed write attempts.
    write_errors: AtomicU64,
    /// Events appended to the spill file.
    spilled: AtomicU64,
    /// Events found in the spill file at start.
    recovered: AtomicU64,
    /// Accepted events that can no longer be written (unreadable spill lines).
    lost: AtomicU64,
    /// Rate limit of the drop log line: `std` time, as `record` may run outside Tokio.
    log_epoch: std::time::Instant,
    next_drop_log_ms: AtomicU64,
    drops_not_logged: AtomicU64,
}

impl Shared {
    fn new() -> Self {
        Shared {
            closed: AtomicBool::new(false),
            accepted: AtomicU64::new(0),
            written: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            write_errors: AtomicU64::new(0),
            spilled: AtomicU64::new(0),
            recovered: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            log_epoch: std::time::Instant::now(),
            next_drop_log_ms: AtomicU64::new(0),
            drops_not_logged: AtomicU64::new(0),
        }
    }

    fn stats(&self) -> WriterStats {
        WriterStats {
            written: self.written.load(Ordering::Acquire),
            dropped: self.dropped.load(Ordering::Acquire),
            rejected: self.rejected.load(Ordering::Acquire),
            write_errors: self.write_errors.load(Ordering::Acquire),
            spilled: self.spilled.load(Ordering::Acquire),
            recovered: self.recovered.load(Ordering::Acquire),
        }
    }

    /// Accepted events (queued, spilled or recovered) that were neither written nor
    /// rejected nor lost.
    fn unwritten(&self) -> u64 {
        let done = self.written.load(Ordering::Acquire)
            + self.rejected.load(Ordering::Acquire)
            + self.lost.load(Ordering::Acquire);
        self.accepted.load(Ordering::Acquire).saturating_sub(done)
    }

    fn note_drop(&self, reason: DropReason, count: u64) {
        self.dropped.fetch_add(count, Ordering::AcqRel);
        metrics::counter!(metric::DROPPED, "reason" => reason.as_str()).increment(count);
        // Log at most once per DROP_LOG_INTERVAL: when the queue is full this runs for
        // every message, and a log line per drop would add I/O to an overloaded node.
        let now = u64::try_from(self.log_epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        let next = self.next_drop_log_ms.load(Ordering::Relaxed);
        let interval = DROP_LOG_INTERVAL.as_millis() as u64;
        if now >= next
            && self
                .next_drop_log_ms
                .compare_exchange(next, now + interval, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let not_logged = self.drops_not_logged.swap(0, Ordering::Relaxed);
            tracing::warn!(
                reason = reason.as_str(),
                count,
                dropped_since_last_log = not_logged,
                "activity events dropped; the activity log is missing them"
            );
        } else {
            self.drops_not_logged.fetch_add(count, Ordering::Relaxed);
        }
    }
}

/// Handle to record activity; cheap to clone (one per connection is fine).
#[derive(Clone)]
pub struct ActivityWriter {
    tx: mpsc::Sender<Queued>,
    spill: Option<Arc<Spill>>,
    journal: Option<Arc<Journal>>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ActivityWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActivityWriter")
            .field("closed", &self.is_closed())
            .field("queued", &(self.tx.max_capacity() - self.tx.capacity()))
            .finish()
    }
}

impl ActivityWriter {
    /// Queues `event` for writing. Never awaits, so it is safe on any hot path (and
    /// outside a runtime). When the queue is full and a spill file is configured, the
    /// event is appended to it: one `write(2)` to a local file, under a mutex shared with
    /// other callers that spill at the same moment (no `fsync`). Otherwise, or when the
    /// spill is full or the writer is shut down, the event is dropped: counted in
    /// `teamhub_activity_dropped_total` and logged, rate-limited. See the module docs for
    /// why this beats waiting.
    pub fn record(&self, event: ActivityEvent) {
        if self.shared.closed.load(Ordering::Acquire) {
            self.shared.note_drop(DropReason::Closed, 1);
            return;
        }
        // Count before sending, so `accepted` never lags an event the task could
        // already have written.
        self.shared.accepted.fetch_add(1, Ordering::AcqRel);
        // With a journal the event is on disk before it is queued, and queued in
        // journal order (one lock for both), so a kill loses nothing acknowledged. A
        // full queue hands the event back in the error, for the spill: that is the
        // large `Err` clippy would flag.
        #[allow(clippy::result_large_err)]
        let sent = match &self.journal {
            Some(journal) => journal.append(&crate::spill::encode(&event), |seq| {
                self.tx.try_send(Queued { seq, event })
            }),
            None => self.tx.try_send(Queued { seq: 0, event }),
        };
        let reason = match sent {
            Ok(()) => return,
            Err(mpsc::error::TrySendError::Closed(_)) => DropReason::Closed,
            Err(mpsc::error::TrySendError::Full(Queued { event, .. })) => match &self.spill {
                None => DropReason::QueueFull,
                // Still counted as accepted: the task replays it.
                Some(spill) => match spill.append(&event) {
                    Ok(()) => {
                        self.shared.spilled.fetch_add(1, Ordering::AcqRel);
                        metrics::counter!(metric::SPILLED).increment(1);
                        metrics::gauge!(metric::SPILL_BYTES).set(spill.bytes() as f64);
                        return;
                    }
                    Err(AppendError::Full) => DropReason::SpillFull,
                    Err(AppendError::Closed) => DropReason::Closed,
                    Err(AppendError::Io(e)) => {
                        tracing::error!(
                            path = %spill.path().display(),
                            error = %e,
                            "cannot append to the activity spill file"
                        );
                        DropReason::SpillFailed
                    }
                },
            },
        };
        self.shared.accepted.fetch_sub(1, Ordering::AcqRel);
        self.shared.note_drop(reason, 1);
    }

    /// Events dropped so far, all reasons (also after shutdown).
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Acquire)
    }

    /// Whether shutdown has begun (every `record` is now a counted drop).
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }
}

/// Owner of the writer's background task. Dropping it without calling
/// [`WriterTask::shutdown`] leaves the task running until every `ActivityWriter` clone
/// is dropped; it then writes what is queued and exits.
pub struct WriterTask {
    handle: JoinHandle<Result<WriterStats, WriterError>>,
    deadline_tx: watch::Sender<Option<Instant>>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for WriterTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriterTask")
            .field("finished", &self.handle.is_finished())
            .field("stats", &self.shared.stats())
            .finish()
    }
}

/// Starts the writer task on the current Tokio runtime. With a `spill_path`, first
/// opens a spill file an earlier process left there (blocking: it counts its lines), so
/// its events are replayed. If that file cannot be read, the writer runs without a
/// spill (logged as an error; the file is left alone).
///
/// # Panics
/// Outside a Tokio runtime (like `tokio::spawn`).
pub fn spawn_writer(
    sink: Arc<dyn ActivitySink>,
    config: WriterConfig,
) -> (ActivityWriter, WriterTask) {
    let (tx, rx) = mpsc::channel(config.queue_capacity.max(1));
    let (deadline_tx, deadline_rx) = watch::channel(None);
    let shared = Arc::new(Shared::new());
    let spill = config.spill_path.as_deref().and_then(|path| {
        match Spill::open(path, config.spill_max_bytes) {
            Ok((spill, recovered)) => {
                if recovered > 0 {
                    tracing::warn!(
                        path = %path.display(),
                        events = recovered,
                        "activity spill file from an earlier run found; replaying it"
                    );
                }
                shared.recovered.store(recovered, Ordering::Release);
                shared.accepted.store(recovered, Ordering::Release);
                metrics::gauge!(metric::SPILL_BYTES).set(spill.bytes() as f64);
                Some(Arc::new(spill))
            }
            Err(e) => {
                tracing::error!(
                    path = %path.display(),
                    error = %e,
                    "cannot open the activity spill file; a full queue will drop events"
                );
                None
            }
        }
    });
    let journal = match (&config.spill_path, &spill) {
        (Some(path), Some(spill)) if config.journal => open_journal(path, spill, &shared),
        _ => None,
    };
    let task = Task {
        spill: spill.clone(),
        journal: journal.clone(),
        rx,
        sink,
        max_batch: config.max_batch.max(1),
        max_delay: config.max_delay,
        max_backoff: config.retry_max_backoff,
        shared: shared.clone(),
        deadline_rx,
    };
    let handle = tokio::spawn(task.run());
    (
        ActivityWriter {
            tx,
            spill,
            journal,
            shared: shared.clone(),
        },
        WriterTask {
            handle,
            deadline_tx,
            shared,
        },
    )
}

/// Opens the journal beside the spill file and moves what an earlier process left in it
/// into the spill, which replays it (ids make rows already written no-ops).
fn open_journal(path: &std::path::Path, spill: &Spill, shared: &Shared) -> Option<Arc<Journal>> {
    let (journal, leftover) = match Journal::open(path) {
        Ok(opened) => opened,
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "cannot open the activity journal; a killed node may lose its last events");
            return None;
        }
    };
    let mut recovered = 0;
    for line in leftover.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        match crate::spill::decode(line) {
            Ok(event) => match spill.append(&event) {
                Ok(()) => recovered += 1,
                Err(_) => shared.note_drop(DropReason::SpillFull, 1),
            },
            // The line being written when the process was killed.
            Err(_) => shared.note_drop(DropReason::SpillCorrupt, 1),
        }
    }
    if recovered > 0 {
        tracing::warn!(
            path = %path.display(),
            events = recovered,
            "activity journal of a process that did not shut down found; replaying it"
        );
        shared.recovered.fetch_add(recovered, Ordering::AcqRel);
        shared.accepted.fetch_add(recovered, Ordering::AcqRel);
        metrics::gauge!(metric::SPILL_BYTES).set(spill.bytes() as f64);
    }
    Some(Arc::new(journal))
}

impl WriterTask {
    /// Stops accepting (every `ActivityWriter` clone becomes a no-op that counts drops),
    /// writes everything already queued, then replays the whole spill file and removes
    /// it, and returns once it is all in the sink. Failed writes keep being retried until
    /// `deadline`; if it passes first, the error says how many accepted events were not
    /// confirmed (the spill file, if any, stays for the next start).
    pub async fn shutdown(self, deadline: Duration) -> Result<WriterStats, WriterError> {
        self.shared.closed.store(true, Ordering::Release);
        let now = Instant::now();
        let at = now
            .checked_add(deadline)
            .unwrap_or_else(|| now + Duration::from_secs(86_400 * 365));
        // Fails only if the task already ended (every writer was dropped): nothing to
        // signal then, the join below returns at once.
        let _ = self.deadline_tx.send(Some(at));

        let mut handle = self.handle;
        let grace = at.checked_add(ABORT_GRACE).unwrap_or(at);
        match tokio::time::timeout_at(grace, &mut handle).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(join)) => Err(WriterError::TaskFailed(join.to_string())),
            Err(_) => {
                // The task did not honour the deadline (a sink blocking its thread).
                handle.abort();
                Err(WriterError::DeadlineExceeded {
                    unwritten: self.shared.unwritten(),
                    stats: self.shared.stats(),
                })
            }
        }
    }
}

/// The background task: the only consumer of the queue.
struct Task {
    rx: mpsc::Receiver<Queued>,
    /// Overflow of the queue, replayed by this task.
    spill: Option<Arc<Spill>>,
    /// Every accepted event, until it is written (module `journal`).
    journal: Option<Arc<Journal>>,
    sink: Arc<dyn ActivitySink>,
    max_batch: usize,
    max_delay: Duration,
    max_backoff: Duration,
    shared: Arc<Shared>,
    /// `Some(deadline)` once shutdown began.
    deadline_rx: watch::Receiver<Option<Instant>>,
}

/// The deadline passed while events were still unwritten.
struct DeadlinePassed;

/// Result of writing a set of events with retries.
enum Written {
    Ok,
    /// The sink refused these events as unstorable; retrying cannot help.
    Rejected(StoreError),
}

impl Task {
    async fn run(mut self) -> Result<WriterStats, WriterError> {
        let outcome = self.run_inner().await;
        metrics::gauge!(metric::QUEUE_DEPTH).set(0.0);
        match outcome {
            Ok(()) => Ok(self.shared.stats()),
            Err(DeadlinePassed) => {
                let unwritten = self.shared.unwritten();
                tracing::error!(
                    unwritten,
                    "activity writer shutdown deadline passed; events not written"
                );
                Err(WriterError::DeadlineExceeded {
                    unwritten,
                    stats: self.shared.stats(),
                })
            }
        }
    }

    async fn run_inner(&mut self) -> Result<(), DeadlinePassed> {
        let mut batch = Vec::with_capacity(self.max_batch);

        // Running: batch by size or age until shutdown begins or every writer is gone.
        loop {
            let spill_pending = self.spill.as_ref().is_some_and(|s| s.pending());
            tokio::select! {
                biased;
                () = shutdown_begun(&mut self.deadline_rx) => break,
                n = self.rx.recv_many(&mut batch, self.max_batch) => if n == 0 { break },
                // The queue is empty: time to replay spilled events.
                () = std::future::ready(()), if spill_pending => {
                    self.replay_chunk().await?;
                    continue;
                }
            }
            let flush_at = Instant::now() + self.max_delay;
            while batch.len() < self.max_batch {
                let room = self.max_batch - batch.len();
                tokio::select! {
                    biased;
                    // Shutdown: write this batch now, then drain.
                    () = shutdown_begun(&mut self.deadline_rx) => break,
                    () = tokio::time::sleep_until(flush_at) => break,
                    n = self.rx.recv_many(&mut batch, room) => if n == 0 { break },
                }
            }
            self.write_queued(&mut batch).await?;
            // The sink is healthy (that write succeeded): replay one chunk of the spill
            // per batch from the queue, so a busy queue cannot starve it.
            self.replay_chunk().await?;
        }

        // Draining: refuse new events (a `record` that raced past the closed flag now
        // fails and counts a drop), then write everything still queued.
        self.rx.close();
        while self.rx.recv_many(&mut batch, self.max_batch).await > 0 {
            self.write_queued(&mut batch).await?;
        }
        // Then the spill, until it is empty and closed (a `record` that saw a full queue
        // just before the queue closed may still append; `finish` refuses only when
        // nothing is left to replay, and later appends are counted drops).
        if let Some(spill) = self.spill.clone() {
            loop {
                while spill.pending() {
                    self.replay_chunk().await?;
                }
                match spill.finish() {
                    Ok(true) => break,
                    Ok(false) => continue,
                    Err(e) => {
                        // Every event is written; only the empty file stays behind.
                        tracing::error!(
                            path = %spill.path().display(),
                            error = %e,
                            "cannot remove the drained activity spill file"
                        );
                        break;
                    }
                }
            }
            metrics::gauge!(metric::SPILL_BYTES).set(0.0);
        }
        // Everything accepted is written: nothing for a next start to replay.
        if let Some(journal) = &self.journal {
            journal.clear();
        }
        Ok(())
    }

    /// Writes a batch from the queue, then tells the journal how far it is written.
    async fn write_queued(&mut self, batch: &mut Vec<Queued>) -> Result<(), DeadlinePassed> {
        let last = batch.iter().map(|q| q.seq).max().unwrap_or(0);
        let mut events: Vec<ActivityEvent> = batch.drain(..).map(|q| q.event).collect();
        self.write(&mut events).await?;
        if let Some(journal) = &self.journal
            && last > 0
        {
            journal.durable_through(last);
        }
        Ok(())
    }

    /// Writes the next chunk (up to `max_batch` events) of the spill file to the sink,
    /// with the same retries as a batch from the queue, then marks it replayed. A no-op
    /// without a spill or with nothing to replay.
    async fn replay_chunk(&mut self) -> Result<(), DeadlinePassed> {
        let Some(spill) = self.spill.clone() else {
            return Ok(());
        };
        if !spill.pending() {
            return Ok(());
        }
        // Blocking file I/O of at most max_batch lines, in this background task only.
        let chunk = match spill.read_chunk(self.max_batch) {
            Ok(chunk) => chunk,
            Err(e) => {
                tracing::error!(
                    path = %spill.path().display(),
                    error = %e,
                    retry_in_ms = self.max_backoff.as_millis() as u64,
                    "cannot read the activity spill file; retrying"
                );
                until_deadline(&mut self.deadline_rx, tokio::time::sleep(self.max_backoff))
                    .await
                    .ok_or(DeadlinePassed)?;
                return Ok(());
            }
        };
        if chunk.end == spill.replayed() {
            // Nothing readable below the committed length: the file was truncated or
            // replaced behind our back. Back off rather than spin.
            tracing::error!(
                path = %spill.path().display(),
                "activity spill file shorter than written; retrying"
            );
            until_deadline(&mut self.deadline_rx, tokio::time::sleep(self.max_backoff))
                .await
                .ok_or(DeadlinePassed)?;
            return Ok(());
        }
        if chunk.corrupt > 0 {
            self.shared.lost.fetch_add(chunk.corrupt, Ordering::AcqRel);
            self.shared
                .note_drop(DropReason::SpillCorrupt, chunk.corrupt);
        }
        let mut events = chunk.events;
        if !events.is_empty() {
            self.write(&mut events).await?;
        }
        if let Err(e) = spill.consumed(chunk.end) {
            // Only the truncation failed; the file keeps growing until the next one.
            tracing::warn!(
                path = %spill.path().display(),
                error = %e,
                "cannot truncate the replayed activity spill file"
            );
        }
        metrics::gauge!(metric::SPILL_BYTES).set(spill.bytes() as f64);
        Ok(())
    }

    /// Writes `batch` (then clears it), retrying until it is stored. If the sink rejects
    /// the batch as unstorable, retries its events one at a time and drops only the
    /// rejected ones.
    async fn write(&mut self, batch: &mut Vec<ActivityEvent>) -> Result<(), DeadlinePassed> {
        metrics::gauge!(metric::QUEUE_DEPTH).set(self.rx.len() as f64);
        if let Written::Rejected(err) = self.write_with_retry(batch).await? {
            if batch.len() == 1 {
                self.reject(&batch[0], &err);
            } else {
                tracing::warn!(
                    error = %err,
                    events = batch.len(),
                    "activity batch rejected; writing its events one by one"
                );
                for event in batch.iter() {
                    if let Written::Rejected(err) =
                        self.write_with_retry(std::slice::from_ref(event)).await?
                    {
                        self.reject(event, &err);
                    }
                }
            }
        }
        batch.clear();
        Ok(())
    }

    fn reject(&self, event: &ActivityEvent, err: &StoreError) {
        self.shared.rejected.fetch_add(1, Ordering::AcqRel);
        tracing::error!(
            error = %err,
            id = %event.id,
            team = %event.team,
            action = %event.action,
            "activity event rejected by the store; dropped"
        );
        self.shared.note_drop(DropReason::Rejected, 1);
    }

    /// Calls the sink until it accepts `events` or rejects them for good. Other errors
    /// are retried with exponential backoff; once shutdown began, only until its deadline.
    async fn write_with_retry(
        &mut self,
        events: &[ActivityEvent],
    ) -> Result<Written, DeadlinePassed> {
        let mut backoff = INITIAL_BACKOFF.min(self.max_backoff);
        loop {
            let started = Instant::now();
            let attempt = self.sink.write_batch(events);
            let result = until_deadline(&mut self.deadline_rx, attempt)
                .await
                .ok_or(DeadlinePassed)?;
            let elapsed = started.elapsed();
            match result {
                Ok(()) => {
                    metrics::histogram!(metric::BATCH_SECONDS, "outcome" => "ok").record(elapsed);
                    let n = events.len() as u64;
                    metrics::counter!(metric::ROWS).increment(n);
                    self.shared.written.fetch_add(n, Ordering::AcqRel);
                    return Ok(Written::Ok);
                }
                Err(err) => {
                    metrics::histogram!(metric::BATCH_SECONDS, "outcome" => "error")
                        .record(elapsed);
                    metrics::counter!(metric::WRITE_ERRORS).increment(1);
                    self.shared.write_errors.fetch_add(1, Ordering::AcqRel);
                    if matches!(err, StoreError::Rejected(_)) {
                        return Ok(Written::Rejected(err));
                    }
                    metrics::gauge!(metric::QUEUE_DEPTH).set(self.rx.len() as f64);
                    tracing::warn!(
                        error = %err,
                        events = events.len(),
                        retry_in_ms = backoff.as_millis() as u64,
                        "activity write failed; retrying the same batch"
                    );
                    until_deadline(&mut self.deadline_rx, tokio::time::sleep(backoff))
                        .await
                        .ok_or(DeadlinePassed)?;
                    backoff = (backoff * 2).min(self.max_backoff);
                }
            }
        }
    }
}

/// Completes once shutdown has begun; never, if the `WriterTask` was dropped without it.
async fn shutdown_begun(deadline_rx: &mut watch::Receiver<Option<Instant>>) {
    if deadline_rx.wait_for(Option::is_some).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Runs `fut` to completion, unless shutdown begins (before or during it) and its
/// deadline passes first; then `None`.
async fn until_deadline<F: Future>(
    deadline_rx: &mut watch::Receiver<Option<Instant>>,
    fut: F,
) -> Option<F::Output> {
    let mut fut = pin!(fut);
    loop {
        let deadline = *deadline_rx.borrow_and_update();
        if let Some(deadline) = deadline {
            return tokio::time::timeout_at(deadline, fut).await.ok();
        }
        tokio::select! {
            out = &mut fut => return Some(out),
            changed = deadline_rx.changed() => {
                if changed.is_err() {
                    // The WriterTask was dropped: no deadline will ever come.
                    return Some(fut.await);
                }
            }
        }
    }
}
