//! The batched activity writer: nothing lost or duplicated while the sink fails, drops
//! counted instead of blocking, shutdown flushes and reports. Synchronisation is by
//! waiting on conditions (with timeouts), never by sleeping.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicBool;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use teamhub_persistence::{
    ActivityEvent, ActivitySink, ActivityWriter, StoreError, WriterConfig, WriterError,
    WriterStats, connect, spawn_writer,
};
use teamhub_protocol::{TeamId, UserId};
use tokio::sync::{Semaphore, mpsc, watch};
use uuid::Uuid;

/// Longest any test waits for a condition before failing.
const PATIENCE: Duration = Duration::from_secs(10);

fn event(team: &TeamId, i: usize) -> ActivityEvent {
    let raw = serde_json::value::RawValue::from_string(format!(r#"{{"i":{i}}}"#)).unwrap();
    ActivityEvent::new(
        team.clone(),
        UserId::new("writer-test").unwrap(),
        "test.event",
    )
    .with_metadata(raw)
}

fn team() -> TeamId {
    TeamId::new("writer").unwrap()
}

fn config(max_batch: usize) -> WriterConfig {
    WriterConfig {
        queue_capacity: 10_000,
        max_batch,
        max_delay: Duration::from_millis(20),
        retry_max_backoff: Duration::from_millis(5),
        spill_path: None,
        spill_max_bytes: 1 << 20,
        // The journal has a test of its own (below); these check the queue and spill.
        journal: false,
    }
}

async fn within<F: std::future::Future>(what: &str, fut: F) -> F::Output {
    tokio::time::timeout(PATIENCE, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// What a sink saw: every call, in order, with its ids and whether it succeeded.
#[derive(Default)]
struct CallLog {
    calls: Mutex<Vec<(Vec<Uuid>, bool)>>,
}

impl CallLog {
    fn push(&self, events: &[ActivityEvent], ok: bool) {
        let ids = events.iter().map(|e| e.id).collect();
        self.calls.lock().unwrap().push((ids, ok));
    }

    fn calls(&self) -> Vec<(Vec<Uuid>, bool)> {
        self.calls.lock().unwrap().clone()
    }

    /// Ids of successful calls, asserting no id was successfully written twice.
    fn written_once(&self) -> HashSet<Uuid> {
        let mut seen = HashSet::new();
        for (ids, ok) in self.calls() {
            if ok {
                for id in ids {
                    assert!(seen.insert(id), "event {id} written twice");
                }
            }
        }
        seen
    }
}

/// An in-memory sink, idempotent by id like a real one, that logs calls and publishes
/// its row count so tests can wait for it.
struct MemorySink {
    log: CallLog,
    rows: Mutex<HashMap<Uuid, ActivityEvent>>,
    count: watch::Sender<usize>,
}

impl MemorySink {
    fn new() -> Arc<Self> {
        Arc::new(MemorySink {
            log: CallLog::default(),
            rows: Mutex::default(),
            count: watch::channel(0).0,
        })
    }

    fn store(&self, events: &[ActivityEvent]) {
        let mut rows = self.rows.lock().unwrap();
        for e in events {
            rows.entry(e.id).or_insert_with(|| e.clone());
        }
        self.count.send_replace(rows.len());
    }

    fn ids(&self) -> HashSet<Uuid> {
        self.rows.lock().unwrap().keys().copied().collect()
    }

    async fn wait_for_rows(&self, n: usize) {
        let mut rx = self.count.subscribe();
        within(&format!("{n} rows"), rx.wait_for(|c| *c >= n))
            .await
            .unwrap();
    }
}

#[async_trait::async_trait]
impl ActivitySink for MemorySink {
    async fn write_batch(&self, events: &[ActivityEvent]) -> Result<(), StoreError> {
        self.store(events);
        self.log.push(events, true);
        Ok(())
    }
    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// Fails its first `failures` calls with `Unavailable`. Failures 0, 2 and 4 write through
/// first, like a write that landed but whose acknowledgement timed out.
struct FlakySink {
    inner: Arc<dyn ActivitySink>,
    failures: usize,
    calls: AtomicUsize,
    log: CallLog,
}

#[async_trait::async_trait]
impl ActivitySink for FlakySink {
    async fn write_batch(&self, events: &[ActivityEvent]) -> Result<(), StoreError> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        if n < self.failures {
            if matches!(n, 0 | 2 | 4) {
                self.inner.write_batch(events).await?;
            }
            self.log.push(events, false);
            return Err(StoreError::Unavailable(
                format!("injected failure {n}").into(),
            ));
        }
        self.inner.write_batch(events).await?;
        self.log.push(events, true);
        Ok(())
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
}

/// Announces each call on `entered`, then waits for the gate to open.
struct GateSink {
    inner: Arc<MemorySink>,
    entered: mpsc::UnboundedSender<usize>,
    gate: Semaphore,
}

#[async_trait::async_trait]
impl ActivitySink for GateSink {
    async fn write_batch(&self, events: &[ActivityEvent]) -> Result<(), StoreError> {
        let _ = self.entered.send(events.len());
        let _permit = self.gate.acquire().await.expect("gate open");
        self.inner.write_batch(events).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

fn gated() -> (
    Arc<GateSink>,
    Arc<MemorySink>,
    mpsc::UnboundedReceiver<usize>,
) {
    let memory = MemorySink::new();
    let (entered, entered_rx) = mpsc::unbounded_channel();
    let sink = Arc::new(GateSink {
        inner: memory.clone(),
        entered,
        gate: Semaphore::new(0),
    });
    (sink, memory, entered_rx)
}

#[tokio::test]
async fn every_recorded_event_is_written_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = connect(&format!("sqlite://{}", dir.path().join("a.db").display()))
        .await
        .unwrap();
    db.migrate().await.unwrap();
    let sink = Arc::new(FlakySink {
        inner: db.activity_sink(),
        failures: 0,
        calls: AtomicUsize::new(0),
        log: CallLog::default(),
    });
    let (writer, task) = spawn_writer(sink.clone(), config(64));

    let team = team();
    let mut producers = Vec::new();
    for p in 0..4 {
        let writer: ActivityWriter = writer.clone();
        let team = team.clone();
        producers.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..500 {
                let e = event(&team, p * 1000 + i);
                ids.push(e.id);
                writer.record(e);
                if i % 50 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            ids
        }));
    }
    let mut recorded = HashSet::new();
    for p in producers {
        recorded.extend(p.await.unwrap());
    }
    assert_eq!(recorded.len(), 2000);

    let stats = within("shutdown", task.shutdown(PATIENCE)).await.unwrap();
    assert_eq!(
        stats,
        WriterStats {
            written: 2000,
            dropped: 0,
            rejected: 0,
            write_errors: 0,
            spilled: 0,
            recovered: 0,
        }
    );
    assert_eq!(sink.log.written_once(), recorded);
    assert!(
        sink.log.calls().iter().all(|(ids, _)| ids.len() <= 64),
        "a batch exceeded max_batch"
    );
    let rows = db.activity_reader().recent(&team, 10_000).await.unwrap();
    let stored: HashSet<Uuid> = rows.iter().map(|r| r.id).collect();
    assert_eq!(rows.len(), 2000);
    assert_eq!(stored, recorded);
    db.close().await;
}

#[tokio::test]
async fn failed_batches_are_retried_without_loss_or_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let db = connect(&format!("sqlite://{}", dir.path().join("a.db").display()))
        .await
        .unwrap();
    db.migrate().await.unwrap();
    let sink = Arc::new(FlakySink {
        inner: db.activity_sink(),
        failures: 5,
        calls: AtomicUsize::new(0),
        log: CallLog::default(),
    });
    let (writer, task) = spawn_writer(sink.clone(), config(100));
    let team = team();
    let recorded: HashSet<Uuid> = (0..300)
        .map(|i| {
            let e = event(&team, i);
            let id = e.id;
            writer.record(e);
            id
        })
        .collect();

    let stats = within("shutdown", task.shutdown(PATIENCE)).await.unwrap();
    assert_eq!(stats.written, 300);
    assert_eq!(stats.write_errors, 5);
    assert_eq!(stats.dropped, 0);

    // A failed call is followed by a retry of exactly the same events.
    let calls = sink.log.calls();
    assert_eq!(calls.iter().filter(|(_, ok)| !ok).count(), 5);
    for pair in calls.windows(2) {
        if !pair[0].1 {
            assert_eq!(pair[1].0, pair[0].0, "retry must resend the same batch");
        }
    }
    assert_eq!(sink.log.written_once(), recorded);

    // Failures that had landed did not duplicate rows.
    let rows = db.activity_reader().recent(&team, 10_000).await.unwrap();
    assert_eq!(rows.len(), 300);
    assert_eq!(rows.iter().map(|r| r.id).collect::<HashSet<_>>(), recorded);
    db.close().await;
}

#[tokio::test]
async fn partial_batch_is_flushed_after_max_delay() {
    let memory = MemorySink::new();
    let (writer, task) = spawn_writer(memory.clone(), config(512));
    for i in 0..3 {
        writer.record(event(&team(), i));
    }
    // No shutdown, no more events: the age of the batch alone must flush it.
    memory.wait_for_rows(3).await;
    let stats = task.shutdown(PATIENCE).await.unwrap();
    assert_eq!(stats.written, 3);
}

#[tokio::test]
async fn backlog_is_written_in_batches_of_at_most_max_batch() {
    let (sink, memory, mut entered) = gated();
    let (writer, task) = spawn_writer(sink.clone(), config(100));
    writer.record(event(&team(), 0));
    assert_eq!(within("first write", entered.recv()).await, Some(1));
    // The task is stuck in that write: these queue up.
    for i in 1..=250 {
        writer.record(event(&team(), i));
    }
    sink.gate.add_permits(1);
    let stats = within("shutdown", task.shutdown(PATIENCE)).await.unwrap();
    assert_eq!(stats.written, 251);
    let sizes: Vec<usize> = memory
        .log
        .calls()
        .iter()
        .map(|(ids, _)| ids.len())
        .collect();
    assert_eq!(sizes, [1, 100, 100, 50], "batch sizes");
}

#[tokio::test]
async fn full_queue_counts_drops_without_blocking() {
    let (sink, memory, mut entered) = gated();
    let config = WriterConfig {
        queue_capacity: 4,
        max_batch: 1,
        ..config(1)
    };
    let (writer, task) = spawn_writer(sink.clone(), config);
    let first = event(&team(), 0);
    let mut kept = vec![first.id];
    writer.record(first);
    assert_eq!(within("first write", entered.recv()).await, Some(1));

    // The task holds one event in the blocked sink; the queue takes 4 more.
    for i in 1..=4 {
        let e = event(&team(), i);
        kept.push(e.id);
        writer.record(e);
    }
    assert_eq!(writer.dropped(), 0);
    // `record` is synchronous: returning at all is "not blocking"; each excess event
    // must be counted.
    for i in 5..8 {
        writer.record(event(&team(), i));
    }
    assert_eq!(writer.dropped(), 3);

    sink.gate.add_permits(1);
    let stats = within("shutdown", task.shutdown(PATIENCE)).await.unwrap();
    assert_eq!(stats.written, 5);
    assert_eq!(stats.dropped, 3);
    assert_eq!(memory.ids(), kept.into_iter().collect());
}

#[tokio::test]
async fn record_after_shutdown_counts_a_drop() {
    let memory = MemorySink::new();
    let (writer, task) = spawn_writer(memory.clone(), config(16));
    let before = event(&team(), 0);
    let before_id = before.id;
    writer.record(before);
    let clone = writer.clone();
    let stats = within("shutdown", task.shutdown(PATIENCE)).await.unwrap();
    assert_eq!(stats.written, 1);

    assert!(writer.is_closed() && clone.is_closed());
    writer.record(event(&team(), 1));
    clone.record(event(&team(), 2));
    assert_eq!(writer.dropped(), 2);
    assert_eq!(memory.ids(), HashSet::from([before_id]));
}

#[tokio::test]
async fn shutdown_deadline_reports_unwritten_events() {
    struct Down;
    #[async_trait::async_trait]
    impl ActivitySink for Down {
        async fn write_batch(&self, _: &[ActivityEvent]) -> Result<(), StoreError> {
            Err(StoreError::Unavailable("database is down".into()))
        }
        async fn ping(&self) -> Result<(), StoreError> {
            Err(StoreError::Unavailable("database is down".into()))
        }
    }

    let (writer, task) = spawn_writer(Arc::new(Down), config(4));
    for i in 0..10 {
        writer.record(event(&team(), i));
    }
    let started = std::time::Instant::now();
    let outcome = within("shutdown", task.shutdown(Duration::from_millis(200))).await;
    match outcome {
        Err(WriterError::DeadlineExceeded { unwritten, stats }) => {
            assert_eq!(unwritten, 10);
            assert_eq!(stats.written, 0);
            assert!(stats.write_errors >= 1, "{stats:?}");
        }
        other => panic!("expected DeadlineExceeded, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "shutdown overran its deadline: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn rejected_events_are_set_aside_alone() {
    struct Picky {
        poison: Uuid,
        inner: Arc<MemorySink>,
    }
    #[async_trait::async_trait]
    impl ActivitySink for Picky {
        async fn write_batch(&self, events: &[ActivityEvent]) -> Result<(), StoreError> {
            if events.iter().any(|e| e.id == self.poison) {
                return Err(StoreError::Rejected("CHECK constraint failed".into()));
            }
            self.inner.write_batch(events).await
        }
        async fn ping(&self) -> Result<(), StoreError> {
            Ok(())
        }
    }

    let memory = MemorySink::new();
    let events: Vec<ActivityEvent> = (0..10).map(|i| event(&team(), i)).collect();
    let poison = events[4].id;
    let sink = Arc::new(Picky {
        poison,
        inner: memory.clone(),
    });
    let (writer, task) = spawn_writer(sink, config(64));
    let mut good: HashSet<Uuid> = events.iter().map(|e| e.id).collect();
    good.remove(&poison);
    for e in events {
        writer.record(e);
    }
    let stats = within("shutdown", task.shutdown(PATIENCE)).await.unwrap();
    assert_eq!(stats.written, 9);
    assert_eq!(stats.rejected, 1);
    assert_eq!(stats.dropped, 1);
    assert_eq!(memory.ids(), good);
    memory.log.written_once();
}

#[tokio::test]
async fn shutdown_returns_when_every_writer_is_already_gone() {
    let memory = MemorySink::new();
    let (writer, task) = spawn_writer(memory.clone(), config(16));
    writer.record(event(&team(), 0));
    drop(writer);
    let stats = within("shutdown", task.shutdown(PATIENCE)).await.unwrap();
    assert_eq!(stats.written, 1);
}

/// Fails every call with `Unavailable` while `down` is set (a database outage), and
/// publishes how many calls it has seen.
struct OutageSink {
    inner: Arc<MemorySink>,
    down: AtomicBool,
    calls: watch::Sender<usize>,
    log: CallLog,
}

impl OutageSink {
    fn new(inner: Arc<MemorySink>, down: bool) -> Arc<Self> {
        Arc::new(OutageSink {
            inner,
            down: AtomicBool::new(down),
            calls: watch::channel(0).0,
            log: CallLog::default(),
        })
    }
}

#[async_trait::async_trait]
impl ActivitySink for OutageSink {
    async fn write_batch(&self, events: &[ActivityEvent]) -> Result<(), StoreError> {
        self.calls.send_modify(|n| *n += 1);
        if self.down.load(Ordering::SeqCst) {
            self.log.push(events, false);
            return Err(StoreError::Unavailable("database is down".into()));
        }
        self.inner.write_batch(events).await?;
        self.log.push(events, true);
        Ok(())
    }
    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

fn spill_config(dir: &tempfile::TempDir) -> WriterConfig {
    WriterConfig {
        queue_capacity: 4,
        max_batch: 8,
        spill_path: Some(dir.path().join("activity-spill.ndjson")),
        ..config(8)
    }
}

#[tokio::test]
async fn outage_overflow_spills_and_is_replayed_once_the_sink_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let config = spill_config(&dir);
    let path = config.spill_path.clone().unwrap();
    let memory = MemorySink::new();
    let sink = OutageSink::new(memory.clone(), true);
    let (writer, task) = spawn_writer(sink.clone(), config);

    // The database is down: the task holds the first event and keeps retrying it.
    let mut recorded = HashSet::new();
    let first = event(&team(), 0);
    recorded.insert(first.id);
    writer.record(first);
    let mut calls = sink.calls.subscribe();
    within("a failed write", calls.wait_for(|n| *n >= 1))
        .await
        .unwrap();

    // 4 events fit in the queue; the other 96 go to the spill file, none is dropped.
    for i in 1..=100 {
        let e = event(&team(), i);
        recorded.insert(e.id);
        writer.record(e);
    }
    assert_eq!(writer.dropped(), 0);
    let spilled = std::fs::read_to_string(&path).expect("spill file written");
    assert_eq!(spilled.lines().count(), 96);

    // The database comes back: everything arrives without a shutdown forcing it.
    sink.down.store(false, Ordering::SeqCst);
    memory.wait_for_rows(101).await;

    let stats = within("shutdown", task.shutdown(PATIENCE)).await.unwrap();
    assert_eq!(stats.written, 101);
    assert_eq!(stats.spilled, 96);
    assert_eq!(stats.dropped, 0);
    assert!(stats.write_errors >= 1, "{stats:?}");
    assert_eq!(sink.log.written_once(), recorded);
    assert_eq!(memory.ids(), recorded);
    assert!(!path.exists(), "spill file left behind after shutdown");
}

#[tokio::test]
async fn failing_sink_and_tiny_queue_lose_nothing_and_leave_no_spill() {
    let dir = tempfile::tempdir().unwrap();
    let config = spill_config(&dir);
    let path = config.spill_path.clone().unwrap();
    let memory = MemorySink::new();
    // Fails its first 7 calls; 0, 2 and 4 land anyway (an acknowledgement lost).
    let sink = Arc::new(FlakySink {
        inner: memory.clone(),
        failures: 7,
        calls: AtomicUsize::new(0),
        log: CallLog::default(),
    });
    let (writer, task) = spawn_writer(sink.clone(), config);
    let mut recorded = HashSet::new();
    for i in 0..500 {
        let e = event(&team(), i);
        recorded.insert(e.id);
        writer.record(e);
        if i % 50 == 0 {
            tokio::task::yield_now().await;
        }
    }
    assert_eq!(writer.dropped(), 0);
    assert!(path.exists(), "the overflow went to the spill file");

    let stats = within("shutdown", task.shutdown(PATIENCE)).await.unwrap();
    assert_eq!(stats.written, 500);
    assert_eq!(stats.dropped, 0);
    assert_eq!(stats.write_errors, 7);
    assert!(stats.spilled > 0, "{stats:?}");
    assert_eq!(sink.log.written_once(), recorded);
    assert_eq!(memory.ids(), recorded);
    assert!(!path.exists(), "spill file left behind after shutdown");
}

#[tokio::test]
async fn spill_left_by_an_earlier_run_is_replayed_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = spill_config(&dir);
    let path = config.spill_path.clone().unwrap();

    // First run: the database never comes back and shutdown gives up.
    let down = OutageSink::new(MemorySink::new(), true);
    let (writer, task) = spawn_writer(down.clone(), config.clone());
    let mut recorded = HashSet::new();
    for i in 0..50 {
        let e = event(&team(), i);
        recorded.insert(e.id);
        writer.record(e);
    }
    match within("shutdown", task.shutdown(Duration::from_millis(100))).await {
        Err(WriterError::DeadlineExceeded { unwritten, stats }) => {
            assert_eq!(unwritten, 50);
            assert_eq!(stats.spilled, 46, "{stats:?}");
        }
        other => panic!("expected DeadlineExceeded, got {other:?}"),
    }
    assert!(path.exists(), "the spill must outlive a failed shutdown");

    // Second run, same path, the database is back: the spilled events arrive.
    let memory = MemorySink::new();
    let (writer, task) = spawn_writer(memory.clone(), config);
    memory.wait_for_rows(46).await;
    drop(writer);
    let stats = within("shutdown", task.shutdown(PATIENCE)).await.unwrap();
    assert_eq!(stats.recovered, 46);
    assert_eq!(stats.written, 46);
    let ids = memory.ids();
    assert_eq!(ids.len(), 46);
    assert!(ids.is_subset(&recorded));
    assert!(!path.exists());
}

#[tokio::test]
async fn full_spill_counts_drops() {
    let dir = tempfile::tempdir().unwrap();
    let (sink, memory, mut entered) = gated();
    let config = WriterConfig {
        queue_capacity: 1,
        max_batch: 1,
        // Room for about three lines.
        spill_max_bytes: 1_000,
        ..spill_config(&dir)
    };
    let path = config.spill_path.clone().unwrap();
    let (writer, task) = spawn_writer(sink.clone(), config);
    writer.record(event(&team(), 0));
    assert_eq!(within("first write", entered.recv()).await, Some(1));
    for i in 1..=20 {
        writer.record(event(&team(), i));
    }
    let dropped = writer.dropped();
    assert!(dropped > 0, "a full spill must drop");
    assert!(std::fs::metadata(&path).unwrap().len() <= 1_000);

    sink.gate.add_permits(1_000);
    let stats = within("shutdown", task.shutdown(PATIENCE)).await.unwrap();
    assert_eq!(stats.dropped, dropped);
    assert_eq!(stats.written + stats.dropped, 21, "{stats:?}");
    assert_eq!(stats.spilled, 21 - 2 - dropped, "{stats:?}");
    assert_eq!(memory.ids().len() as u64, stats.written);
    assert!(!path.exists());
}

/// A process killed with events still in memory (the queue, a batch being written):
/// with the journal, the next writer on the same path writes every one of them, once.
#[test]
fn a_killed_writer_loses_nothing_it_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let config = WriterConfig {
        journal: true,
        queue_capacity: 1_000,
        ..spill_config(&dir)
    };
    let mut recorded = HashSet::new();
    {
        // The "process": a runtime whose database never answers, dropped mid-write.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (sink, _memory, mut entered) = gated();
            let (writer, task) = spawn_writer(sink, config.clone());
            for i in 0..300 {
                let e = event(&team(), i);
                recorded.insert(e.id);
                writer.record(e);
            }
            // A batch is being written (and never finishes): the kill comes now.
            within("a batch in flight", entered.recv()).await.unwrap();
            std::mem::forget(task);
            std::mem::forget(writer);
        });
        drop(rt);
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let memory = MemorySink::new();
        let (writer, task) = spawn_writer(memory.clone(), config);
        memory.wait_for_rows(300).await;
        drop(writer);
        let stats = within("shutdown", task.shutdown(PATIENCE)).await.unwrap();
        assert_eq!(stats.recovered, 300, "{stats:?}");
        assert_eq!(memory.ids(), recorded, "every accepted event, once");
    });
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(
        left.is_empty(),
        "nothing left behind after a clean shutdown: {left:?}"
    );
}
