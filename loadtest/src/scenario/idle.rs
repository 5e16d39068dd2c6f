//! `idle`: many sockets that join and do nothing. What one connection costs the server
//! (RSS per connection) and how long connecting takes under a crowd.

use crate::cli::{IdleArgs, LoadArgs};
use crate::report::Report;

use super::{RunCtx, measured};

pub async fn run(ctx: &RunCtx, args: &IdleArgs) -> anyhow::Result<Report> {
    let plan = ctx.plan(args.sockets, args.teams, 0)?;
    let load = LoadArgs {
        sockets: args.sockets,
        teams: args.teams,
        publishers: 0,
        rate: 0.0,
        duration: args.duration,
        drain: std::time::Duration::ZERO,
        payload_bytes: 0,
        msg_type: "bench.idle".into(),
    };
    let cfg = ctx.config(&load, ctx.run_id.clone());
    let mut cp = ctx.checkpoints();
    let result = measured(ctx, &plan, cfg, &mut cp).await?;
    let mut report = ctx.report("idle");
    report.teams = args.teams;
    report.duration_s = args.duration.as_secs_f64();
    report.absorb(&result);
    report.servers = cp.costs(result.connected, 0);
    Ok(report)
}
