//! `ramp`: fanout at doubling rates. A step *holds* when every socket connected,
//! nothing was lost, duplicated or reordered, no connection was closed and p99 stayed
//! under the bound; the ramp stops at the first step that does not hold.
//!
//! Each step connects fresh sockets to fresh teams, so a step that overloaded the
//! server (and got sockets closed) cannot spoil the next one's accounting.

use anyhow::bail;

use crate::cli::{LoadArgs, RampArgs};
use crate::multiproc::Checkpoints;
use crate::report::{Report, Step};

use super::{RunCtx, measured};

pub async fn run(ctx: &RunCtx, args: &RampArgs) -> anyhow::Result<Report> {
    if ctx.common.processes > 1 || ctx.common.child.is_some() {
        bail!("ramp runs in one process (at most 18,000 sockets); drop --processes");
    }
    if args.start_rate <= 0.0 {
        bail!("--start-rate must be positive");
    }
    let plan = ctx.plan(args.sockets, args.teams, args.publishers)?;
    let mut report = ctx.report("ramp");
    report.teams = args.teams;
    report.publishers_per_team = args.publishers;
    report.duration_s = args.step_duration.as_secs_f64();
    let mut rate = args.start_rate;
    let mut index = 0;
    while rate <= args.max_rate {
        let load = LoadArgs {
            sockets: args.sockets,
            teams: args.teams,
            publishers: args.publishers,
            rate,
            duration: args.step_duration,
            drain: args.drain,
            payload_bytes: args.payload_bytes,
            msg_type: args.msg_type.clone(),
        };
        let cfg = ctx.config(&load, format!("{}-s{index}", ctx.run_id));
        let mut cp = Checkpoints::solo(&ctx.common.server_pids);
        let result = measured(ctx, &plan, cfg, &mut cp).await?;
        let latency = result.latency.summary();
        let held = result.failed == 0
            && result.tally.is_exact()
            && result.tally.expected > 0
            && result.publish_errors == 0
            && result.closes.is_empty()
            && (latency.p99 as u128) < args.p99_bound.as_micros();
        let cost = cp.costs(result.connected, result.tally.received);
        let step = Step {
            rate_msgs_per_s: rate,
            deliveries_per_s: if result.publish_secs > 0.0 {
                result.tally.received as f64 / result.publish_secs
            } else {
                0.0
            },
            deliveries: result.tally,
            latency_us: latency,
            held,
            sockets_connected: result.connected,
            closes: result.closes.clone(),
            server_cpu_secs_per_million: cost.first().and_then(|c| c.cpu_secs_per_million),
        };
        if !ctx.common.quiet {
            eprintln!(
                "step {:.0} msg/s: {:.0} deliveries/s, p99 {:.3} ms, lost {} -> {}",
                rate,
                step.deliveries_per_s,
                latency.p99 as f64 / 1000.0,
                result.tally.lost,
                if held { "held" } else { "not held" }
            );
        }
        report.steps.push(step.clone());
        if held {
            report.highest_held = Some(step);
            report.absorb(&result);
            report.servers = cost;
        } else {
            if report.highest_held.is_none() {
                report.absorb(&result);
                report.servers = cost;
            }
            break;
        }
        rate *= 2.0;
        index += 1;
    }
    report.target_rate_msgs_per_s = report
        .highest_held
        .as_ref()
        .map_or(0.0, |s| s.rate_msgs_per_s);
    report.notes.push(format!(
        "a step holds when p99 < {:?} and nothing is lost, duplicated, reordered or closed; totals above are those of the highest step held",
        args.p99_bound
    ));
    Ok(report)
}
