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

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use teamhub_client::protocol::{MessageFrame, Since};
use teamhub_client::{Client, ClientOptions, ConnectOptions, Event, JoinOptions};
use tokio::sync::{Mutex as AsyncMutex, watch};
use tokio::task::JoinSet;

use crate::accounting::{Sequence, Tally};
use crate::cli::{RecoveryArgs, ServerKind};
use crate::engine::{Accounting, Live, LoadConfig};
use crate::latency::Latency;
use crate::payload::{Payload, now_us, padding};
use crate::plan::SocketSpec;
use crate::report::{Check, Report};

use super::RunCtx;

/// What one client saw, per epoch.
#[derive(Debug, Default)]
struct ClientView {
    segments: Vec<(String, Sequence)>,
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
        if self.segments.last().is_none_or(|(e, _)| e != epoch) {
            self.segments.push((epoch.to_owned(), Sequence::new(0)));
        }
        &mut self.segments.last_mut().expect("just pushed").1
    }
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
    pad: String,
    /// The highest offset anyone saw, per (team, epoch).
    high: AsyncMutex<BTreeMap<(usize, String), u64>>,
}

pub async fn run(ctx: &RunCtx, args: &RecoveryArgs) -> anyhow::Result<Report> {
    if ctx.common.server_kind != ServerKind::Teamhub {
        bail!("recovery needs the hub: the baselines have no offsets or history");
    }
    if ctx.common.processes > 1 || ctx.common.child.is_some() {
        bail!("recovery runs in one process; drop --processes");
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
    let mut tally = Tally::default();
    let (mut reconnects, mut recovered, mut unrecovered, mut sent, mut errors) = (0, 0, 0, 0, 0);
    let mut gave_up = Vec::new();
    let mut mismatches = 0;
    for (team, v) in &views {
        for (epoch, seq) in &v.segments {
            let end = high.get(&(*team, epoch.clone())).copied().unwrap_or(0);
            tally.add(&seq.finish(end.max(seq.start()), &[]));
        }
        reconnects += v.reconnects;
        recovered += v.recovered;
        unrecovered += v.unrecovered;
        sent += v.sent;
        errors += v.publish_errors;
        mismatches += v.position_mismatches;
        if let Some(e) = &v.gave_up {
            gave_up.push(e.clone());
        }
    }
    let mut report = ctx.report("recovery");
    report.teams = args.teams;
    report.publishers_per_team = args.publishers;
    report.target_rate_msgs_per_s = args.rate;
    report.duration_s = args.duration.as_secs_f64();
    report.sockets_planned = plan.sockets.len();
    report.sockets_failed = failed.len();
    report.sockets_connected = plan.sockets.len() - failed.len();
    report.setup_errors = failed.into_iter().take(5).collect();
    report.sent = sent;
    report.publish_errors = errors;
    report.deliveries = tally;
    report.publish_secs = publish_secs;
    report.deliveries_per_s = tally.received as f64 / publish_secs.max(1e-9);
    report.latency_us = (&*shared.latency.lock().unwrap()).into();
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
    if mismatches > 0 {
        report.notes.push(format!(
            "{mismatches} rejoins: Client::position was not the last offset this client consumed (it counts a message when read from the socket, before the event is handed over); rejoined from the consumed offset"
        ));
    }
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
    let mut view = ClientView::default();
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
                let p = Payload { sent_us: now_us(), publisher: spec.publisher.unwrap_or_default(), seq: view.sent + 1 };
                let data: serde_json::Value = serde_json::from_str(&p.encode(&sh.pad)).unwrap_or_default();
                match client.publish(&team, &sh.cfg.msg_type, &data, true).await {
                    Ok(_) => {
                        view.sent += 1;
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
                    // Same epoch but history gone: the jump shows up as a gap (lost).
                    // A new epoch is a new sequence from its join offset.
                    if reply.epoch != epoch {
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
