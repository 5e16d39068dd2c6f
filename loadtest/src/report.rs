//! The result of a run: JSON for machines (and for merging children), a table for
//! people.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::accounting::Tally;
use crate::engine::LoadResult;
use crate::latency::{HistogramError, HistogramReport, Latency, Summary};
use crate::procstat::ServerCost;

/// A named pass/fail check beyond delivery accounting (presence after churn, ...).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

/// One rate of a ramp.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Step {
    pub rate_msgs_per_s: f64,
    pub deliveries_per_s: f64,
    pub deliveries: Tally,
    pub latency_us: Summary,
    pub held: bool,
    pub sockets_connected: usize,
    pub closes: BTreeMap<String, u64>,
    pub server_cpu_secs_per_million: Option<f64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Report {
    pub scenario: String,
    pub server_kind: String,
    pub label: Option<String>,
    /// Seconds since the Unix epoch at the start.
    pub started_unix: u64,
    pub command: String,
    pub processes: usize,
    pub teams: usize,
    pub publishers_per_team: usize,
    pub target_rate_msgs_per_s: f64,
    pub duration_s: f64,
    pub sockets_planned: usize,
    pub sockets_connected: usize,
    pub sockets_failed: usize,
    pub setup_errors: Vec<String>,
    pub publish_secs: f64,
    pub measured_secs: f64,
    pub sent: u64,
    pub acked: u64,
    pub publish_errors: u64,
    pub deliveries: Tally,
    /// Distinct expected deliveries per second of publishing.
    pub deliveries_per_s: f64,
    pub latency_us: HistogramReport,
    pub connect_us: HistogramReport,
    pub closes: BTreeMap<String, u64>,
    pub servers: Vec<ServerCost>,
    pub steps: Vec<Step>,
    pub highest_held: Option<Step>,
    pub checks: Vec<Check>,
    pub notes: Vec<String>,
    /// Per client, what it saw (chaos).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clients: Vec<ClientOutcome>,
    /// Publishes may be refused (chaos: a node or Redis is down); a refused publish was
    /// not acknowledged, so it is not owed to anyone.
    #[serde(default)]
    pub publish_errors_expected: bool,
}

/// One client of a chaos run: whether it got every offset of its team, or was told
/// it could not (`recovered: false`), and whether anything went missing silently.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ClientOutcome {
    pub client: usize,
    pub team: String,
    pub reconnects: u64,
    pub recovered: u64,
    /// Rejoins answered `recovered: false` (a new epoch, or history gone).
    pub told_unrecovered: u64,
    pub received: u64,
    /// Offsets missing without a `recovered: false` to say so.
    pub lost: u64,
    pub duplicates: u64,
    pub gave_up: Option<String>,
}

impl ClientOutcome {
    /// Nothing went missing or came twice without a `recovered: false` to say so.
    pub fn clean(&self) -> bool {
        self.gave_up.is_none() && self.lost == 0 && self.duplicates == 0
    }

    /// `every offset`, `told recovered: false`, or what went wrong.
    pub fn verdict(&self) -> String {
        match (&self.gave_up, self.clean(), self.told_unrecovered) {
            (Some(e), ..) => format!("gave up: {e}"),
            (None, true, 0) => "every offset".into(),
            (None, true, n) => format!("told recovered: false ({n}x), nothing else missing"),
            (None, false, _) => format!("LOST {}, duplicated {}", self.lost, self.duplicates),
        }
    }
}

impl Report {
    /// Fills the measured part from one process's result.
    pub fn absorb(&mut self, r: &LoadResult) {
        self.sockets_planned = r.planned;
        self.sockets_connected = r.connected;
        self.sockets_failed = r.failed;
        self.setup_errors = r.setup_errors.clone();
        self.publish_secs = r.publish_secs;
        self.measured_secs = r.measured_secs;
        self.sent = r.sent;
        self.acked = r.acked;
        self.publish_errors = r.publish_errors;
        self.deliveries = r.tally;
        self.latency_us = HistogramReport::from(&r.latency);
        self.connect_us = HistogramReport::from(&r.connect);
        self.closes = r.closes.clone();
        self.update_rate();
    }

