//! `recovery`: publishing goes on while every client loses its connection, either
//! because the node drains (SIGTERM to `--sigterm-pid`, or the operator's hand) or
//! because the connection is cut (`--cut`). Each client reconnects (to the next
//! `--url`) and rejoins with `since` from `Client::position`, and must end up with
//! every offset of its team exactly once.
//!
//! This scenario uses the high-level `Client` on purpose: `Client::position` is the
//! piece under test. Publishers publish with `echo`, so every client, publishers
//! included, must see every offset.
//!
//! A client's view is split into segments by epoch: when it rejoins a team whose epoch
//! changed (a restarted node, another node without shared history), the contract says
//! it cannot recover (`recovered: false`), and the messages it missed are counted
//! as lost while the new epoch is accounted on its own.
//!
//! `chaos` is the same clients over several nodes for longer, with the faults made by
//! a script (`loadtest/chaos.sh`), not by the generator. There a `recovered: false` is
//! an answer the contract allows: the gap before it is "told", not lost, and what the
//! run checks is that nothing goes missing *silently*. With
//! `--activity-database-url` it also counts the run's activity rows: every publish
//! that was acknowledged must be in the log exactly once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use teamhub_client::protocol::{MessageFrame, Since};
use teamhub_client::{Client, ClientOptions, ConnectOptions, Event, JoinOptions};
use tokio::sync::{Mutex as AsyncMutex, watch};
use tokio::task::JoinSet;

use crate::accounting::{Sequence, Tally};
use crate::cli::{ChaosArgs, RecoveryArgs, ServerKind};
use crate::engine::{Accounting, Live, LoadConfig};
use crate::latency::Latency;
use crate::payload::{Payload, now_us, padding};
use crate::plan::SocketSpec;
use crate::report::{Check, ClientOutcome, Report};

use super::RunCtx;

/// A stretch of one epoch a client followed. A closed one ended with a
/// `recovered: false` (chaos): it is accounted up to where the client stood.
#[derive(Debug)]
struct Segment {
    epoch: String,
    seq: Sequence,
    closed: bool,
}

/// What one client saw, per epoch.
#[derive(Debug, Default)]
struct ClientView {
    index: usize,
    publisher: Option<u32>,
    /// Sequence numbers of this client's publishes that were acknowledged.
    acked: Vec<u64>,
    /// Publishes attempted (the next one's sequence number is this plus one).
    attempts: u64,
    segments: Vec<Segment>,
    reconnects: u64,
    recovered: u64,
    unrecovered: u64,
    sent: u64,
    publish_errors: u64,
    gave_up: Option<String>,
    /// Rejoins where `Client::position` differed from what this client consumed.
    position_mismatches: u64,
}

impl ClientView {
    fn segment(&mut self, epoch: &str) -> &mut Sequence {
        if self
            .segments
            .last()
            .is_none_or(|s| s.epoch != epoch || s.closed)
        {
            self.segments.push(Segment {
                epoch: epoch.to_owned(),
                seq: Sequence::new(0),
                closed: false,
            });
        }
        &mut self.segments.last_mut().expect("just pushed").seq
    }

    /// A `recovered: false` that the contract allows: the current segment ends here,
    /// and the client goes on from `offset` of `epoch`.
    fn told(&mut self, epoch: &str, offset: u64) {
        if let Some(last) = self.segments.last_mut() {
            last.closed = true;
        }
        *self.segment(epoch) = Sequence::new(offset);
    }
}

/// The parameters shared by `recovery` and `chaos`.
struct Params {
    sockets: usize,
    teams: usize,
    publishers: usize,
    rate: f64,
    duration: std::time::Duration,
    drain: std::time::Duration,
    reconnect_timeout: std::time::Duration,
    msg_type: String,
    disrupt_after: std::time::Duration,
    sigterm_pid: Option<u32>,
    cut: bool,
    /// Chaos: a `recovered: false` accounts for the gap before it.
    told_gaps: bool,
}

