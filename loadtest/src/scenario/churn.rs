//! `churn`: a fanout run while extra sockets keep connecting, joining and leaving
//! (half with a clean close, half by dropping the TCP connection). At the end the
//! hub's presence (REST) must list exactly the steady sockets' users, once each: no
//! churned user left behind, no steady one missing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::addrs::parse_source_addrs;
use crate::cli::{ChurnArgs, ServerKind};
use crate::engine::{Live, LoadConfig, LoadRun};
use crate::plan::Plan;
use crate::report::{Check, Report};
use crate::rest;
use crate::transport::{Dial, Socket};

use super::{RunCtx, fanout};

/// Connects made by the churn loop.
#[derive(Debug, Default)]
struct ChurnStats {
    joined: u64,
    failed: u64,
    first_error: Option<String>,
}

pub async fn run(ctx: &RunCtx, args: &ChurnArgs) -> anyhow::Result<Report> {
    if ctx.common.processes > 1 || ctx.common.child.is_some() {
        anyhow::bail!("churn runs in one process; drop --processes");
    }
    let plan = ctx.plan(args.load.sockets, args.load.teams, args.load.publishers)?;
    let cfg = ctx.config(&args.load, ctx.run_id.clone());
    let mut cp = ctx.checkpoints();
    let live = Arc::new(Live::default());
    let progress = ctx.progress(plan.sockets.len(), &live);
    let mut run = LoadRun::setup(&plan, cfg.clone(), live).await?;
    cp.loaded().await?;
    let churn = tokio::spawn(churn_loop(
        ctx.clone(),
        cfg.clone(),
        args.clone(),
        plan.teams,
    ));
    run.drive().await;
    let stats = churn.await.unwrap_or_default();
    let check = if ctx.common.server_kind == ServerKind::Teamhub {
        presence_check(ctx, &plan, &cfg, args.settle).await
    } else {
        Check {
            name: "presence".into(),
            ok: true,
            detail: "skipped: only the hub has presence".into(),
        }
    };
    cp.ended().await?;
    let result = run.finish().await;
    drop(progress);
    let mut report = ctx.report("churn");
    fanout::describe(&mut report, &args.load);
    report.absorb(&result);
    report.servers = cp.costs(result.connected, result.tally.received);
    report.checks.push(Check {
        name: "churn".into(),
        ok: stats.failed == 0 && args.churn_count.is_none_or(|count| stats.joined == count),
        detail: format!(
            "{} churning sockets joined and left, {} failed{}",
            stats.joined,
            stats.failed,
            stats
                .first_error
                .map(|e| format!(" (first: {e})"))
                .unwrap_or_default()
        ),
    });
    report.checks.push(check);
    Ok(report)
}

async fn churn_loop(ctx: RunCtx, cfg: LoadConfig, args: ChurnArgs, teams: usize) -> ChurnStats {
    let mut stats = ChurnStats::default();
    if args.churn_rate <= 0.0 {
        return stats;
    }
    let addrs = parse_source_addrs(&ctx.common.source_addrs).unwrap_or_default();
    let urls = ctx.common.urls.clone();
    let mut tick = tokio::time::interval(
        Duration::from_secs_f64(1.0 / args.churn_rate).max(Duration::from_millis(1)),
    );
    // After a wait for a free slot, carry on at the rate instead of making up for it.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    let mut k = 0usize;
    // Churners stop arriving early enough to have left before the load ends, unless
    // a count is asked for: then they arrive until there were that many.
    let arrive_until = args.load.duration.saturating_sub(args.churn_lifetime);
    let more = |k: usize| match args.churn_count {
        Some(count) => (k as u64) < count,
        None => start.elapsed() < arrive_until,
    };
    let slots = Arc::new(Semaphore::new(args.churn_concurrency.max(1)));
    while more(k) {
        tick.tick().await;
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        let team = k % teams;
        let user = format!("lt-churn-{k}");
        let url = urls[k % urls.len()].clone();
        let bind = (!addrs.is_empty()).then(|| addrs[k % addrs.len()]);
        let cfg = cfg.clone();
        let lifetime = args.churn_lifetime;
        let clean = k.is_multiple_of(2);
        tasks.spawn(async move {
            let _slot = slot;
            let token = cfg.token_for(&user, team).map_err(|e| e.to_string())?;
            let dial = Dial {
                url: &url,
                token: Some(token),
                bind,
            };
            let mut socket = bounded("connect", Box::pin(Socket::connect(cfg.wire, dial)))
                .await?
                .map_err(|e| e.to_string())?;
            bounded("join", socket.join(&cfg.team_name(team)))
                .await?
                .map_err(|e| e.to_string())?;
            // Keep reading (pings, messages) while staying.
            let _ = tokio::time::timeout(lifetime, async { while socket.recv().await.is_ok() {} })
                .await;
            if clean {
                bounded("close", socket.close()).await?;
            } else {
                drop(socket);
            }
            Ok::<_, String>(())
        });
        k += 1;
        // Reap the finished ones as we go: a long soak must not hold them all.
        while let Some(r) = tasks.try_join_next() {
            stats.count(r);
        }
    }
    while let Some(r) = tasks.join_next().await {
        stats.count(r);
    }
    stats
}

