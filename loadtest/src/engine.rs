//! The load engine: a socket per task, a coordinator that starts, paces and settles.
//!
//! Phases, each a method of [`LoadRun`] so a caller can act between them (sample server
//! RSS, wait for a parent process's go):
//! 1. [`LoadRun::setup`]: every socket connects and joins its team (at most
//!    `connect_concurrency` at a time); returns when all did or failed.
//! 2. [`LoadRun::drive`]: publishers publish at their share of the aggregate rate for
//!    the duration, then the coordinator waits until every expected delivery arrived
//!    or the drain period ran out.
//! 3. [`LoadRun::finish`]: sockets close and hand back what they saw; the accounting
//!    settles it against what was published.
//!
//! Sockets never wait for each other or for the coordinator while receiving: each task
//! owns its `Socket` outright and only touches shared state through atomics and two
//! uncontended mutexes (the histograms).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use teamhub_client::protocol::Role;
use teamhub_client::{claims_for, mint_hs256};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::accounting::{Sequence, Tally};
use crate::latency::Latency;
use crate::payload::{Payload, now_us, padding};
use crate::plan::{Plan, SocketSpec};
use crate::transport::{Dial, Inbound, Socket, Wire};

/// How deliveries are numbered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accounting {
    /// The hub's per-team offsets: every receiver must see every offset after its join
    /// (except its own publishes) exactly once, in order.
    Offsets,
    /// Each publisher's payload sequence numbers, for servers without offsets.
    Payload,
}

/// What every socket of a run shares.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    pub wire: Wire,
    pub accounting: Accounting,
    /// Team names are `{prefix}-t{index}`; a fresh prefix per run keeps runs apart.
    pub team_prefix: String,
    pub msg_type: String,
    pub payload_bytes: usize,
    /// Messages per second over all publishers of the whole run (all processes).
    pub rate: f64,
    /// How long publishers publish (or, without publishers, how long sockets idle).
    pub duration: Duration,
    /// Longest wait for in-flight deliveries after the last publish.
    pub drain: Duration,
    pub jwt_secret: Option<String>,
    pub connect_concurrency: usize,
    /// Longest wait for one socket's connect and join.
    pub connect_timeout: Duration,
}

impl LoadConfig {
    pub fn team_name(&self, team: usize) -> String {
        format!("{}-t{team}", self.team_prefix)
    }

    /// A token for socket `index` with the editor role in its team. The relay and
    /// Socket.IO baselines accept anything, so a placeholder does without a secret.
    pub fn token(&self, index: usize, team: usize) -> anyhow::Result<String> {
        self.token_for(&format!("lt-{index}"), team)
    }

    /// A token for any user id with the editor role in `team`.
    pub fn token_for(&self, user: &str, team: usize) -> anyhow::Result<String> {
        let Some(secret) = &self.jwt_secret else {
            if self.wire == Wire::SocketIo || self.accounting == Accounting::Payload {
                return Ok("no-auth".into());
            }
            bail!("--jwt-secret is required to mint tokens for teamhub");
        };
        let team = self.team_name(team);
        let claims = claims_for(
            user,
            &[(team.as_str(), Role::Editor)],
            self.duration + self.drain + Duration::from_secs(3600),
        )?;
        Ok(mint_hs256(&claims, secret.as_bytes())?)
    }
}

/// Counters the progress display reads while the run goes on.
#[derive(Debug, Default)]
pub struct Live {
    pub connected: AtomicU64,
    pub failed: AtomicU64,
    pub sent: AtomicU64,
    pub received: AtomicU64,
    pub errors: AtomicU64,
    pub closed: AtomicU64,
}