    /// Takes the measured part (sockets, publishes, deliveries, histograms, closes,
    /// server costs) of another report of the same shape: a ramp's totals are those of
    /// one of its steps.
    pub fn take_measured(&mut self, step: &Report) {
        self.sockets_planned = step.sockets_planned;
        self.sockets_connected = step.sockets_connected;
        self.sockets_failed = step.sockets_failed;
        self.setup_errors = step.setup_errors.clone();
        self.publish_secs = step.publish_secs;
        self.measured_secs = step.measured_secs;
        self.sent = step.sent;
        self.acked = step.acked;
        self.publish_errors = step.publish_errors;
        self.deliveries = step.deliveries;
        self.deliveries_per_s = step.deliveries_per_s;
        self.latency_us = step.latency_us.clone();
        self.connect_us = step.connect_us.clone();
        self.closes = step.closes.clone();
        self.servers = step.servers.clone();
    }

    fn update_rate(&mut self) {
        self.deliveries_per_s = if self.publish_secs > 0.0 {
            self.deliveries.received as f64 / self.publish_secs
        } else {
            0.0
        };
    }

    /// Adds a child's report (same run, other sockets): counts add, histograms merge,
    /// times take the longest.
    pub fn merge_child(&mut self, child: &Report) -> Result<(), HistogramError> {
        self.sockets_planned += child.sockets_planned;
        self.sockets_connected += child.sockets_connected;
        self.sockets_failed += child.sockets_failed;
        for e in &child.setup_errors {
            if self.setup_errors.len() < 5 {
                self.setup_errors.push(e.clone());
            }
        }
        self.publish_secs = self.publish_secs.max(child.publish_secs);
        self.measured_secs = self.measured_secs.max(child.measured_secs);
        self.sent += child.sent;
        self.acked += child.acked;
        self.publish_errors += child.publish_errors;
        self.deliveries.add(&child.deliveries);
        for (code, n) in &child.closes {
            *self.closes.entry(code.clone()).or_default() += n;
        }
        for (mine, theirs) in [
            (&mut self.latency_us, &child.latency_us),
            (&mut self.connect_us, &child.connect_us),
        ] {
            let mut merged: Latency = mine.latency()?;
            merged.merge(&theirs.latency()?)?;
            *mine = HistogramReport::from(&merged);
        }
        self.update_rate();
        Ok(())
    }

    /// Whether anything went wrong that makes the figures suspect.
    pub fn ok(&self) -> bool {
        self.sockets_failed == 0
            && self.deliveries.is_exact()
            && (self.publish_errors == 0 || self.publish_errors_expected)
            && self.checks.iter().all(|c| c.ok)
    }

