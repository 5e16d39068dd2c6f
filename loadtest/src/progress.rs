//! Live progress on stderr: sockets, publish and delivery rates, closes.
//!
//! A child of a `--processes` run prints its counters as `progress ...` lines on
//! stdout instead; the parent adds them up and draws the one bar.

use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use tokio::task::JoinHandle;

use crate::engine::Live;

/// A snapshot of the live counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub connected: u64,
    pub failed: u64,
    pub sent: u64,
    pub received: u64,
    pub errors: u64,
    pub closed: u64,
}

impl Counts {
    pub fn of(live: &Live) -> Counts {
        Counts {
            connected: Live::get(&live.connected),
            failed: Live::get(&live.failed),
            sent: Live::get(&live.sent),
            received: Live::get(&live.received),
            errors: Live::get(&live.errors),
            closed: Live::get(&live.closed),
        }
    }

    pub fn add(&mut self, o: &Counts) {
        self.connected += o.connected;
        self.failed += o.failed;
        self.sent += o.sent;
        self.received += o.received;
        self.errors += o.errors;
        self.closed += o.closed;
    }

    /// `progress C F S R E X`, the child-to-parent line.
    pub fn to_line(&self) -> String {
        format!(
            "progress {} {} {} {} {} {}",
            self.connected, self.failed, self.sent, self.received, self.errors, self.closed
        )
    }

    pub fn from_line(line: &str) -> Option<Counts> {
        let mut it = line.strip_prefix("progress ")?.split(' ');
        let mut next = || it.next()?.parse::<u64>().ok();
        Some(Counts {
            connected: next()?,
            failed: next()?,
            sent: next()?,
            received: next()?,
            errors: next()?,
            closed: next()?,
        })
    }
}

/// Where progress goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Display {
    Bar,
    /// `progress` lines on stdout, for a parent process.
    Lines,
    Off,
}

/// Stops the display when dropped.
pub struct Progress {
    task: Option<JoinHandle<()>>,
    bar: Option<ProgressBar>,
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}

pub fn start(
    label: String,
    planned: u64,
    display: Display,
    source: Arc<dyn Fn() -> Counts + Send + Sync>,
) -> Progress {
    match display {
        Display::Off => Progress {
            task: None,
            bar: None,
        },
        Display::Lines => {
            let task = tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(250));
                loop {
                    tick.tick().await;
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "{}", source().to_line());
                    let _ = out.flush();
                }
            });
            Progress {
                task: Some(task),
                bar: None,
            }
        }
        Display::Bar => {
            let bar = ProgressBar::new(planned);
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} {prefix} [{elapsed_precise}] sockets {pos}/{len} {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.set_prefix(label);
            let b = bar.clone();
            let task = tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(250));
                let mut last = (Instant::now(), Counts::default());
                loop {
                    tick.tick().await;
                    let now = Instant::now();
                    let c = source();
                    let dt = now.duration_since(last.0).as_secs_f64().max(1e-3);
                    let send_rate = (c.sent - last.1.sent.min(c.sent)) as f64 / dt;
                    let recv_rate = (c.received - last.1.received.min(c.received)) as f64 / dt;
                    b.set_position(c.connected);
                    b.set_message(format!(
                        "(failed {}) | sent {} ({:.0}/s) | delivered {} ({:.0}/s) | errors {} | closed {}",
                        c.failed, c.sent, send_rate, c.received, recv_rate, c.errors, c.closed
                    ));
                    b.tick();
                    last = (now, c);
                }
            });
            Progress {
                task: Some(task),
                bar: Some(bar),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip() {
        let c = Counts {
            connected: 1,
            failed: 2,
            sent: 3,
            received: 4,
            errors: 5,
            closed: 6,
        };
        assert_eq!(Counts::from_line(&c.to_line()), Some(c));
        assert_eq!(Counts::from_line("progress 1 2"), None);
        assert_eq!(Counts::from_line("ready"), None);
    }
}
