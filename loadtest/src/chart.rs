//! Latency charts as hand-written SVG: no fonts, no system libraries, opens in any
//! browser and renders on GitHub.

use std::fmt::Write as _;

use crate::latency::Latency;
use crate::report::Report;

#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

#[derive(Debug, Clone)]
pub struct LineChart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    /// Tick positions (in x units) with their labels.
    pub x_ticks: Vec<(f64, String)>,
    /// Logarithmic y axis (latencies span orders of magnitude).
    pub y_log: bool,
    pub series: Vec<Series>,
}

const W: f64 = 760.0;
const H: f64 = 440.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 170.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 60.0;
const COLOURS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
];

impl LineChart {
    pub fn render(&self) -> String {
        let pts = self.series.iter().flat_map(|s| s.points.iter());
        let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
        for &(x, y) in pts {
            x0 = x0.min(x);
            x1 = x1.max(x);
            y0 = y0.min(y);
            y1 = y1.max(y);
        }
        for (x, _) in &self.x_ticks {
            x0 = x0.min(*x);
            x1 = x1.max(*x);
        }
        if x0 > x1 {
            (x0, x1, y0, y1) = (0.0, 1.0, 0.001, 1.0);
        }
        if x1 <= x0 {
            x1 = x0 + 1.0;
        }
        let ty = |v: f64| if self.y_log { v.max(1e-3).log10() } else { v };
        let (ly0, ly1) = if self.y_log {
            (ty(y0).floor(), ty(y1).ceil().max(ty(y0).floor() + 1.0))
        } else {
            (0.0, if y1 > 0.0 { y1 * 1.1 } else { 1.0 })
        };
        let pw = W - LEFT - RIGHT;
        let ph = H - TOP - BOTTOM;
        let sx = |x: f64| LEFT + (x - x0) / (x1 - x0) * pw;
        let sy = |y: f64| TOP + ph - (ty(y) - ly0) / (ly1 - ly0) * ph;
        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
        let _ = writeln!(
            s,
            r#"<text x="{}" y="22" font-size="15" text-anchor="middle">{}</text>"#,
            LEFT + pw / 2.0,
            esc(&self.title)
        );
        // Y grid: decades on a log axis, five steps on a linear one.
        let y_ticks: Vec<f64> = if self.y_log {
            (ly0 as i32..=ly1 as i32).map(|e| 10f64.powi(e)).collect()
        } else {
            (0..=5).map(|i| ly1 * i as f64 / 5.0).collect()
        };
        for v in y_ticks {
            let y = sy(v);
            let _ = writeln!(
                s,
                r##"<line x1="{LEFT}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
                LEFT + pw,
                LEFT - 6.0,
                y + 4.0,
                fmt_num(v)
            );
        }
        for (x, label) in &self.x_ticks {
            let px = sx(*x);
            let _ = writeln!(
                s,
                r##"<line x1="{px:.1}" y1="{TOP}" x2="{px:.1}" y2="{}" stroke="#eee"/><text x="{px:.1}" y="{}" text-anchor="middle">{}</text>"##,
                TOP + ph,
                TOP + ph + 16.0,
                esc(label)
            );
        }
        let _ = writeln!(
            s,
            r##"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>"##
        );
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
            LEFT + pw / 2.0,
            H - 15.0,
            esc(&self.x_label)
        );
        let _ = writeln!(
            s,
            r#"<text x="16" y="{}" text-anchor="middle" transform="rotate(-90 16 {})">{}</text>"#,
            TOP + ph / 2.0,
            TOP + ph / 2.0,
            esc(&self.y_label)
        );
        for (i, series) in self.series.iter().enumerate() {
            let colour = COLOURS[i % COLOURS.len()];
            let path: Vec<String> = series
                .points
                .iter()
                .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
                .collect();
            let _ = writeln!(
                s,
                r#"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"/>"#,
                path.join(" ")
            );
            for &(x, y) in &series.points {
                let _ = writeln!(
                    s,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{colour}"/>"#,
                    sx(x),
                    sy(y)
                );
            }
            let ly = TOP + 14.0 + 18.0 * i as f64;
            let lx = LEFT + pw + 12.0;
            let _ = writeln!(
                s,
                r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{colour}" stroke-width="3"/><text x="{}" y="{}">{}</text>"#,
                lx + 18.0,
                lx + 24.0,
                ly + 4.0,
                esc(&series.name)
            );
        }
        s.push_str("</svg>\n");
        s
    }
}

/// x position of a percentile on the usual "number of nines" axis.
fn nines(p: f64) -> f64 {
    -(1.0 - (p / 100.0).min(0.99999)).log10()
}

/// The percentile spectrum of one or more latency histograms.
pub fn percentile_chart(title: &str, series: &[(String, &Latency)]) -> LineChart {
    LineChart {
        title: title.to_owned(),
        x_label: "percentile".into(),
        y_label: "latency (ms, log scale)".into(),
        x_ticks: [0.0, 90.0, 99.0, 99.9, 99.99]
            .iter()
            .map(|&p| (nines(p), format!("{p}")))
            .collect(),
        y_log: true,
        series: series
            .iter()
            .map(|(name, l)| Series {
                name: name.clone(),
                points: l
                    .spectrum()
                    .into_iter()
                    .map(|(p, us)| (nines(p), us as f64 / 1000.0))
                    .collect(),
            })
            .collect(),
    }
}

/// p50 and p99 against delivery rate for each ramp step.
pub fn ramp_chart(report: &Report) -> LineChart {
    let rate_x = |r: f64| r.max(1.0).log2();
    let pick = |f: fn(&crate::latency::Summary) -> u64| -> Vec<(f64, f64)> {
        report
            .steps
            .iter()
            .map(|s| (rate_x(s.deliveries_per_s), f(&s.latency_us) as f64 / 1000.0))
            .collect()
    };
    LineChart {
        title: format!("ramp against {}", report.server_kind),
        x_label: "deliveries per second (log scale)".into(),
        y_label: "latency (ms, log scale)".into(),
        x_ticks: report
            .steps
            .iter()
            .map(|s| (rate_x(s.deliveries_per_s), fmt_num(s.deliveries_per_s)))
            .collect(),
        y_log: true,
        series: vec![
            Series {
                name: "p50".into(),
                points: pick(|l| l.p50),
            },
            Series {
                name: "p99".into(),
                points: pick(|l| l.p99),
            },
            Series {
                name: "max".into(),
                points: pick(|l| l.max),
            },
        ],
    }
}

fn fmt_num(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.0}k", v / 1e3)
    } else if v >= 1.0 || v == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v}")
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_a_well_formed_svg() {
        let mut l = Latency::new();
        for v in 1..1000 {
            l.record(v * 10);
        }
        let svg = percentile_chart("t <1>", &[("hub".into(), &l)]).render();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("t &lt;1&gt;"));
        assert_eq!(svg.matches("<polyline").count(), 1);
    }

    #[test]
    fn empty_charts_still_render() {
        let svg = percentile_chart("empty", &[]).render();
        assert!(svg.contains("</svg>"));
    }
}
