//! `teamhub-loadtest`: see `teamhub-loadtest --help` and loadtest/README.md.

use std::process::ExitCode;

use clap::Parser;
use teamhub_loadtest::cli::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // One generator thread by default: on a two-core machine the hub gets the other.
    let runtime = if cli.common.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cli.common.threads)
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("teamhub-loadtest: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let child = cli.common.child.is_some();
    let json = cli.common.json.clone();
    let strict = matches!(
        cli.scenario,
        teamhub_loadtest::cli::Scenario::Fanout(_)
            | teamhub_loadtest::cli::Scenario::Churn(_)
            | teamhub_loadtest::cli::Scenario::Recovery(_)
            | teamhub_loadtest::cli::Scenario::Chaos(_)
    );
    let result = runtime.block_on(async {
        let report = teamhub_loadtest::run(cli).await?;
        teamhub_loadtest::output(&report, child, json.as_deref())?;
        Ok::<_, anyhow::Error>(report)
    });
    match result {
        // A run that measured something wrong (loss, failed checks) says so in its exit
        // code too, so scripts and CI notice.
        Ok(report) if strict && !child && !report.ok() => ExitCode::from(3),
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("teamhub-loadtest: {e:#}");
            ExitCode::FAILURE
        }
    }
}