/// What a run of the clients left behind.
struct Outcome {
    report: Report,
    views: Vec<(usize, ClientView)>,
    high: BTreeMap<(usize, String), u64>,
    disruption: String,
    /// Team names by index, as the clients joined them.
    teams: Vec<String>,
}

struct Shared {
    cfg: LoadConfig,
    urls: Vec<String>,
    live: Arc<Live>,
    latency: std::sync::Mutex<Latency>,
    go: watch::Receiver<bool>,
    /// Set when the disruption is due (`--cut`): clients drop their connection.
    cut: watch::Receiver<bool>,
    stop: tokio_util::sync::CancellationToken,
    per_publisher_rate: f64,
    reconnect_timeout: Duration,
    told_gaps: bool,
    pad: String,
    /// The highest offset anyone saw, per (team, epoch).
    high: AsyncMutex<BTreeMap<(usize, String), u64>>,
}

pub async fn run(ctx: &RunCtx, args: &RecoveryArgs) -> anyhow::Result<Report> {
    let params = Params {
        sockets: args.sockets,
        teams: args.teams,
        publishers: args.publishers,
        rate: args.rate,
        duration: args.duration,
        drain: args.drain,
        reconnect_timeout: args.reconnect_timeout,
        msg_type: args.msg_type.clone(),
        disrupt_after: args.disrupt_after,
        sigterm_pid: args.sigterm_pid,
        cut: args.cut,
        told_gaps: false,
    };
    let Outcome {
        mut report,
        views,
        high,
        disruption,
        ..
    } = exercise(ctx, &params, "recovery").await?;
    let mut tally = Tally::default();
    let (mut reconnects, mut recovered, mut unrecovered) = (0, 0, 0);
    let mut gave_up = Vec::new();
    let mut mismatches = 0;
    for (team, v) in &views {
        for s in &v.segments {
            let end = high.get(&(*team, s.epoch.clone())).copied().unwrap_or(0);
            tally.add(&s.seq.finish(end.max(s.seq.start()), &[]));
        }
        reconnects += v.reconnects;
        recovered += v.recovered;
        unrecovered += v.unrecovered;
        mismatches += v.position_mismatches;
        if let Some(e) = &v.gave_up {
            gave_up.push(e.clone());
        }
    }
    report.deliveries = tally;
    report.deliveries_per_s = tally.received as f64 / report.publish_secs.max(1e-9);
    report.checks.push(Check {
        name: "disruption".into(),
        ok: reconnects > 0,
        detail: format!("{disruption}; {reconnects} reconnects"),
    });
    report.checks.push(Check {
        name: "recovered".into(),
        ok: unrecovered == 0 && gave_up.is_empty(),
        detail: format!(
            "{recovered} rejoins recovered, {unrecovered} not (epoch changed or history gone), {} clients gave up{}",
            gave_up.len(),
            gave_up.first().map(|e| format!(" (first: {e})")).unwrap_or_default()
        ),
    });
    mismatch_note(&mut report, mismatches);
    report.checks.push(Check {
        name: "exactly once".into(),
        ok: tally.is_exact() && tally.expected > 0,
        detail: format!(
            "{} of {} offsets delivered, {} lost, {} duplicated, {} out of order",
            tally.received, tally.expected, tally.lost, tally.duplicates, tally.out_of_order
        ),
    });
    Ok(report)
}

fn mismatch_note(report: &mut Report, mismatches: u64) {
    if mismatches > 0 {
        report.notes.push(format!(
            "{mismatches} rejoins: Client::position was not the last offset this client consumed (it counts a message when read from the socket, before the event is handed over); rejoined from the consumed offset"
        ));
    }
}

