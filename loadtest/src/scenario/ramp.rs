//! `ramp`: fanout at doubling rates. A step *holds* when every socket connected,
//! nothing was lost, duplicated or reordered, no connection was closed and p99 stayed
//! under the bound; the ramp stops at the first step that does not hold.
//!
//! Each step connects fresh sockets to fresh teams, so a step that overloaded the
//! server (and got sockets closed) cannot spoil the next one's accounting.
//!
//! With `--processes K` every step is a multi-process fanout (`multiproc`): the parent
//! starts K fresh children with `--ramp-step INDEX`, each takes whole teams (and so
//! its publishers' share of the rate), and the parent merges their reports: tallies,
//! sockets, closes and publish errors add up, HDR histograms merge exactly. The merged
//! report is judged by the same rule ([`judge`]) as a step measured in one process.

use std::ffi::OsString;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::cli::{LoadArgs, RampArgs};
use crate::multiproc;
use crate::plan::Plan;
use crate::report::{Report, Step};

use super::{RunCtx, fanout, measured};

pub async fn run(ctx: &RunCtx, args: &RampArgs) -> anyhow::Result<Report> {
    if args.start_rate <= 0.0 {
        bail!("--start-rate must be positive");
    }
    if ctx.common.child.is_some() {
        return child_step(ctx, args).await;
    }
    if args.ramp_step.is_some() {
        bail!("--ramp-step is internal (the children of `ramp --processes` get it)");
    }
    let processes = ctx.common.processes.max(1);
    let plan = ctx.plan(args.sockets, args.teams, args.publishers)?;
    if processes > 1 && args.teams < processes {
        bail!(
            "--processes {processes} needs at least as many teams ({}): children take whole teams",
            args.teams
        );
    }
    let mut report = ctx.report("ramp");
    report.processes = processes;
    report.teams = args.teams;
    report.publishers_per_team = args.publishers;
    report.duration_s = args.step_duration.as_secs_f64();
    for (index, rate) in rates(args).enumerate() {
        let load = step_load(args, rate);
        let measured = if processes > 1 {
            over_children(ctx, &load, index, processes).await?
        } else {
            measure(ctx, &plan, &load, index).await?
        };
        let step = judge(rate, &measured, args.p99_bound);
        if !ctx.common.quiet {
            eprintln!(
                "step {:.0} msg/s: {:.0} deliveries/s, p99 {:.3} ms, lost {} -> {}",
                rate,
                step.deliveries_per_s,
                step.latency_us.p99 as f64 / 1000.0,
                step.deliveries.lost,
                if step.held { "held" } else { "not held" }
            );
        }
        report.steps.push(step.clone());
        if step.held {
            report.highest_held = Some(step);
            report.take_measured(&measured);
        } else {
            if report.highest_held.is_none() {
                report.take_measured(&measured);
            }
            break;
        }
    }
    report.target_rate_msgs_per_s = report
        .highest_held
        .as_ref()
        .map_or(0.0, |s| s.rate_msgs_per_s);
    report.notes.push(format!(
        "a step holds when p99 < {:?} and nothing is lost, duplicated, reordered or closed; totals above are those of the highest step held",
        args.p99_bound
    ));
    if processes > 1 {
        report.notes.push(format!(
            "each step ran in {processes} fresh child processes (whole teams each); their tallies add and their latency histograms are merged exactly"
        ));
    }
    Ok(report)
}

/// The steps' rates: `--start-rate`, doubling, up to `--max-rate`. Parent and
/// children both derive a step's rate from its index here.
fn rates(args: &RampArgs) -> impl Iterator<Item = f64> {
    let max = args.max_rate;
    std::iter::successors(Some(args.start_rate), |r| Some(r * 2.0)).take_while(move |&r| r <= max)
}

fn step_load(args: &RampArgs, rate: f64) -> LoadArgs {
    LoadArgs {
        sockets: args.sockets,
        teams: args.teams,
        publishers: args.publishers,
        rate,
        duration: args.step_duration,
        drain: args.drain,
        payload_bytes: args.payload_bytes,
        msg_type: args.msg_type.clone(),
    }
}