impl ChurnStats {
    fn count(&mut self, r: Result<Result<(), String>, tokio::task::JoinError>) {
        match r {
            Ok(Ok(())) => self.joined += 1,
            Ok(Err(e)) => {
                self.failed += 1;
                self.first_error.get_or_insert(e);
            }
            Err(e) => {
                self.failed += 1;
                self.first_error.get_or_insert(e.to_string());
            }
        }
    }
}

/// How long one step of a churning socket may take: a step that hangs (a lost
/// handshake, a join reply that never comes, a close the hub does not answer) is
/// counted as a failure by name instead of stalling the run.
const STEP_TIMEOUT: Duration = Duration::from_secs(20);

async fn bounded<T>(step: &str, f: impl Future<Output = T>) -> Result<T, String> {
    tokio::time::timeout(STEP_TIMEOUT, f)
        .await
        .map_err(|_| format!("{step} took longer than {STEP_TIMEOUT:?}"))
}

/// Polls REST presence until every team lists exactly its steady users (one
/// connection each), or `settle` passes.
async fn presence_check(ctx: &RunCtx, plan: &Plan, cfg: &LoadConfig, settle: Duration) -> Check {
    let mut want: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    for s in &plan.sockets {
        want.entry(s.team)
            .or_default()
            .push(format!("lt-{}", s.index));
    }
    for users in want.values_mut() {
        users.sort();
    }
    let http = reqwest::Client::new();
    let deadline = Instant::now() + settle;
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let mut last_problem;
    loop {
        tick.tick().await;
        match compare(ctx, &http, cfg, &want).await {
            Ok(()) => {
                return Check {
                    name: "presence".into(),
                    ok: true,
                    detail: format!(
                        "every team lists exactly its {} steady users",
                        plan.sockets.len()
                    ),
                };
            }
            Err(problem) => last_problem = format!("{problem:#}"),
        }
        if Instant::now() >= deadline {
            return Check {
                name: "presence".into(),
                ok: false,
                detail: format!("after {settle:?}: {last_problem}"),
            };
        }
    }
}

async fn compare(
    ctx: &RunCtx,
    http: &reqwest::Client,
    cfg: &LoadConfig,
    want: &BTreeMap<usize, Vec<String>>,
) -> anyhow::Result<()> {
    for (&team, users) in want {
        let url = &ctx.common.urls[team % ctx.common.urls.len()];
        let base = rest::http_base(url)?;
        let token = cfg.token_for("lt-presence-check", team)?;
        let got = rest::presence(http, &base, &cfg.team_name(team), &token).await?;
        let mut listed: Vec<String> = got
            .presence
            .iter()
            .map(|e| e.user.as_str().to_owned())
            .collect();
        listed.sort();
        if &listed != users {
            let extra: Vec<_> = listed.iter().filter(|u| !users.contains(u)).collect();
            let missing: Vec<_> = users.iter().filter(|u| !listed.contains(u)).collect();
            anyhow::bail!(
                "team {team}: {} listed, {} expected; extra {:?}, missing {:?}",
                listed.len(),
                users.len(),
                extra.iter().take(5).collect::<Vec<_>>(),
                missing.iter().take(5).collect::<Vec<_>>()
            );
        }
        if let Some(e) = got.presence.iter().find(|e| e.conns != 1) {
            anyhow::bail!("team {team}: {} has {} connections, not 1", e.user, e.conns);
        }
    }
    Ok(())
}