impl Live {
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// Adds to a progress counter.
pub fn bump(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// What a socket reports once connected and joined.
#[derive(Debug)]
struct Ready {
    team: usize,
    join_offset: u64,
    publisher: Option<u32>,
}

/// What a publisher reports when it has stopped publishing and has all its answers.
#[derive(Debug)]
struct PublisherDone {
    team: usize,
    /// Highest offset acknowledged (hub) and number of acknowledged publishes.
    max_offset: u64,
    acked: u64,
    /// Messages sent (the last payload sequence number).
    sent: u64,
}

struct Shared {
    cfg: LoadConfig,
    live: Arc<Live>,
    latency: Mutex<Latency>,
    connect: Mutex<Latency>,
    gate: Semaphore,
    /// Set once: when publishing starts.
    go: watch::Receiver<Option<Instant>>,
    stop: CancellationToken,
    ready: mpsc::UnboundedSender<Result<Ready, String>>,
    done: mpsc::UnboundedSender<PublisherDone>,
    pad: String,
    per_publisher_rate: f64,
}

/// What a socket hands back at the end.
#[derive(Debug)]
struct SocketResult {
    team: usize,
    publisher: Option<u32>,
    joined: Option<Joined>,
}

#[derive(Debug, Default)]
struct Joined {
    /// Offsets mode: one stream (key 0). Payload mode: one per publisher heard.
    streams: Vec<(u32, Sequence)>,
    join_offset: u64,
    own_offsets: Vec<u64>,
    sent: u64,
    acked: u64,
    publish_errors: u64,
    /// The server closed the connection before the end (code, reason).
    closed: Option<(Option<u16>, String)>,
}

/// Everything a run measured in this process.
#[derive(Debug, Clone, Default)]
pub struct LoadResult {
    pub planned: usize,
    pub connected: usize,
    pub failed: usize,
    /// The first few connect/join errors, verbatim.
    pub setup_errors: Vec<String>,
    pub tally: Tally,
    pub latency: Latency,
    pub connect: Latency,
    pub sent: u64,
    pub acked: u64,
    pub publish_errors: u64,
    /// Connections the server closed during the run, by close code.
    pub closes: BTreeMap<String, u64>,
    /// From go to the last publish.
    pub publish_secs: f64,
    /// From go to the end of the drain.
    pub measured_secs: f64,
}

/// A run in progress; see the module docs for the phases.
pub struct LoadRun {
    shared: Arc<Shared>,
    tasks: JoinSet<SocketResult>,
    go_tx: watch::Sender<Option<Instant>>,
    done_rx: mpsc::UnboundedReceiver<PublisherDone>,
    members: Vec<Vec<(u64, Option<u32>)>>,
    result: LoadResult,
    started: Option<Instant>,
    published_until: Option<Instant>,
    ended: Option<Instant>,
}

impl LoadRun {
    /// Spawns a task per socket and waits until each has joined or failed.
    pub async fn setup(plan: &Plan, cfg: LoadConfig, live: Arc<Live>) -> anyhow::Result<LoadRun> {
        let (go_tx, go) = watch::channel(None);
        let (ready, mut ready_rx) = mpsc::unbounded_channel();
        let (done, done_rx) = mpsc::unbounded_channel();
        let per_publisher_rate = if plan.total_publishers == 0 {
            0.0
        } else {
            cfg.rate / plan.total_publishers as f64
        };
        let shared = Arc::new(Shared {
            pad: padding(cfg.payload_bytes),
            gate: Semaphore::new(cfg.connect_concurrency.max(1)),
            cfg,
            live,
            latency: Mutex::new(Latency::new()),
            connect: Mutex::new(Latency::new()),
            go,
            stop: CancellationToken::new(),
            ready,
            done,
            per_publisher_rate,
        });
        let mut tasks = JoinSet::new();
        for spec in &plan.sockets {
            tasks.spawn(socket_task(spec.clone(), shared.clone()));
        }
        let mut members = vec![Vec::new(); plan.teams];
        let mut result = LoadResult {
            planned: plan.sockets.len(),
            ..LoadResult::default()
        };
        for _ in 0..plan.sockets.len() {
            match ready_rx.recv().await {
                Some(Ok(r)) => {
                    members[r.team].push((r.join_offset, r.publisher));
                    result.connected += 1;
                }
                Some(Err(e)) => {
                    result.failed += 1;
                    if result.setup_errors.len() < 5 {
                        result.setup_errors.push(e);
                    }
                }
                None => break,
            }
        }
        Ok(LoadRun {
            shared,
            tasks,
            go_tx,
            done_rx,
            members,
            result,
            started: None,
            published_until: None,
            ended: None,
        })
    }

    pub fn connected(&self) -> usize {
        self.result.connected
    }

    pub fn failed(&self) -> usize {
        self.result.failed
    }

    /// Publishes for the configured duration and waits for the deliveries to land (or
    /// the drain period to pass). Without publishers it just holds the sockets open.
    pub async fn drive(&mut self) {
        let cfg = &self.shared.cfg;
        let start = Instant::now();
        self.started = Some(start);
        let _ = self.go_tx.send(Some(start));
        let publishers: usize = self
            .members
            .iter()
            .flatten()
            .filter(|(_, p)| p.is_some())
            .count();
        if publishers == 0 || cfg.rate <= 0.0 {
            tokio::select! {
                _ = tokio::time::sleep(cfg.duration) => {}
                _ = self.shared.stop.cancelled() => {}
            }
            let now = Instant::now();
            self.published_until = Some(now);
            self.ended = Some(now);
            return;
        }
        // Publishers report when done; a stuck one is given up on after a margin.
        let mut finals: Vec<Option<(u64, u64)>> = vec![None; self.members.len()];
        let mut sent_by_team = vec![0u64; self.members.len()];
        let deadline = start + cfg.duration + cfg.drain + Duration::from_secs(10);
        let mut reported = 0;
        while reported < publishers {
            match tokio::time::timeout_at(deadline.into(), self.done_rx.recv()).await {
                Ok(Some(d)) => {
                    reported += 1;
                    let f = finals[d.team].get_or_insert((0, 0));
                    f.0 = f.0.max(d.max_offset);
                    f.1 += d.acked;
                    sent_by_team[d.team] += d.sent;
                }
                _ => break,
            }
        }
        self.published_until = Some(Instant::now());
        let expected = self.expected_total(&finals, &sent_by_team);
        let drain_until = Instant::now() + cfg.drain;
        let mut poll = tokio::time::interval(Duration::from_millis(5));
        while Live::get(&self.shared.live.received) < expected && Instant::now() < drain_until {
            poll.tick().await;
        }
        self.ended = Some(Instant::now());
    }

    /// Deliveries the run should produce, to know when the drain is complete. The
    /// exact figure comes later from the sockets' own sequences; this one only decides
    /// how long to wait.
    fn expected_total(&self, finals: &[Option<(u64, u64)>], sent_by_team: &[u64]) -> u64 {
        let mut total = 0u64;
        for (team, members) in self.members.iter().enumerate() {
            match self.shared.cfg.accounting {
                Accounting::Offsets => {
                    let Some((last, acked)) = finals[team] else {
                        continue;
                    };
                    for (join, _) in members {
                        total += last.saturating_sub(*join);
                    }
                    total = total.saturating_sub(acked);
                }
                Accounting::Payload => {
                    total += sent_by_team[team] * (members.len() as u64).saturating_sub(1);
                }
            }
        }
        total
    }

    /// Closes every socket and settles the accounting.
    pub async fn finish(mut self) -> LoadResult {
        self.shared.stop.cancel();
        let mut results = Vec::with_capacity(self.result.planned);
        while let Some(r) = self.tasks.join_next().await {
            if let Ok(r) = r {
                results.push(r);
            }
        }
        let mut out = std::mem::take(&mut self.result);
        settle(&self.shared.cfg, &results, &mut out);
        out.latency = self.shared.latency.lock().unwrap().clone();
        out.connect = self.shared.connect.lock().unwrap().clone();
        if let (Some(s), Some(p), Some(e)) = (self.started, self.published_until, self.ended) {
            out.publish_secs = p.duration_since(s).as_secs_f64();
            out.measured_secs = e.duration_since(s).as_secs_f64();
        }
        out
    }

    /// Stops early (Ctrl-C, a deadline): publishers stop and `drive` returns.
    pub fn cancel_token(&self) -> CancellationToken {
        self.shared.stop.clone()
    }
}

/// Settles every socket's sequences against what was published.
fn settle(cfg: &LoadConfig, results: &[SocketResult], out: &mut LoadResult) {
    let teams = results.iter().map(|r| r.team + 1).max().unwrap_or(0);
    // Per team: last acknowledged offset (hub) and, per publisher, messages sent.
    let mut last_offset = vec![0u64; teams];
    let mut sent_by: BTreeMap<u32, (usize, u64)> = BTreeMap::new();
    for r in results {
        let Some(j) = &r.joined else { continue };
        if let Some(p) = r.publisher {
            sent_by.insert(p, (r.team, j.sent));
        }
        if let Some(&max) = j.own_offsets.iter().max() {
            last_offset[r.team] = last_offset[r.team].max(max);
        }
        out.sent += j.sent;
        out.acked += j.acked;
        out.publish_errors += j.publish_errors;
        if let Some((code, _)) = &j.closed {
            let key = code.map_or_else(|| "none".to_owned(), |c| c.to_string());
            *out.closes.entry(key).or_default() += 1;
        }
    }
    for r in results {
        let Some(j) = &r.joined else { continue };
        match cfg.accounting {
            Accounting::Offsets => {
                let end = last_offset[r.team];
                let seq = j
                    .streams
                    .first()
                    .map(|(_, s)| s.clone())
                    .unwrap_or_else(|| Sequence::new(j.join_offset));
                out.tally
                    .add(&seq.finish(end.max(seq.start()), &j.own_offsets));
            }
            Accounting::Payload => {
                for (&p, &(team, sent)) in &sent_by {
                    if team != r.team || Some(p) == r.publisher {
                        continue;
                    }
                    let seq = j
                        .streams
                        .iter()
                        .find(|(k, _)| *k == p)
                        .map(|(_, s)| s.clone())
                        .unwrap_or_else(|| Sequence::new(0));
                    out.tally.add(&seq.finish(sent, &[]));
                }
                // Streams from publishers of other teams (or itself) are all unexpected.
                for (k, s) in &j.streams {
                    let foreign = sent_by
                        .get(k)
                        .is_none_or(|&(team, _)| team != r.team || Some(*k) == r.publisher);
                    if foreign {
                        out.tally.unexpected += s.finish(0, &[]).unexpected;
                    }
                }
            }
        }
    }
}

async fn socket_task(spec: SocketSpec, sh: Arc<Shared>) -> SocketResult {
    let mut result = SocketResult {
        team: spec.team,
        publisher: spec.publisher,
        joined: None,
    };
    let team = sh.cfg.team_name(spec.team);
    let setup = async {
        let _permit = sh.gate.acquire().await.map_err(|e| e.to_string())?;
        let token = sh
            .cfg
            .token(spec.index, spec.team)
            .map_err(|e| format!("{e:#}"))?;
        let started = Instant::now();
        let dial = Dial {
            url: &spec.url,
            token: Some(token),
            bind: spec.bind,
        };
        let connect_and_join = async {
            let mut socket = Socket::connect(sh.cfg.wire, dial).await?;
            let offset = socket.join(&team).await?;
            Ok::<_, crate::transport::TransportError>((socket, offset))
        };
        let (socket, offset) = tokio::time::timeout(sh.cfg.connect_timeout, connect_and_join)
            .await
            .map_err(|_| format!("connect+join took over {:?}", sh.cfg.connect_timeout))?
            .map_err(|e| e.to_string())?;
        let us = started.elapsed().as_micros() as u64;
        sh.connect.lock().unwrap().record(us);
        Ok::<_, String>((socket, offset))
    };
    let (socket, join_offset) = tokio::select! {
        r = setup => match r {
            Ok(ok) => ok,
            Err(e) => {
                bump(&sh.live.failed, 1);
                let _ = sh.ready.send(Err(e));
                return result;
            }
        },
        _ = sh.stop.cancelled() => {
            let _ = sh.ready.send(Err("stopped before connecting".into()));
            return result;
        }
    };
    bump(&sh.live.connected, 1);
    let _ = sh.ready.send(Ok(Ready {
        team: spec.team,
        join_offset,
        publisher: spec.publisher,
    }));
    result.joined = Some(joined_loop(socket, &spec, &team, join_offset, &sh).await);
    result
}

/// A joined socket: receive until stopped, publish while it is a publisher's turn.
async fn joined_loop(
    mut socket: Socket,
    spec: &SocketSpec,
    team: &str,
    join_offset: u64,
    sh: &Shared,
) -> Joined {
    let mut j = Joined {
        join_offset,
        ..Joined::default()
    };
    if sh.cfg.accounting == Accounting::Offsets {
        j.streams.push((0, Sequence::new(join_offset)));
    }
    let rate = sh.per_publisher_rate;
    let is_publisher = spec.publisher.is_some() && rate > 0.0;
    // Tick at most every millisecond; each tick sends whatever is due, so the
    // aggregate rate holds above the timer's resolution.
    let period = Duration::from_secs_f64((1.0 / rate.max(1e-3)).clamp(0.001, 1.0));
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut go = sh.go.clone();
    let mut started: Option<Instant> = None;
    let mut publishing = false;
    let mut pending = 0u64;
    let mut done_sent = false;
    let mut open = true;
    let acks = socket.acks_publishes();
    let report_done = |j: &Joined| PublisherDone {
        team: spec.team,
        max_offset: j.own_offsets.iter().copied().max().unwrap_or(0),
        acked: j.acked,
        sent: j.sent,
    };
    loop {
        tokio::select! {
            biased;
            _ = sh.stop.cancelled() => break,
            changed = go.changed(), if started.is_none() => {
                if changed.is_err() {
                    break;
                }
                started = *go.borrow_and_update();
                publishing = is_publisher && started.is_some();
            }
            _ = ticker.tick(), if publishing && open => {
                let start = started.unwrap_or_else(Instant::now);
                let elapsed = start.elapsed();
                let until = elapsed.min(sh.cfg.duration).as_secs_f64();
                let due = (until * rate).ceil() as u64;
                while j.sent < due {
                    let payload = Payload {
                        sent_us: now_us(),
                        publisher: spec.publisher.unwrap_or_default(),
                        seq: j.sent + 1,
                    };
                    let data = payload.encode(&sh.pad);
                    match socket.publish(team, &sh.cfg.msg_type, data, false).await {
                        Ok(_) => {
                            j.sent += 1;
                            pending += u64::from(acks);
                            bump(&sh.live.sent, 1);
                        }
                        Err(e) => {
                            open = false;
                            j.closed = Some((None, e.to_string()));
                            bump(&sh.live.closed, 1);
                            break;
                        }
                    }
                }
                if elapsed >= sh.cfg.duration {
                    publishing = false;
                }
            }
            inbound = socket.recv(), if open => match inbound {
                Ok(Inbound::Message { offset, payload }) => {
                    if let Some(p) = payload {
                        let us = now_us().saturating_sub(p.sent_us);
                        sh.latency.lock().unwrap().record(us);
                    }
                    let arrival = match (sh.cfg.accounting, payload) {
                        (Accounting::Offsets, _) => j.streams[0].1.observe(offset),
                        (Accounting::Payload, Some(p)) => {
                            let i = match j.streams.iter().position(|(k, _)| *k == p.publisher) {
                                Some(i) => i,
                                None => {
                                    j.streams.push((p.publisher, Sequence::new(0)));
                                    j.streams.len() - 1
                                }
                            };
                            j.streams[i].1.observe(p.seq)
                        }
                        (Accounting::Payload, None) => continue,
                    };
                    if arrival.is_new() {
                        bump(&sh.live.received, 1);
                    }
                }
                Ok(Inbound::Ack { offset, .. }) => {
                    j.own_offsets.push(offset);
                    j.acked += 1;
                    pending = pending.saturating_sub(1);
                }
                Ok(Inbound::Refused { .. }) => {
                    j.publish_errors += 1;
                    bump(&sh.live.errors, 1);
                    pending = pending.saturating_sub(1);
                }
                Ok(Inbound::Closed { code, reason }) => {
                    open = false;
                    j.closed = Some((code, reason));
                    bump(&sh.live.closed, 1);
                }
                Err(e) => {
                    open = false;
                    j.closed = Some((None, e.to_string()));
                    bump(&sh.live.closed, 1);
                }
                Ok(Inbound::Other) => {}
            },
        }
        let finished_publishing = started.is_some() && !publishing;
        if is_publisher && !done_sent && ((finished_publishing && pending == 0) || !open) {
            done_sent = true;
            let _ = sh.done.send(report_done(&j));
        }
        if !open && (!is_publisher || done_sent) {
            // Nothing more can arrive; wait for the stop to hand back the result.
            sh.stop.cancelled().await;
            break;
        }
    }
    if is_publisher && !done_sent {
        let _ = sh.done.send(report_done(&j));
    }
    if open {
        socket.close().await;
    }
    j
}
