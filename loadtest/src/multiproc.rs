//! Runs past one process's file limit: the parent re-executes itself K times, each
//! child takes whole teams (see `plan`), and the parent merges their JSON reports.
//!
//! Children and parent talk over pipes, one line at a time:
//! child -> parent on stdout: `progress ...`, `ready` (all sockets joined), `ended`
//! (the measurement is over, sockets still open), `result {json}`;
//! parent -> child on stdin: `go` once every child is ready, `finish` once every child
//! has ended. The two barriers make the server samples (RSS once all sockets of all
//! children are in, CPU until all have finished measuring) mean what they say.
//!
//! `idle` and `fanout` call [`run_parent`] once. `ramp` calls it once per step, each
//! time with `--ramp-step INDEX` appended, so every step is a fresh multi-process
//! fanout (fresh children, sockets and teams) whose merged report becomes the step.

use std::ffi::OsString;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{ChildStdin, Command};
use tokio::sync::mpsc;

use crate::procstat::{self, Sample, ServerCost};
use crate::progress::Counts;
use crate::report::Report;

/// The points of a run where servers are sampled (solo) or children synchronise.
pub enum Checkpoints {
    Solo {
        pids: Vec<u32>,
        before: Vec<Sample>,
        loaded: Vec<Sample>,
        end: Vec<Sample>,
    },
    Child {
        lines: tokio::io::Lines<BufReader<tokio::io::Stdin>>,
    },
}

impl Checkpoints {
    /// Samples the servers now, before any socket connects.
    pub fn solo(pids: &[u32]) -> Checkpoints {
        Checkpoints::Solo {
            pids: pids.to_vec(),
            before: procstat::sample_all(pids),
            loaded: Vec::new(),
            end: Vec::new(),
        }
    }

    pub fn child() -> Checkpoints {
        Checkpoints::Child {
            lines: BufReader::new(tokio::io::stdin()).lines(),
        }
    }

    /// Every socket has joined: sample, or tell the parent and wait for `go`.
    pub async fn loaded(&mut self) -> anyhow::Result<()> {
        match self {
            Checkpoints::Solo { pids, loaded, .. } => {
                *loaded = procstat::sample_all(pids);
                Ok(())
            }
            Checkpoints::Child { lines } => handshake(lines, "ready", "go").await,
        }
    }

    /// The measurement is over: sample, or tell the parent and wait for `finish`.
    pub async fn ended(&mut self) -> anyhow::Result<()> {
        match self {
            Checkpoints::Solo { pids, end, .. } => {
                *end = procstat::sample_all(pids);
                Ok(())
            }
            Checkpoints::Child { lines } => handshake(lines, "ended", "finish").await,
        }
    }

    /// Server costs (solo only; the parent of children computes its own).
    pub fn costs(&self, connections: usize, deliveries: u64) -> Vec<ServerCost> {
        match self {
            Checkpoints::Solo {
                pids,
                before,
                loaded,
                end,
            } => costs(pids, before, loaded, end, connections, deliveries),
            Checkpoints::Child { .. } => Vec::new(),
        }
    }

    pub fn is_child(&self) -> bool {
        matches!(self, Checkpoints::Child { .. })
    }
}

fn costs(
    pids: &[u32],
    before: &[Sample],
    loaded: &[Sample],
    end: &[Sample],
    connections: usize,
    deliveries: u64,
) -> Vec<ServerCost> {
    pids.iter()
        .enumerate()
        .map(|(i, &pid)| {
            let mut c = ServerCost {
                pid,
                before: before.get(i).copied().unwrap_or_default(),
                loaded: loaded.get(i).copied().unwrap_or_default(),
                end: end.get(i).copied().unwrap_or_default(),
                ..ServerCost::default()
            };
            c.compute(connections, deliveries);
            c
        })
        .collect()
}

async fn handshake(
    lines: &mut tokio::io::Lines<BufReader<tokio::io::Stdin>>,
    say: &str,
    expect: &str,
) -> anyhow::Result<()> {
    println!("{say}");
    loop {
        match lines.next_line().await? {
            Some(l) if l.trim() == expect => return Ok(()),
            Some(_) => {}
            None => bail!("parent closed stdin while this child waited for {expect:?}"),
        }
    }
}

/// Prints a child's final report for the parent.
pub fn emit_result(report: &Report) -> anyhow::Result<()> {
    println!("result {}", serde_json::to_string(report)?);
    Ok(())
}

enum Line {
    Progress(Counts),
    Ready,
    Ended,
    Result(Box<Report>),
    Gone,
}