/// One step in this process (the whole plan, or a child's share of it): fresh
/// sockets in the step's own teams, `<run id>-s<index>-t<team>`.
async fn measure(
    ctx: &RunCtx,
    plan: &Plan,
    load: &LoadArgs,
    index: usize,
) -> anyhow::Result<Report> {
    let cfg = ctx.config(load, format!("{}-s{index}", ctx.run_id));
    let mut cp = ctx.checkpoints();
    let result = measured(ctx, plan, cfg, &mut cp).await?;
    let mut r = ctx.report("ramp");
    fanout::describe(&mut r, load);
    r.absorb(&result);
    r.servers = cp.costs(result.connected, result.tally.received);
    Ok(r)
}

/// A child of `ramp --processes`: its share of one step, reported to the parent.
async fn child_step(ctx: &RunCtx, args: &RampArgs) -> anyhow::Result<Report> {
    let index = args
        .ramp_step
        .context("a ramp child needs --ramp-step (it measures one step)")?;
    let rate = rates(args)
        .nth(index)
        .with_context(|| format!("--ramp-step {index} is past --max-rate"))?;
    let plan = ctx.plan(args.sockets, args.teams, args.publishers)?;
    measure(ctx, &plan, &step_load(args, rate), index).await
}

/// One step over `processes` fresh children; the parent samples the servers at the
/// barriers and merges the children's reports.
async fn over_children(
    ctx: &RunCtx,
    load: &LoadArgs,
    index: usize,
    processes: usize,
) -> anyhow::Result<Report> {
    let mut base = ctx.report("ramp");
    base.processes = processes;
    fanout::describe(&mut base, load);
    let (live, _progress) = ctx.merged_progress(load.sockets);
    let extra = [
        OsString::from("--ramp-step"),
        OsString::from(index.to_string()),
    ];
    multiproc::run_parent(
        processes,
        &ctx.run_id,
        &extra,
        &ctx.common.server_pids,
        live,
        base,
    )
    .await
    .with_context(|| format!("step {index} at {} msg/s", load.rate))
}

