//! End to end: a real hub node on port 0, in this process, and tiny bounded runs of
//! the generator, through its own entry point (or as the built binary when the run
//! starts child processes). They must account for every delivery.

use std::ffi::OsString;

use clap::Parser;
use teamhub::config::{Cli as HubCli, Command};
use teamhub_loadtest::cli::Cli;

const SECRET: &str = "loadtest-e2e-secret-0123456789";

async fn start_hub(dir: &std::path::Path) -> teamhub::Running {
    let db = format!("sqlite://{}", dir.join("hub.db").display());
    let spill = dir.join("activity.spill").display().to_string();
    let argv: Vec<OsString> = [
        "teamhub",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--jwt-secret",
        SECRET,
        "--database-url",
        &db,
        "--activity-spill-path",
        &spill,
        "--rate-limit",
        "0",
    ]
    .iter()
    .map(OsString::from)
    .collect();
    let Command::Serve(args) = HubCli::load_from(argv).expect("valid hub args").command else {
        unreachable!("serve was asked for")
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    teamhub::start_on(&args, listener)
        .await
        .expect("hub starts")
}

fn generator(args: &[&str]) -> Cli {
    Cli::try_parse_from(std::iter::once("teamhub-loadtest").chain(args.iter().copied()))
        .expect("valid generator args")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiny_fanout_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let hub = start_hub(dir.path()).await;
    let url = format!("ws://{}/ws", hub.addr);
    let pid = std::process::id().to_string();
    let cli = generator(&[
        "fanout",
        "--url",
        &url,
        "--jwt-secret",
        SECRET,
        "--sockets",
        "20",
        "--teams",
        "2",
        "--rate",
        "20",
        "--duration",
        "2s",
        "--drain",
        "5s",
        "--server-pid",
        &pid,
        "--quiet",
    ]);
    let report = teamhub_loadtest::run(cli).await.expect("the run completes");
    let d = report.deliveries;
    // 40 messages, each to the 9 other sockets of its team.
    assert_eq!(report.sockets_connected, 20, "{:?}", report.setup_errors);
    assert_eq!(report.sent, 40);
    assert_eq!(report.acked, 40);
    assert_eq!(d.expected, 40 * 9, "{d:?}");
    assert_eq!(d.received, d.expected, "{d:?}");
    assert!(d.is_exact(), "{d:?}");
    assert_eq!(report.latency_us.summary.count, d.received);
    assert!(report.closes.is_empty(), "{:?}", report.closes);
    assert!(report.ok());
    assert_eq!(report.servers.len(), 1);
    assert!(report.servers[0].end.rss_kib > 0);
    hub.drain();
    hub.wait().await.expect("hub drains");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_is_recovered_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let hub = start_hub(dir.path()).await;
    let url = format!("ws://{}/ws", hub.addr);
    let cli = generator(&[
        "recovery",
        "--url",
        &url,
        "--jwt-secret",
        SECRET,
        "--sockets",
        "10",
        "--teams",
        "2",
        "--rate",
        "20",
        "--duration",
        "2s",
        "--drain",
        "1s",
        "--cut",
        "--disrupt-after",
        "1s",
        "--quiet",
    ]);
    let report = teamhub_loadtest::run(cli).await.expect("the run completes");
    for c in &report.checks {
        assert!(c.ok, "check {} failed: {}", c.name, c.detail);
    }
    assert!(report.deliveries.expected > 0);
    assert!(report.deliveries.is_exact(), "{:?}", report.deliveries);
    hub.drain();
    hub.wait().await.expect("hub drains");
}

/// `ramp --processes 2` through the real binary (children are re-executions of it, so
/// it cannot run inside this test process): every step is split over two children and
/// merged back, and the merged steps must account for every delivery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ramp_over_two_processes_merges_every_step() {
    let dir = tempfile::tempdir().unwrap();
    let hub = start_hub(dir.path()).await;
    let url = format!("ws://{}/ws", hub.addr);
    let pid = std::process::id().to_string();
    let json = dir.path().join("ramp.json");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_teamhub-loadtest"))
        .args([
            "--quiet",
            "--jwt-secret",
            SECRET,
            "ramp",
            "--url",
            &url,
            "--processes",
            "2",
            "--sockets",
            "20",
            "--teams",
            "2",
            "--start-rate",
            "20",
            "--max-rate",
            "40",
            "--step-duration",
            "1s",
            "--drain",
            "5s",
            // Debug builds on a busy machine: this test is about the merge, not speed.
            "--p99-bound",
            "5s",
            "--server-pid",
            &pid,
            "--json",
        ])
        .arg(&json)
        .output()
        .await
        .expect("the generator runs");
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let report: teamhub_loadtest::report::Report =
        serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(report.processes, 2);
    assert_eq!(report.steps.len(), 2, "{:?}", report.steps);
    for (step, rate) in report.steps.iter().zip([20u64, 40]) {
        // rate msg/s for 1 s, each to the 9 other sockets of its team (teams of 10,
        // one in each child).
        assert_eq!(step.rate_msgs_per_s, rate as f64);
        assert_eq!(step.sockets_connected, 20, "{step:?}");
        assert_eq!(step.deliveries.expected, rate * 9, "{step:?}");
        assert_eq!(
            step.deliveries.received, step.deliveries.expected,
            "{step:?}"
        );
        assert!(step.deliveries.is_exact(), "{step:?}");
        assert_eq!(step.latency_us.count, step.deliveries.received, "{step:?}");
        assert!(step.held, "{step:?}");
    }
    let top = report.highest_held.as_ref().expect("a step held");
    assert_eq!(top.rate_msgs_per_s, 40.0);
    // The totals are the highest step's, merged from both children.
    assert_eq!(report.sockets_connected, 20);
    assert_eq!(report.sent, 40);
    assert_eq!(report.deliveries, top.deliveries);
    assert_eq!(report.latency_us.summary, top.latency_us);
    assert_eq!(report.servers.len(), 1);
    assert!(report.servers[0].end.rss_kib > 0);
    hub.drain();
    hub.wait().await.expect("hub drains");
}