/// Steady traffic while something outside breaks the nodes: per client, every offset
/// or a `recovered: false`, nothing missing silently; and, with a database URL, every
/// acknowledged publish in the activity log exactly once.
pub async fn chaos(ctx: &RunCtx, args: &ChaosArgs) -> anyhow::Result<Report> {
    let params = Params {
        sockets: args.sockets,
        teams: args.teams,
        publishers: args.publishers,
        rate: args.rate,
        duration: args.duration,
        drain: args.drain,
        reconnect_timeout: args.reconnect_timeout,
        msg_type: args.msg_type.clone(),
        disrupt_after: args.duration,
        sigterm_pid: None,
        cut: false,
        told_gaps: true,
    };
    let Outcome {
        mut report,
        views,
        high,
        teams,
        ..
    } = exercise(ctx, &params, "chaos").await?;
    let mut tally = Tally::default();
    let mut mismatches = 0;
    for (team, v) in &views {
        let mut own = Tally::default();
        for s in &v.segments {
            // A closed segment ended with a `recovered: false`: the client was told.
            let end = if s.closed {
                s.seq.high()
            } else {
                high.get(&(*team, s.epoch.clone())).copied().unwrap_or(0)
            };
            own.add(&s.seq.finish(end.max(s.seq.start()), &[]));
        }
        tally.add(&own);
        mismatches += v.position_mismatches;
        report.clients.push(ClientOutcome {
            client: v.index,
            team: teams[*team].clone(),
            reconnects: v.reconnects,
            recovered: v.recovered,
            told_unrecovered: v.unrecovered,
            received: own.received,
            lost: own.lost,
            duplicates: own.duplicates,
            gave_up: v.gave_up.clone(),
        });
    }
    report.deliveries = tally;
    report.deliveries_per_s = tally.received as f64 / report.publish_secs.max(1e-9);
    report.publish_errors_expected = true;
    let count = |f: fn(&ClientOutcome) -> bool| report.clients.iter().filter(|c| f(c)).count();
    let every = count(|c| c.clean() && c.told_unrecovered == 0);
    let told = count(|c| c.clean() && c.told_unrecovered > 0);
    let bad = report.clients.len() - every - told;
    let reconnects: u64 = report.clients.iter().map(|c| c.reconnects).sum();
    report.checks.push(Check {
        name: "faults seen".into(),
        ok: reconnects > 0,
        detail: format!(
            "{reconnects} reconnects over {} clients",
            report.clients.len()
        ),
    });
    report.checks.push(Check {
        name: "nothing missing silently".into(),
        ok: bad == 0 && tally.expected > 0,
        detail: format!(
            "{every} clients got every offset, {told} were told recovered: false (and missed nothing else), {bad} lost or duplicated offsets or gave up; {} of {} offsets delivered, {} lost, {} duplicated",
            tally.received, tally.expected, tally.lost, tally.duplicates
        ),
    });
    mismatch_note(&mut report, mismatches);
    if let Some(url) = &args.activity_database_url {
        let acked: Vec<(u32, u64)> = views
            .iter()
            .filter_map(|(_, v)| v.publisher.map(|p| (p, v)))
            .flat_map(|(p, v)| v.acked.iter().map(move |s| (p, *s)))
            .collect();
        report.checks.push(
            activity_check(
                url,
                &ctx.run_id,
                &args.msg_type,
                &acked,
                args.activity_settle,
            )
            .await,
        );
    }
    Ok(report)
}