/// A step's figures from its report (one process's, or the children's merged), and
/// whether it held.
pub fn judge(rate: f64, r: &Report, p99_bound: Duration) -> Step {
    let latency = r.latency_us.summary;
    let held = r.sockets_failed == 0
        && r.deliveries.is_exact()
        && r.deliveries.expected > 0
        && r.publish_errors == 0
        && r.closes.is_empty()
        && (latency.p99 as u128) < p99_bound.as_micros();
    Step {
        rate_msgs_per_s: rate,
        deliveries_per_s: r.deliveries_per_s,
        deliveries: r.deliveries,
        latency_us: latency,
        held,
        sockets_connected: r.sockets_connected,
        closes: r.closes.clone(),
        server_cpu_secs_per_million: r.servers.first().and_then(|c| c.cpu_secs_per_million),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::accounting::Tally;
    use crate::cli::{Cli, Scenario};
    use crate::latency::{HistogramReport, Latency};

    fn ramp_args(extra: &[&str]) -> RampArgs {
        let argv = ["t", "ramp"].iter().chain(extra).copied();
        match Cli::try_parse_from(argv).unwrap().scenario {
            Scenario::Ramp(a) => a,
            other => panic!("parsed {other:?}"),
        }
    }

    /// One child's share of a step: `sockets` sockets, every expected delivery
    /// received with the given latencies (µs).
    fn child(sockets: usize, lat: &[u64]) -> Report {
        let mut l = Latency::new();
        lat.iter().for_each(|&v| l.record(v));
        let n = lat.len() as u64;
        Report {
            sockets_planned: sockets,
            sockets_connected: sockets,
            publish_secs: 2.0,
            deliveries_per_s: n as f64 / 2.0,
            sent: 10,
            acked: 10,
            deliveries: Tally {
                expected: n,
                received: n,
                ..Tally::default()
            },
            latency_us: HistogramReport::from(&l),
            ..Report::default()
        }
    }

    fn merged(children: &[Report]) -> Report {
        let mut parent = Report::default();
        for c in children {
            parent.merge_child(c).unwrap();
        }
        parent
    }

    const BOUND: Duration = Duration::from_millis(100);

    #[test]
    fn rates_double_up_to_the_max_and_children_find_theirs() {
        let a = ramp_args(&["--start-rate", "50", "--max-rate", "200"]);
        assert_eq!(rates(&a).collect::<Vec<_>>(), [50.0, 100.0, 200.0]);
        assert_eq!(rates(&a).nth(2), Some(200.0));
        assert_eq!(rates(&a).nth(3), None);
        // What a child's command line looks like: the parent's, then the barriers'
        // globals, then the step (parsed as a ramp option).
        let c = Cli::try_parse_from([
            "t",
            "ramp",
            "--sockets",
            "200",
            "--child",
            "1/2",
            "--run-id",
            "ltx",
            "--ramp-step",
            "1",
        ])
        .unwrap();
        assert_eq!(c.common.run_id.as_deref(), Some("ltx"));
        let Scenario::Ramp(a) = c.scenario else {
            panic!("not a ramp")
        };
        assert_eq!(a.ramp_step, Some(1));
    }

    #[test]
    fn a_merged_step_adds_counts_and_merges_latency_exactly() {
        // One child with 150 fast deliveries, one with 49 fast and 1 slow (300 ms).
        // Alone, the second child's p99 is the slow one (its 50th of 50); over both
        // (1 slow in 200) p99 is fast: the merged histogram decides, not the worst
        // child.
        let fast = vec![2_000u64; 150];
        let mut with_slow = vec![2_000u64; 49];
        with_slow.push(300_000);
        let (a, b) = (child(100, &fast), child(100, &with_slow));
        assert!(!judge(400.0, &b, BOUND).held);
        let m = merged(&[a, b]);
        let step = judge(400.0, &m, BOUND);
        let mut whole = Latency::new();
        fast.iter().chain(&with_slow).for_each(|&v| whole.record(v));
        assert_eq!(step.latency_us, whole.summary());
        assert!(step.latency_us.p99 < 3_000, "{:?}", step.latency_us);
        assert!(step.latency_us.max >= 300_000);
        assert_eq!(step.deliveries.expected, 200);
        assert_eq!(step.deliveries.received, 200);
        assert_eq!(step.sockets_connected, 200);
        assert_eq!(step.deliveries_per_s, 100.0);
        assert_eq!(step.rate_msgs_per_s, 400.0);
        assert!(step.held);
        assert_eq!(m.sent, 20);
    }

    #[test]
    fn one_child_spoils_the_whole_step() {
        let ok = || child(50, &[1_000, 2_000]);
        assert!(judge(100.0, &merged(&[ok(), ok()]), BOUND).held);

        let mut lost = ok();
        lost.deliveries.expected += 1;
        lost.deliveries.lost = 1;
        let step = judge(100.0, &merged(&[ok(), lost]), BOUND);
        assert!(!step.held);
        assert_eq!(step.deliveries.lost, 1);

        let mut closed = ok();
        closed.closes.insert("1013".into(), 3);
        let step = judge(100.0, &merged(&[closed.clone(), ok(), closed]), BOUND);
        assert!(!step.held);
        assert_eq!(step.closes.get("1013"), Some(&6));

        let mut errors = ok();
        errors.publish_errors = 2;
        assert!(!judge(100.0, &merged(&[ok(), errors]), BOUND).held);

        let mut failed = ok();
        failed.sockets_connected -= 1;
        failed.sockets_failed = 1;
        let step = judge(100.0, &merged(&[failed, ok()]), BOUND);
        assert!(!step.held);
        assert_eq!(step.sockets_connected, 99);

        // Nothing expected (no publisher reached anyone) is not a held step.
        assert!(!judge(100.0, &merged(&[child(50, &[]), child(50, &[])]), BOUND).held);
    }

    #[test]
    fn one_child_merged_is_that_child() {
        let c = child(100, &[10, 20, 30, 4_000]);
        assert_eq!(
            format!(
                "{:?}",
                judge(200.0, &merged(std::slice::from_ref(&c)), BOUND)
            ),
            format!("{:?}", judge(200.0, &c, BOUND))
        );
    }

    #[test]
    fn the_ramp_takes_the_measured_part_of_a_step() {
        let m = merged(&[child(10, &[5, 6]), child(10, &[7])]);
        let mut r = Report {
            scenario: "ramp".into(),
            processes: 2,
            ..Report::default()
        };
        r.take_measured(&m);
        assert_eq!(r.scenario, "ramp");
        assert_eq!(r.processes, 2);
        assert_eq!(r.sockets_connected, 20);
        assert_eq!(r.deliveries, m.deliveries);
        assert_eq!(r.latency_us.summary, m.latency_us.summary);
        assert_eq!(r.latency_us.hdr_v2_base64, m.latency_us.hdr_v2_base64);
        assert_eq!(r.deliveries_per_s, m.deliveries_per_s);
    }
}
