//! The scenarios, one file each, and what they share: building the plan and config
//! from the command line, running the engine's phases with progress, and the report.

pub mod churn;
pub mod fanout;
pub mod idle;
pub mod ramp;
pub mod recovery;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::bail;

use crate::addrs::parse_source_addrs;
use crate::cli::{Common, LoadArgs};
use crate::engine::{Live, LoadConfig, LoadResult, LoadRun};
use crate::multiproc::Checkpoints;
use crate::plan::Plan;
use crate::progress::{self, Counts, Display};
use crate::report::Report;

/// Largest socket count one process takes (the file limit here is 20,000).
pub const MAX_SOCKETS_PER_PROCESS: usize = 18_000;

/// What every scenario needs besides its own arguments.
#[derive(Debug, Clone)]
pub struct RunCtx {
    pub common: Common,
    pub run_id: String,
    pub display: Display,
    pub command: String,
    pub started_unix: u64,
}

impl RunCtx {
    pub fn new(common: Common) -> RunCtx {
        let started_unix = crate::payload::now_us() / 1_000_000;
        let run_id = common
            .run_id
            .clone()
            .unwrap_or_else(|| format!("lt{:x}", crate::payload::now_us() % 0xff_ffff_ffff));
        let display = if common.child.is_some() {
            Display::Lines
        } else if common.quiet {
            Display::Off
        } else {
            Display::Bar
        };
        let command = std::env::args().collect::<Vec<_>>().join(" ");
        RunCtx {
            common,
            run_id,
            display,
            command,
            started_unix,
        }
    }

    /// Checks the socket cap, and the per-process cap unless children share the load.
    pub fn check_sockets(&self, sockets: usize) -> anyhow::Result<()> {
        let c = &self.common;
        if sockets > c.max_sockets {
            bail!(
                "{sockets} sockets is over --max-sockets {} (raise it deliberately)",
                c.max_sockets
            );
        }
        let per_process = sockets.div_ceil(c.child.map_or(c.processes, |s| s.count).max(1));
        if per_process > MAX_SOCKETS_PER_PROCESS {
            bail!(
                "{per_process} sockets in one process is over {MAX_SOCKETS_PER_PROCESS} (the file limit is 20,000): use --processes"
            );
        }
        Ok(())
    }

    pub fn plan(&self, sockets: usize, teams: usize, publishers: usize) -> anyhow::Result<Plan> {
        self.check_sockets(sockets)?;
        if teams == 0 || sockets < teams {
            bail!("need at least one socket per team ({sockets} sockets, {teams} teams)");
        }
        if publishers > sockets / teams {
            bail!("more publishers per team than sockets per team");
        }
        let addrs = parse_source_addrs(&self.common.source_addrs)?;
        Ok(Plan::new(
            sockets,
            teams,
            publishers,
            &self.common.urls,
            &addrs,
            self.common.child,
        ))
    }

    pub fn config(&self, load: &LoadArgs, team_prefix: String) -> LoadConfig {
        let kind = self.common.server_kind;
        LoadConfig {
            wire: kind.wire(),
            accounting: kind.accounting(),
            team_prefix,
            msg_type: load.msg_type.clone(),
            payload_bytes: load.payload_bytes,
            rate: load.rate,
            duration: load.duration,
            drain: load.drain,
            jwt_secret: self.common.jwt_secret.clone(),
            connect_concurrency: self.common.connect_concurrency,
            connect_timeout: self.common.connect_timeout,
        }
    }

    pub fn checkpoints(&self) -> Checkpoints {
        if self.common.child.is_some() {
            Checkpoints::child()
        } else {
            Checkpoints::solo(&self.common.server_pids)
        }
    }

    pub fn report(&self, scenario: &str) -> Report {
        Report {
            scenario: scenario.into(),
            server_kind: self.common.server_kind.name().into(),
            label: self.common.label.clone(),
            started_unix: self.started_unix,
            command: self.command.clone(),
            processes: self.common.child.map_or(1, |s| s.count),
            ..Report::default()
        }
    }

    /// The one display of a `--processes` parent: the counters it shows are the sum
    /// of its children's, which `multiproc::run_parent` keeps in the returned cell.
    pub fn merged_progress(&self, planned: usize) -> (Arc<Mutex<Counts>>, progress::Progress) {
        let live = Arc::new(Mutex::new(Counts::default()));
        let shown = live.clone();
        let display = progress::start(
            self.common.server_kind.name().into(),
            planned as u64,
            self.display,
            Arc::new(move || *shown.lock().unwrap()),
        );
        (live, display)
    }

    pub fn progress(&self, planned: usize, live: &Arc<Live>) -> progress::Progress {
        let live = live.clone();
        progress::start(
            self.common.server_kind.name().into(),
            planned as u64,
            self.display,
            Arc::new(move || Counts::of(&live)),
        )
    }
}

/// Setup, loaded checkpoint, drive, ended checkpoint, finish: one measured load run.
pub async fn measured(
    ctx: &RunCtx,
    plan: &Plan,
    cfg: LoadConfig,
    cp: &mut Checkpoints,
) -> anyhow::Result<LoadResult> {
    let live = Arc::new(Live::default());
    let _progress = ctx.progress(plan.sockets.len(), &live);
    let mut run = LoadRun::setup(plan, cfg, live).await?;
    if run.connected() == 0 && run.failed() > 0 {
        let result = run.finish().await;
        bail!(
            "no socket could connect and join; first errors: {:?}",
            result.setup_errors
        );
    }
    cp.loaded().await?;
    run.drive().await;
    cp.ended().await?;
    Ok(run.finish().await)
}

/// How long a whole run may take before it is stopped regardless.
pub fn budget(sockets: usize, connect_timeout: Duration, active: Duration) -> Duration {
    Duration::from_secs(60) + connect_timeout + Duration::from_millis(5 * sockets as u64) + active
}