/// Counts the run's message rows in the activity log, waiting (up to `settle`) for the
/// writers to catch up, and compares them with the acknowledged publishes.
async fn activity_check(
    url: &str,
    run_id: &str,
    msg_type: &str,
    acked: &[(u32, u64)],
    settle: Duration,
) -> Check {
    let name = "activity exactly once".to_owned();
    let counted = async {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect(url)
            .await?;
        let deadline = Instant::now() + settle;
        let mut last = None;
        loop {
            let rows: Vec<(i64, i64, i64)> = sqlx::query_as(
                "SELECT (metadata->>'p')::bigint, (metadata->>'s')::bigint, count(*)                  FROM activity_logs WHERE team_id LIKE $1 AND action = $2 GROUP BY 1, 2",
            )
            .bind(format!("{run_id}-t%"))
            .bind(msg_type)
            .fetch_all(&pool)
            .await?;
            let total: i64 = rows.iter().map(|r| r.2).sum();
            // Settled: every acknowledged publish has arrived, or nothing changed for
            // a second while the deadline allows more.
            let settled = total as usize >= acked.len() && last == Some(total);
            if settled || Instant::now() >= deadline {
                return Ok::<_, sqlx::Error>(rows);
            }
            last = Some(total);
            tokio::time::sleep(Duration::from_millis(1000)).await;
        }
    };
    let rows = match counted.await {
        Ok(rows) => rows,
        Err(e) => {
            return Check {
                name,
                ok: false,
                detail: format!("could not count the activity rows: {e}"),
            };
        }
    };
    let counts: BTreeMap<(u32, u64), i64> = rows
        .iter()
        .map(|&(p, s, n)| ((p as u32, s as u64), n))
        .collect();
    let lost = acked.iter().filter(|k| !counts.contains_key(k)).count();
    let doubled = counts.values().filter(|&&n| n > 1).count();
    let acked_set: std::collections::BTreeSet<_> = acked.iter().collect();
    let unacked = counts.keys().filter(|k| !acked_set.contains(k)).count();
    Check {
        name,
        ok: lost == 0 && doubled == 0 && !acked.is_empty(),
        detail: format!(
            "{} acknowledged publishes: {} in the log once, {lost} missing, {doubled} written more than once; {unacked} rows of publishes whose reply was lost (a node died between applying and answering)",
            acked.len(),
            acked.len() - lost,
        ),
    }
}

async fn exercise(ctx: &RunCtx, args: &Params, scenario: &str) -> anyhow::Result<Outcome> {
    if ctx.common.server_kind != ServerKind::Teamhub {
        bail!("{scenario} needs the hub: the baselines have no offsets or history");
    }
    if ctx.common.processes > 1 || ctx.common.child.is_some() {
        bail!("{scenario} runs in one process; drop --processes");
    }
    let plan = ctx.plan(args.sockets, args.teams, args.publishers)?;
    let load = crate::cli::LoadArgs {
        sockets: args.sockets,
        teams: args.teams,
        publishers: args.publishers,
        rate: args.rate,
        duration: args.duration,
        drain: args.drain,
        payload_bytes: 16,
        msg_type: args.msg_type.clone(),
    };
    let mut cfg = ctx.config(&load, ctx.run_id.clone());
    cfg.accounting = Accounting::Offsets;
    let (go_tx, go) = watch::channel(false);
    let (cut_tx, cut) = watch::channel(false);
    let live = Arc::new(Live::default());
    let shared = Arc::new(Shared {
        pad: padding(16),
        cfg,
        urls: ctx.common.urls.clone(),
        live: live.clone(),
        latency: std::sync::Mutex::new(Latency::new()),
        go,
        cut,
        stop: tokio_util::sync::CancellationToken::new(),
        per_publisher_rate: args.rate / plan.total_publishers.max(1) as f64,
        reconnect_timeout: args.reconnect_timeout,
        told_gaps: args.told_gaps,
        high: AsyncMutex::new(BTreeMap::new()),
    });
    let progress = ctx.progress(plan.sockets.len(), &live);
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut tasks = JoinSet::new();
    for spec in plan.sockets.clone() {
        let sh = shared.clone();
        let ready = ready_tx.clone();
        tasks.spawn(async move {
            let team = spec.team;
            (team, client_task(spec, sh, ready).await)
        });
    }
    drop(ready_tx);
    let mut failed = Vec::new();
    for _ in 0..plan.sockets.len() {
        match ready_rx.recv().await {
            Some(Ok(())) => {}
            Some(Err(e)) => failed.push(e),
            None => break,
        }
    }
    let start = Instant::now();
    let _ = go_tx.send(true);
    if args.told_gaps {
        // The chaos script starts its fault timeline on this line.
        eprintln!("chaos: publishing started");
    }
    let mut disruption = format!(
        "none by the generator: disrupt the node by hand within {:?}",
        args.duration
    );
    tokio::time::sleep(args.disrupt_after.min(args.duration)).await;
    if let Some(pid) = args.sigterm_pid {
        let status = tokio::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await;
        disruption = format!(
            "SIGTERM to {pid} after {:?}: {status:?}",
            args.disrupt_after
        );
    } else if args.cut {
        let _ = cut_tx.send(true);
        disruption = format!("every connection cut after {:?}", args.disrupt_after);
    }
    // Publishing ends at `duration`; then give deliveries the drain period.
    tokio::time::sleep((start + args.duration).saturating_duration_since(Instant::now())).await;
    let publish_secs = start.elapsed().as_secs_f64();
    tokio::time::sleep(args.drain).await;
    shared.stop.cancel();
    let mut views = Vec::new();
    while let Some(r) = tasks.join_next().await {
        if let Ok(v) = r {
            views.push(v);
        }
    }
    drop(progress);

    let high = shared.high.lock().await.clone();
    let (mut sent, mut errors) = (0, 0);
    for (_, v) in &views {
        sent += v.sent;
        errors += v.publish_errors;
    }
    let mut report = ctx.report(scenario);
    report.teams = args.teams;
    report.publishers_per_team = args.publishers;
    report.target_rate_msgs_per_s = args.rate;
    report.duration_s = args.duration.as_secs_f64();
    report.sockets_planned = plan.sockets.len();
    report.sockets_failed = failed.len();
    report.sockets_connected = plan.sockets.len() - failed.len();
    report.setup_errors = failed.into_iter().take(5).collect();
    report.sent = sent;
    report.acked = sent;
    report.publish_errors = errors;
    report.publish_secs = publish_secs;
    report.latency_us = (&*shared.latency.lock().unwrap()).into();
    Ok(Outcome {
        report,
        views,
        high,
        disruption,
        teams: (0..args.teams).map(|t| shared.cfg.team_name(t)).collect(),
    })
}

