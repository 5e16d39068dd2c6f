//! Command line: options every scenario shares, and one subcommand per scenario.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::engine::Accounting;
use crate::plan::Slice;
use crate::transport::Wire;

#[derive(Debug, Parser)]
#[command(
    name = "teamhub-loadtest",
    version,
    about = "Bounded load generator for teamhub and its baselines. Every run has a duration and a socket cap and stops by itself; traffic stays on 127.0.0.0/8."
)]
pub struct Cli {
    #[command(flatten)]
    pub common: Common,
    #[command(subcommand)]
    pub scenario: Scenario,
}

/// Which server is on the other end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ServerKind {
    /// The hub: accounting by team offsets.
    Teamhub,
    /// The relay baseline (teamhub frames, no offsets): accounting by payload sequence.
    Relay,
    /// The Socket.IO baseline (Engine.IO v4): accounting by payload sequence.
    Socketio,
}

impl ServerKind {
    pub fn wire(self) -> Wire {
        match self {
            ServerKind::Teamhub | ServerKind::Relay => Wire::Teamhub,
            ServerKind::Socketio => Wire::SocketIo,
        }
    }

    pub fn accounting(self) -> Accounting {
        match self {
            ServerKind::Teamhub => Accounting::Offsets,
            ServerKind::Relay | ServerKind::Socketio => Accounting::Payload,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ServerKind::Teamhub => "teamhub",
            ServerKind::Relay => "relay",
            ServerKind::Socketio => "socketio",
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct Common {
    /// Server WebSocket URL; repeat for several nodes (sockets round-robin over them).
    /// For Socket.IO give ws://host:port.
    #[arg(long = "url", global = true, default_value = "ws://127.0.0.1:8080/ws")]
    pub urls: Vec<String>,
    /// What the URLs point at.
    #[arg(long, global = true, value_enum, default_value = "teamhub")]
    pub server_kind: ServerKind,
    /// Loopback source addresses to spread sockets over, e.g. 127.0.0.1-127.0.0.8.
    #[arg(long, global = true, default_value = "127.0.0.1")]
    pub source_addrs: String,
    /// HS256 secret of the hub, to mint a token per socket.
    #[arg(
        long,
        global = true,
        env = "TEAMHUB_JWT_SECRET",
        hide_env_values = true
    )]
    pub jwt_secret: Option<String>,
    /// Server process to measure (RSS, CPU); repeatable.
    #[arg(long = "server-pid", global = true)]
    pub server_pids: Vec<u32>,
    /// Write the JSON report here (and the latency chart beside it, as .svg).
    #[arg(long, global = true)]
    pub json: Option<PathBuf>,
    /// Split the sockets over this many child processes (idle, fanout and ramp; ramp
    /// runs every step over fresh children).
    #[arg(long, global = true, default_value_t = 1)]
    pub processes: usize,
    /// Generator threads per process; 1 (the default) is a current-thread runtime.
    #[arg(long, global = true, default_value_t = 1)]
    pub threads: usize,
    /// Refuse runs with more sockets than this.
    #[arg(long, global = true, default_value_t = 40_000)]
    pub max_sockets: usize,
    /// Sockets connecting at the same time.
    #[arg(long, global = true, default_value_t = 128)]
    pub connect_concurrency: usize,
    /// Longest connect + join of one socket.
    #[arg(long, global = true, default_value = "15s", value_parser = parse_duration)]
    pub connect_timeout: Duration,
    /// No progress bar.
    #[arg(long, global = true)]
    pub quiet: bool,
    /// Free text recorded in the report.
    #[arg(long, global = true)]
    pub label: Option<String>,
    /// Prefix of team names; defaults to a fresh one per run.
    #[arg(long, global = true)]
    pub run_id: Option<String>,
    /// Internal: this process is child INDEX/COUNT of a --processes run.
    #[arg(long, global = true, hide = true)]
    pub child: Option<Slice>,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Scenario {
    /// Open sockets, join, hold: connect times and server RSS per connection.
    Idle(IdleArgs),
    /// Publishers at a fixed aggregate rate: latency and exact delivery accounting.
    Fanout(LoadArgs),
    /// Fanout at doubling rates until p99 passes a bound or anything is lost.
    Ramp(RampArgs),
    /// Fanout while other sockets connect and disconnect; checks presence at the end.
    Churn(ChurnArgs),
    /// Fanout through a node drain (SIGTERM) or a cut: every client must get every
    /// offset exactly once after rejoining with `since`.
    Recovery(RecoveryArgs),
    /// Steady traffic over several nodes while a script breaks things (loadtest/chaos.sh:
    /// SIGKILL a node, restart Redis, cut Postgres): per client, every offset or a
    /// `recovered: false`; and each acknowledged publish in the activity log once.
    Chaos(ChaosArgs),
}

impl Scenario {
    pub fn name(&self) -> &'static str {
        match self {
            Scenario::Idle(_) => "idle",
            Scenario::Fanout(_) => "fanout",
            Scenario::Ramp(_) => "ramp",
            Scenario::Churn(_) => "churn",
            Scenario::Recovery(_) => "recovery",
            Scenario::Chaos(_) => "chaos",
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct IdleArgs {
    #[arg(long, default_value_t = 1000)]
    pub sockets: usize,
    #[arg(long, default_value_t = 10)]
    pub teams: usize,
    /// How long to hold the sockets open once all joined.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
}

#[derive(Debug, Clone, Args)]
pub struct LoadArgs {
    #[arg(long, default_value_t = 1000)]
    pub sockets: usize,
    #[arg(long, default_value_t = 10)]
    pub teams: usize,
    /// Publishers per team (they are among the sockets, and receive the others).
    #[arg(long, default_value_t = 1)]
    pub publishers: usize,
    /// Aggregate publish rate over all publishers, messages per second.
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Longest wait for in-flight deliveries after the last publish.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub drain: Duration,
    /// Filler bytes in each payload (the payload is ~50 bytes without it).
    #[arg(long, default_value_t = 64)]
    pub payload_bytes: usize,
    /// Message type. The hub writes every message to its activity log unless the type
    /// has an ephemeral prefix (`cursor.`, `typing.` by default).
    #[arg(long, default_value = "bench.tick")]
    pub msg_type: String,
}

#[derive(Debug, Clone, Args)]
pub struct RampArgs {
    #[arg(long, default_value_t = 1000)]
    pub sockets: usize,
    #[arg(long, default_value_t = 10)]
    pub teams: usize,
    #[arg(long, default_value_t = 1)]
    pub publishers: usize,
    /// First step's aggregate rate, messages per second; each step doubles it.
    #[arg(long, default_value_t = 100.0)]
    pub start_rate: f64,
    /// Stop after this rate even if every step held.
    #[arg(long, default_value_t = 102_400.0)]
    pub max_rate: f64,
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub step_duration: Duration,
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub drain: Duration,
    /// A step holds while its p99 stays below this and nothing is lost.
    #[arg(long, default_value = "100ms", value_parser = parse_duration)]
    pub p99_bound: Duration,
    #[arg(long, default_value_t = 64)]
    pub payload_bytes: usize,
    #[arg(long, default_value = "bench.tick")]
    pub msg_type: String,
    /// Internal: a child of a `ramp --processes` run measures only step INDEX (0 is
    /// the first, at --start-rate).
    #[arg(long, hide = true)]
    pub ramp_step: Option<usize>,
}

#[derive(Debug, Clone, Args)]
pub struct ChurnArgs {
    #[command(flatten)]
    pub load: LoadArgs,
    /// Extra sockets connecting per second (each joins, stays, then leaves).
    #[arg(long, default_value_t = 20.0)]
    pub churn_rate: f64,
    /// How long each churning socket stays.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub churn_lifetime: Duration,
    /// Make exactly this many churning connects, however long it takes at
    /// --churn-rate (the steady load still runs for --duration). Without it the
    /// churners arrive for as long as the steady load runs, as many as the
    /// generator manages.
    #[arg(long)]
    pub churn_count: Option<u64>,
    /// At most this many churning sockets at once: when they fall behind (the hub
    /// or the generator is short of CPU), arrivals wait instead of piling up, since
    /// every extra churner also receives the presence diffs of all the others.
    #[arg(long, default_value_t = 200)]
    pub churn_concurrency: usize,
    /// Longest wait for presence to settle at the end.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub settle: Duration,
}

#[derive(Debug, Clone, Args)]
pub struct RecoveryArgs {
    #[arg(long, default_value_t = 100)]
    pub sockets: usize,
    #[arg(long, default_value_t = 2)]
    pub teams: usize,
    #[arg(long, default_value_t = 1)]
    pub publishers: usize,
    #[arg(long, default_value_t = 50.0)]
    pub rate: f64,
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub drain: Duration,
    /// Send SIGTERM to this server PID at --disrupt-after (a node drain, close 1012).
    #[arg(long)]
    pub sigterm_pid: Option<u32>,
    /// Without --sigterm-pid: drop every client's connection abruptly at
    /// --disrupt-after (a network cut); they rejoin the same node.
    #[arg(long)]
    pub cut: bool,
    /// When the disruption happens, after publishing starts. Without --sigterm-pid or
    /// --cut, the operator disrupts the node by hand.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub disrupt_after: Duration,
    /// Longest time a client keeps trying to reconnect.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub reconnect_timeout: Duration,
    #[arg(long, default_value = "bench.tick")]
    pub msg_type: String,
}

#[derive(Debug, Clone, Args)]
pub struct ChaosArgs {
    #[arg(long, default_value_t = 60)]
    pub sockets: usize,
    #[arg(long, default_value_t = 3)]
    pub teams: usize,
    #[arg(long, default_value_t = 1)]
    pub publishers: usize,
    #[arg(long, default_value_t = 30.0)]
    pub rate: f64,
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub duration: Duration,
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub drain: Duration,
    /// Longest time a client keeps trying to reconnect.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub reconnect_timeout: Duration,
    #[arg(long, default_value = "chaos.tick")]
    pub msg_type: String,
    /// The nodes' Postgres (with `options=-c search_path=...` for a schema): at the end
    /// the run's activity rows are counted there against the acknowledged publishes.
    #[arg(long)]
    pub activity_database_url: Option<String>,
    /// Longest wait for the activity log to catch up after the run.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub activity_settle: Duration,
}

/// `250ms`, `10s`, `2m`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?}: expected e.g. 500ms, 10s, 2m"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("{s:?}: unit must be ms, s or m")),
    };
    if !(0.0..=86_400.0).contains(&secs) {
        return Err(format!("{s:?}: out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("5h").is_err());
        assert!(parse_duration("x").is_err());
    }

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_options_go_anywhere() {
        let cli = Cli::try_parse_from([
            "t",
            "fanout",
            "--sockets",
            "20",
            "--url",
            "ws://127.0.0.1:1/ws",
            "--url",
            "ws://127.0.0.1:2/ws",
            "--child",
            "1/2",
        ])
        .unwrap();
        assert_eq!(cli.common.urls.len(), 2);
        assert_eq!(cli.common.child, Some(Slice { index: 1, count: 2 }));
    }
}
