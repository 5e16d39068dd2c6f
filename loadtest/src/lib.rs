//! teamhub-loadtest: a bounded load generator for the hub, and the yardstick it is
//! compared with (`baselines/`: a minimal Rust relay and a Socket.IO server).
//!
//! Map: [`cli`] parses; [`scenario`] has one module per scenario; [`engine`] runs
//! sockets (one task each, over [`transport`], which rides on `teamhub-client`);
//! [`accounting`] and [`latency`] turn what arrived into exact figures; [`procstat`]
//! reads server RSS and CPU; [`multiproc`] spreads a run over child processes;
//! [`report`], [`chart`] and [`progress`] are for people.
//!
//! Invariant: every run is bounded (socket cap, duration, an overall deadline) and
//! only talks to loopback addresses.

pub mod accounting;
pub mod addrs;
pub mod chart;
pub mod cli;
pub mod engine;
pub mod latency;
pub mod multiproc;
pub mod payload;
pub mod plan;
pub mod procstat;
pub mod progress;
pub mod report;
pub mod rest;
pub mod scenario;
pub mod transport;

use std::path::Path;

use anyhow::Context;

use crate::cli::{Cli, Scenario};
use crate::report::Report;
use crate::scenario::RunCtx;

/// Runs the scenario the command line names, in this process or over children.
pub async fn run(cli: Cli) -> anyhow::Result<Report> {
    let ctx = RunCtx::new(cli.common.clone());
    let c = &ctx.common;
    if c.processes > 1 && c.child.is_none() {
        match &cli.scenario {
            Scenario::Idle(_) | Scenario::Fanout(_) => {
                return run_parent(&ctx, &cli.scenario).await;
            }
            // The ramp starts children for each step itself (below, under its deadline).
            Scenario::Ramp(_) => {}
            _ => anyhow::bail!("--processes works with idle, fanout and ramp only"),
        }
    }
    let (sockets, active) = active_time(&cli.scenario);
    let budget = scenario::budget(sockets, c.connect_timeout, active);
    let work = async {
        match &cli.scenario {
            Scenario::Idle(a) => scenario::idle::run(&ctx, a).await,
            Scenario::Fanout(a) => scenario::fanout::run(&ctx, a).await,
            Scenario::Ramp(a) => scenario::ramp::run(&ctx, a).await,
            Scenario::Churn(a) => scenario::churn::run(&ctx, a).await,
            Scenario::Recovery(a) => scenario::recovery::run(&ctx, a).await,
            Scenario::Chaos(a) => scenario::recovery::chaos(&ctx, a).await,
        }
    };
    tokio::time::timeout(budget, work)
        .await
        .with_context(|| format!("the run did not finish within its {budget:?} budget"))?
}

/// Sockets and the longest stretch of load a scenario asks for, for its deadline.
fn active_time(s: &Scenario) -> (usize, std::time::Duration) {
    match s {
        Scenario::Idle(a) => (a.sockets, a.duration),
        Scenario::Fanout(a) => (a.sockets, a.duration + a.drain),
        Scenario::Churn(a) => {
            // A fixed count of churners takes as long as the node lets it: allow it a
            // quarter of the asked rate before the run is called stuck.
            let churning = a.churn_count.map_or(std::time::Duration::ZERO, |count| {
                std::time::Duration::from_secs_f64(4.0 * count as f64 / a.churn_rate.max(1e-3))
            });
            (
                a.load.sockets,
                a.load.duration.max(churning) + a.load.drain + a.settle,
            )
        }
        Scenario::Recovery(a) => (
            a.sockets,
            a.duration + a.drain + a.reconnect_timeout + a.disrupt_after,
        ),
        Scenario::Chaos(a) => (
            a.sockets,
            a.duration + a.drain + a.reconnect_timeout + a.activity_settle,
        ),
        Scenario::Ramp(a) => {
            let steps = (a.max_rate / a.start_rate.max(1e-9)).log2().max(0.0) as u32 + 1;
            (
                a.sockets,
                (a.step_duration + a.drain + std::time::Duration::from_secs(20)) * steps,
            )
        }
    }
}

async fn run_parent(ctx: &RunCtx, scenario: &Scenario) -> anyhow::Result<Report> {
    let c = &ctx.common;
    let mut base = ctx.report(scenario.name());
    base.processes = c.processes;
    let sockets = match scenario {
        Scenario::Idle(a) => {
            base.teams = a.teams;
            base.duration_s = a.duration.as_secs_f64();
            a.sockets
        }
        Scenario::Fanout(a) => {
            scenario::fanout::describe(&mut base, a);
            a.sockets
        }
        _ => unreachable!("checked by the caller"),
    };
    ctx.check_sockets(sockets)?;
    let teams = base.teams;
    if teams < c.processes {
        anyhow::bail!(
            "--processes {} needs at least as many teams ({teams}): children take whole teams",
            c.processes
        );
    }
    let (live, _progress) = ctx.merged_progress(sockets);
    let (_, active) = active_time(scenario);
    let budget = scenario::budget(sockets, c.connect_timeout, active);
    tokio::time::timeout(
        budget,
        multiproc::run_parent(c.processes, &ctx.run_id, &[], &c.server_pids, live, base),
    )
    .await
    .with_context(|| format!("the run did not finish within its {budget:?} budget"))?
}

/// Prints the table and writes the JSON report and its chart (or, in a child, hands
/// the report to the parent).
pub fn output(report: &Report, child: bool, json: Option<&Path>) -> anyhow::Result<()> {
    if child {
        return multiproc::emit_result(report);
    }
    print!("{}", report.table());
    if let Some(path) = json {
        std::fs::write(path, serde_json::to_string_pretty(report)?)
            .with_context(|| format!("writing {}", path.display()))?;
        let svg = path.with_extension("svg");
        let chart = if report.steps.is_empty() {
            let l = report.latency_us.latency()?;
            let c = if l.is_empty() {
                report.connect_us.latency()?
            } else {
                l
            };
            let what = if report.latency_us.summary.count > 0 {
                "delivery latency"
            } else {
                "connect + join time"
            };
            chart::percentile_chart(
                &format!("{} {what}: {}", report.scenario, report.server_kind),
                &[(report.server_kind.clone(), &c)],
            )
        } else {
            chart::ramp_chart(report)
        };
        std::fs::write(&svg, chart.render())
            .with_context(|| format!("writing {}", svg.display()))?;
        eprintln!("wrote {} and {}", path.display(), svg.display());
    }
    Ok(())
}