/// Connects (trying each URL in turn from `first`) and joins, until `deadline`.
async fn connect_join(
    sh: &Shared,
    spec: &SocketSpec,
    first: usize,
    since: Option<Since>,
    deadline: Instant,
) -> Result<(Client, teamhub_client::protocol::JoinReply, usize), String> {
    let team = sh.cfg.team_name(spec.team);
    let token = sh
        .cfg
        .token(spec.index, spec.team)
        .map_err(|e| format!("{e:#}"))?;
    let mut attempt = 0usize;
    loop {
        let at = (first + attempt) % sh.urls.len();
        let mut opts = ConnectOptions::new(sh.urls[at].clone()).token(token.clone());
        if let Some(b) = spec.bind {
            opts = opts.bind_addr(b);
        }
        let options = ClientOptions {
            request_timeout: Duration::from_secs(5),
            events_capacity: 4096,
        };
        let tried = async {
            let client = Client::connect_with(opts, options).await?;
            let reply = client
                .join(
                    &team,
                    JoinOptions {
                        since: since.clone(),
                        meta: None,
                    },
                )
                .await?;
            Ok::<_, teamhub_client::ClientError>((client, reply))
        };
        match tried.await {
            Ok((client, reply)) => return Ok((client, reply, at)),
            Err(e) if Instant::now() >= deadline => return Err(e.to_string()),
            Err(_) => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn client_task(
    spec: SocketSpec,
    sh: Arc<Shared>,
    ready: tokio::sync::mpsc::UnboundedSender<Result<(), String>>,
) -> ClientView {
    let mut view = ClientView {
        index: spec.index,
        publisher: spec.publisher,
        ..ClientView::default()
    };
    let deadline = Instant::now() + sh.cfg.connect_timeout;
    let first_url = spec.index % sh.urls.len();
    let (mut client, reply, mut url) =
        match connect_join(&sh, &spec, first_url, None, deadline).await {
            Ok(ok) => ok,
            Err(e) => {
                let _ = ready.send(Err(e));
                return view;
            }
        };
    *view.segment(&reply.epoch) = Sequence::new(reply.offset);
    let mut epoch = reply.epoch;
    let mut events = client.events();
    let _ = ready.send(Ok(()));
    crate::engine::bump(&sh.live.connected, 1);

    let team = sh.cfg.team_name(spec.team);
    let rate = sh.per_publisher_rate;
    let publishing = spec.publisher.is_some() && rate > 0.0;
    let mut go = sh.go.clone();
    let mut cut = sh.cut.clone();
    let _ = go.wait_for(|g| *g).await;
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(0.1)));
    loop {
        let reconnect = tokio::select! {
            biased;
            _ = sh.stop.cancelled() => break,
            changed = cut.changed() => {
                // The network cut: no close handshake, just gone. (An error means the
                // run is over and the sender gone: nothing to cut.)
                changed.is_ok() && *cut.borrow_and_update()
            }
            _ = tick.tick(), if publishing && start.elapsed() < sh.cfg.duration => {
                // Every attempt gets its own number, so a publish that was applied but
                // whose reply was lost is not mistaken for the next one's.
                view.attempts += 1;
                let p = Payload { sent_us: now_us(), publisher: spec.publisher.unwrap_or_default(), seq: view.attempts };
                let data: serde_json::Value = serde_json::from_str(&p.encode(&sh.pad)).unwrap_or_default();
                match client.publish(&team, &sh.cfg.msg_type, &data, true).await {
                    Ok(_) => {
                        view.sent += 1;
                        view.acked.push(p.seq);
                        crate::engine::bump(&sh.live.sent, 1);
                    }
                    Err(_) => view.publish_errors += 1,
                }
                false
            }
            ev = events.recv() => match ev {
                Some(Event::Message(m)) => {
                    observe(&sh, &mut view, &epoch, spec.team, &m).await;
                    false
                }
                Some(Event::Closed { .. }) | None => true,
                Some(_) => false,
            },
        };
        if !reconnect {
            continue;
        }
        // Where this client left off, from the client itself. `Client::position`
        // counts a message when the client task reads it, before the event reaches
        // us; on a cut (dropping the client) the event it was handing over can be
        // lost while the position already counts it. So: drop, take what is still
        // buffered, and rejoin from what this client actually consumed, noting
        // every time the library's position disagreed.
        let position = client.position(&team);
        drop(client);
        while let Ok(ev) = events.try_recv() {
            if let Event::Message(m) = ev {
                observe(&sh, &mut view, &epoch, spec.team, &m).await;
            }
        }
        let consumed = view.segment(&epoch).high();
        let since = position.map(|p| {
            if p.offset != consumed {
                view.position_mismatches += 1;
            }
            Since {
                epoch: p.epoch,
                offset: consumed,
            }
        });
        crate::engine::bump(&sh.live.closed, 1);
        view.reconnects += 1;
        let deadline = Instant::now() + sh.reconnect_timeout;
        let next_url = (url + 1) % sh.urls.len();
        match connect_join(&sh, &spec, next_url, since.clone(), deadline).await {
            Ok((c, reply, at)) => {
                url = at;
                if reply.recovered {
                    view.recovered += 1;
                    for m in &reply.missed {
                        observe(&sh, &mut view, &epoch, spec.team, m).await;
                    }
                } else {
                    view.unrecovered += 1;
                    if sh.told_gaps {
                        // Chaos: the client was told; it goes on from the reply.
                        epoch = reply.epoch.clone();
                        view.told(&epoch, reply.offset);
                    } else if reply.epoch != epoch {
                        // Same epoch but history gone: the jump shows up as a gap
                        // (lost). A new epoch is a new sequence from its join offset.
                        epoch = reply.epoch.clone();
                        *view.segment(&epoch) = Sequence::new(reply.offset);
                    }
                }
                client = c;
                events = client.events();
            }
            Err(e) => {
                view.gave_up = Some(e);
                break;
            }
        }
    }
    view
}

async fn observe(sh: &Shared, view: &mut ClientView, epoch: &str, team: usize, m: &MessageFrame) {
    if let Some(p) = Payload::from_value(&m.data) {
        sh.latency
            .lock()
            .unwrap()
            .record(now_us().saturating_sub(p.sent_us));
    }
    if view.segment(epoch).observe(m.offset).is_new() {
        crate::engine::bump(&sh.live.received, 1);
    }
    let mut high = sh.high.lock().await;
    let h = high.entry((team, epoch.to_owned())).or_default();
    *h = (*h).max(m.offset);
}
