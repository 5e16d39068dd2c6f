//! `fanout`: every team's publishers publish at a fixed aggregate rate; every other
//! socket of the team must receive every message, once, in order. Latency is measured
//! from the payload's send time to arrival.

use crate::cli::LoadArgs;
use crate::report::Report;

use super::{RunCtx, measured};

pub async fn run(ctx: &RunCtx, args: &LoadArgs) -> anyhow::Result<Report> {
    let plan = ctx.plan(args.sockets, args.teams, args.publishers)?;
    let cfg = ctx.config(args, ctx.run_id.clone());
    let mut cp = ctx.checkpoints();
    let result = measured(ctx, &plan, cfg, &mut cp).await?;
    let mut report = ctx.report("fanout");
    describe(&mut report, args);
    report.absorb(&result);
    report.servers = cp.costs(result.connected, result.tally.received);
    Ok(report)
}

pub fn describe(report: &mut Report, args: &LoadArgs) {
    report.teams = args.teams;
    report.publishers_per_team = args.publishers;
    report.target_rate_msgs_per_s = args.rate;
    report.duration_s = args.duration.as_secs_f64();
}