/// The command line for child `index`: ours, without `--processes`, `--json` and
/// `--run-id`, then `--child INDEX/COUNT --run-id RUN_ID` and `extra`.
fn child_args(index: usize, count: usize, run_id: &str, extra: &[OsString]) -> Vec<OsString> {
    let mut out = Vec::new();
    let mut args = std::env::args_os().skip(1);
    while let Some(a) = args.next() {
        let s = a.to_string_lossy();
        if s == "--processes" || s == "--json" || s == "--run-id" {
            args.next();
            continue;
        }
        if s.starts_with("--processes=") || s.starts_with("--json=") || s.starts_with("--run-id=") {
            continue;
        }
        out.push(a);
    }
    out.extend(
        [
            "--child".to_owned(),
            format!("{index}/{count}"),
            "--run-id".into(),
            run_id.into(),
        ]
        .map(OsString::from),
    );
    out.extend(extra.iter().cloned());
    out
}

/// Starts `count` children, runs the barriers, and merges their reports into `base`.
/// `live` is kept up to date with the sum of the children's counters. `extra` goes at
/// the end of every child's command line (after the subcommand's own options, so it
/// may name one of them).
pub async fn run_parent(
    count: usize,
    run_id: &str,
    extra: &[OsString],
    pids: &[u32],
    live: Arc<Mutex<Counts>>,
    base: Report,
) -> anyhow::Result<Report> {
    let before = procstat::sample_all(pids);
    let exe = std::env::current_exe().context("finding this executable")?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut stdins: Vec<ChildStdin> = Vec::new();
    let mut children = Vec::new();
    for index in 0..count {
        let mut child = Command::new(&exe)
            .args(child_args(index, count, run_id, extra))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting child {index}"))?;
        stdins.push(child.stdin.take().context("child stdin")?);
        let stdout = child.stdout.take().context("child stdout")?;
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                let line = if let Some(c) = Counts::from_line(&l) {
                    Line::Progress(c)
                } else if l == "ready" {
                    Line::Ready
                } else if l == "ended" {
                    Line::Ended
                } else if let Some(json) = l.strip_prefix("result ") {
                    match serde_json::from_str::<Report>(json) {
                        Ok(r) => Line::Result(Box::new(r)),
                        Err(e) => {
                            eprintln!("child {index}: bad result: {e}");
                            Line::Gone
                        }
                    }
                } else {
                    eprintln!("child {index}: {l}");
                    continue;
                };
                if tx.send((index, line)).is_err() {
                    return;
                }
            }
            let _ = tx.send((index, Line::Gone));
        });
        children.push(child);
    }
    drop(tx);
    let mut counts = vec![Counts::default(); count];
    let (mut ready, mut ended) = (0, 0);
    let (mut loaded, mut end) = (Vec::new(), Vec::new());
    let mut results: Vec<Option<Report>> = vec![None; count];
    let mut gone = 0;
    while gone < count {
        let Some((i, line)) = rx.recv().await else {
            break;
        };
        match line {
            Line::Progress(c) => {
                counts[i] = c;
                let mut sum = Counts::default();
                counts.iter().for_each(|c| sum.add(c));
                *live.lock().unwrap() = sum;
            }
            Line::Ready => {
                ready += 1;
                if ready == count {
                    loaded = procstat::sample_all(pids);
                    broadcast(&mut stdins, "go").await;
                }
            }
            Line::Ended => {
                ended += 1;
                if ended == count {
                    end = procstat::sample_all(pids);
                    broadcast(&mut stdins, "finish").await;
                }
            }
            Line::Result(r) => results[i] = Some(*r),
            Line::Gone => gone += 1,
        }
    }
    for (i, mut c) in children.into_iter().enumerate() {
        let status = c.wait().await?;
        if !status.success() && results[i].is_none() {
            bail!("child {i} failed ({status}) without a result");
        }
    }
    let mut merged = base;
    for (i, r) in results.into_iter().enumerate() {
        let r = r.with_context(|| format!("child {i} sent no result"))?;
        merged.merge_child(&r)?;
        merged.checks.extend(r.checks);
    }
    merged.servers = costs(
        pids,
        &before,
        &loaded,
        &end,
        merged.sockets_connected,
        merged.deliveries.received,
    );
    Ok(merged)
}

async fn broadcast(stdins: &mut [ChildStdin], line: &str) {
    for s in stdins.iter_mut() {
        let _ = s.write_all(format!("{line}\n").as_bytes()).await;
        let _ = s.flush().await;
    }
}
