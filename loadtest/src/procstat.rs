//! Server cost from `/proc`: resident memory and CPU time of given PIDs.
//!
//! Read from outside the server on purpose: the same numbers for the hub, the relay and
//! Node.js, with no cooperation from any of them.

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    #[error("cannot read /proc/{pid}: {source}")]
    Read { pid: u32, source: std::io::Error },
    #[error("/proc/{pid}/{file} has an unexpected format")]
    Format { pid: u32, file: &'static str },
}

/// One reading of one process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub rss_kib: u64,
    /// utime + stime, seconds.
    pub cpu_secs: f64,
}

/// Clock ticks per second of `/proc/PID/stat`. 100 on every Linux this runs on; asking
/// `sysconf` would need `unsafe` (forbidden here) or a C library binding.
const CLK_TCK: f64 = 100.0;

pub fn sample(pid: u32) -> Result<Sample, ProcError> {
    let read = |file: &str| {
        std::fs::read_to_string(format!("/proc/{pid}/{file}"))
            .map_err(|source| ProcError::Read { pid, source })
    };
    let status = read("status")?;
    let stat = read("stat")?;
    Ok(Sample {
        rss_kib: parse_vmrss(&status).ok_or(ProcError::Format {
            pid,
            file: "status",
        })?,
        cpu_secs: parse_cpu_ticks(&stat).ok_or(ProcError::Format { pid, file: "stat" })? as f64
            / CLK_TCK,
    })
}

fn parse_vmrss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// utime (field 14) + stime (field 15). The command name (field 2) may hold spaces and
/// parentheses, so fields are counted after its last `)`.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state), so field N is at index N - 3.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Readings of one server process around a run, and what they mean per unit of work.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ServerCost {
    pub pid: u32,
    /// Before any socket connected.
    pub before: Sample,
    /// Once every socket had joined.
    pub loaded: Sample,
    /// At the end of the measurement (before sockets closed).
    pub end: Sample,
    /// (RSS end - RSS before) / connected sockets, in bytes: the sockets are all still
    /// open at the end, and after an idle hold the server has settled.
    pub rss_bytes_per_conn: Option<f64>,
    /// CPU seconds from go to end, per million deliveries.
    pub cpu_secs_per_million: Option<f64>,
    /// CPU seconds from go to end.
    pub cpu_secs: f64,
}

impl ServerCost {
    pub fn compute(&mut self, connections: usize, deliveries: u64) {
        if connections > 0 {
            self.rss_bytes_per_conn = Some(
                (self.end.rss_kib as f64 - self.before.rss_kib as f64) * 1024.0
                    / connections as f64,
            );
        }
        self.cpu_secs = self.end.cpu_secs - self.loaded.cpu_secs;
        if deliveries > 0 {
            self.cpu_secs_per_million = Some(self.cpu_secs * 1e6 / deliveries as f64);
        }
    }
}

/// Samples every PID, skipping (with a warning) those that cannot be read.
pub fn sample_all(pids: &[u32]) -> Vec<Sample> {
    pids.iter()
        .map(|&pid| {
            sample(pid).unwrap_or_else(|e| {
                eprintln!("warning: {e}");
                Sample::default()
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_and_stat() {
        let status = "Name:\tteamhub\nVmPeak:\t  9000 kB\nVmRSS:\t   12345 kB\nThreads: 3\n";
        assert_eq!(parse_vmrss(status), Some(12345));
        let stat = "4242 (tokio (rt) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0";
        assert_eq!(parse_cpu_ticks(stat), Some(300));
    }

    #[test]
    fn reads_this_process() {
        let s = sample(std::process::id()).unwrap();
        assert!(s.rss_kib > 0);
    }

    #[test]
    fn per_connection_and_per_million() {
        let mut c = ServerCost {
            before: Sample {
                rss_kib: 1000,
                cpu_secs: 1.0,
            },
            loaded: Sample {
                rss_kib: 2000,
                cpu_secs: 2.0,
            },
            end: Sample {
                rss_kib: 2000,
                cpu_secs: 5.0,
            },
            ..ServerCost::default()
        };
        c.compute(256, 3_000_000);
        assert_eq!(c.rss_bytes_per_conn, Some(4000.0));
        assert_eq!(c.cpu_secs_per_million, Some(1.0));
    }
}