    /// The human summary printed on stdout.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let label = self.label.as_deref().unwrap_or("");
        let _ = writeln!(
            s,
            "== {} against {} {label}",
            self.scenario, self.server_kind
        );
        let row = |s: &mut String, k: &str, v: String| {
            let _ = writeln!(s, "  {k:<28} {v}");
        };
        row(
            &mut s,
            "sockets",
            format!(
                "{} connected / {} planned ({} failed), {} teams, {} process(es)",
                self.sockets_connected,
                self.sockets_planned,
                self.sockets_failed,
                self.teams,
                self.processes
            ),
        );
        for e in &self.setup_errors {
            row(&mut s, "  setup error", e.clone());
        }
        let c = &self.connect_us.summary;
        if c.count > 0 {
            row(
                &mut s,
                "connect+join (ms)",
                format!(
                    "p50 {} p90 {} p99 {} p99.9 {} max {}",
                    ms(c.p50),
                    ms(c.p90),
                    ms(c.p99),
                    ms(c.p999),
                    ms(c.max)
                ),
            );
        }
        if self.sent > 0 || self.target_rate_msgs_per_s > 0.0 {
            row(
                &mut s,
                "published",
                format!(
                    "{} sent, {} acked, {} errors, target {} msg/s over {:.1}s",
                    self.sent,
                    self.acked,
                    self.publish_errors,
                    self.target_rate_msgs_per_s,
                    self.publish_secs
                ),
            );
            let d = &self.deliveries;
            row(
                &mut s,
                "deliveries",
                format!(
                    "{} expected, {} received, {} lost, {} dup, {} out-of-order, {} unexpected",
                    d.expected, d.received, d.lost, d.duplicates, d.out_of_order, d.unexpected
                ),
            );
            row(
                &mut s,
                "delivery rate",
                format!("{:.0} deliveries/s", self.deliveries_per_s),
            );
            let l = &self.latency_us.summary;
            row(
                &mut s,
                "latency (ms)",
                format!(
                    "p50 {} p90 {} p99 {} p99.9 {} max {} (n={})",
                    ms(l.p50),
                    ms(l.p90),
                    ms(l.p99),
                    ms(l.p999),
                    ms(l.max),
                    l.count
                ),
            );
        }
        if !self.closes.is_empty() {
            row(&mut s, "server closes", format!("{:?}", self.closes));
        }
        for srv in &self.servers {
            let per_conn = srv
                .rss_bytes_per_conn
                .map_or("-".into(), |b| format!("{:.0} B/conn", b));
            let per_m = srv
                .cpu_secs_per_million
                .map_or("-".into(), |c| format!("{c:.2} CPU s/M deliveries"));
            row(
                &mut s,
                &format!("server pid {}", srv.pid),
                format!(
                    "RSS {} -> {} -> {} KiB, {per_conn}, CPU {:.2}s, {per_m}",
                    srv.before.rss_kib, srv.loaded.rss_kib, srv.end.rss_kib, srv.cpu_secs
                ),
            );
        }
        for st in &self.steps {
            let _ = writeln!(
                s,
                "  step {:>8.0} msg/s: {:>9.0} deliveries/s, p50 {} p99 {} max {} ms, lost {}, dup {}, ooo {}, closes {:?} -> {}",
                st.rate_msgs_per_s,
                st.deliveries_per_s,
                ms(st.latency_us.p50),
                ms(st.latency_us.p99),
                ms(st.latency_us.max),
                st.deliveries.lost,
                st.deliveries.duplicates,
                st.deliveries.out_of_order,
                st.closes,
                if st.held { "held" } else { "FAILED" }
            );
        }
        if !self.steps.is_empty() {
            let v = self.highest_held.as_ref().map_or("none".into(), |h| {
                format!(
                    "{:.0} msg/s = {:.0} deliveries/s",
                    h.rate_msgs_per_s, h.deliveries_per_s
                )
            });
            row(&mut s, "highest step held", v);
        }
        for c in &self.checks {
            row(
                &mut s,
                &format!("check {}", c.name),
                format!("{} {}", if c.ok { "ok" } else { "FAILED" }, c.detail),
            );
        }
        for n in &self.notes {
            row(&mut s, "note", n.clone());
        }
        for c in &self.clients {
            row(
                &mut s,
                &format!("client {} ({})", c.client, c.team),
                format!(
                    "{}: {} received, {} reconnects, {} recovered",
                    c.verdict(),
                    c.received,
                    c.reconnects,
                    c.recovered
                ),
            );
        }
        s
    }
}

/// Microseconds as milliseconds with three decimals.
pub fn ms(us: u64) -> String {
    format!("{:.3}", us as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn child(received: u64, lat: &[u64]) -> Report {
        let mut l = Latency::new();
        for &v in lat {
            l.record(v);
        }
        Report {
            sockets_planned: 10,
            sockets_connected: 10,
            publish_secs: 2.0,
            deliveries: Tally {
                expected: received,
                received,
                ..Tally::default()
            },
            latency_us: HistogramReport::from(&l),
            ..Report::default()
        }
    }

    #[test]
    fn children_merge_into_one_report() {
        let mut parent = Report::default();
        parent.merge_child(&child(100, &[100, 200])).unwrap();
        parent.merge_child(&child(50, &[300, 400])).unwrap();
        assert_eq!(parent.sockets_connected, 20);
        assert_eq!(parent.deliveries.received, 150);
        assert_eq!(parent.deliveries_per_s, 75.0);
        assert_eq!(parent.latency_us.summary.count, 4);
        assert!(parent.latency_us.summary.max >= 400);
        assert!(parent.ok());
        // Survives its own JSON.
        let json = serde_json::to_string(&parent).unwrap();
        let back: Report = serde_json::from_str(&json).unwrap();
        assert_eq!(back.latency_us.summary, parent.latency_us.summary);
    }
}
