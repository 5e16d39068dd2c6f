//! Latency and connect-time histograms: HDR, microseconds, mergeable across processes.
//!
//! Children of a `--processes` run send their histograms to the parent as HdrHistogram
//! V2 blobs in base64, so the merged percentiles are exact, not averages of
//! percentiles.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer as _, V2Serializer};
use serde::{Deserialize, Serialize};

/// Largest value kept: one hour in microseconds. Larger values are clamped to it, so a
/// stuck message still shows up as a huge max rather than vanishing.
const HIGHEST_US: u64 = 3_600_000_000;

#[derive(Debug, thiserror::Error)]
pub enum HistogramError {
    #[error("histogram is not valid base64: {0}")]
    Base64(#[from] base64::DecodeError),
    #[error("histogram blob is not HdrHistogram V2: {0}")]
    Decode(String),
    #[error("histograms cannot be merged: {0}")]
    Merge(String),
}

/// A latency histogram in microseconds, 3 significant digits.
#[derive(Debug, Clone)]
pub struct Latency {
    hist: Histogram<u64>,
}

impl Default for Latency {
    fn default() -> Self {
        Latency::new()
    }
}

impl Latency {
    pub fn new() -> Latency {
        Latency {
            hist: Histogram::new_with_bounds(1, HIGHEST_US, 3).expect("static bounds are valid"),
        }
    }

    pub fn record(&mut self, us: u64) {
        self.hist.saturating_record(us.clamp(1, HIGHEST_US));
    }

    pub fn len(&self) -> u64 {
        self.hist.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hist.is_empty()
    }

    pub fn merge(&mut self, other: &Latency) -> Result<(), HistogramError> {
        self.hist
            .add(&other.hist)
            .map_err(|e| HistogramError::Merge(format!("{e:?}")))
    }

    /// The value at `q` (0..=1), in microseconds.
    pub fn quantile(&self, q: f64) -> u64 {
        self.hist.value_at_quantile(q)
    }

    pub fn summary(&self) -> Summary {
        Summary {
            count: self.hist.len(),
            min: self.hist.min(),
            p50: self.quantile(0.50),
            p90: self.quantile(0.90),
            p99: self.quantile(0.99),
            p999: self.quantile(0.999),
            max: self.hist.max(),
            mean: self.hist.mean(),
        }
    }

    /// (percentile, microseconds) points for a percentile-spectrum chart.
    pub fn spectrum(&self) -> Vec<(f64, u64)> {
        const PERCENTILES: [f64; 12] = [
            0.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99, 100.0,
        ];
        if self.is_empty() {
            return Vec::new();
        }
        PERCENTILES
            .iter()
            .map(|&p| (p, self.quantile(p / 100.0)))
            .collect()
    }

    /// HdrHistogram V2 (uncompressed), base64.
    pub fn to_base64(&self) -> String {
        let mut bytes = Vec::new();
        V2Serializer::new()
            .serialize(&self.hist, &mut bytes)
            .expect("serialising into a Vec cannot fail");
        STANDARD.encode(bytes)
    }

    pub fn from_base64(text: &str) -> Result<Latency, HistogramError> {
        let bytes = STANDARD.decode(text)?;
        let hist: Histogram<u64> = Deserializer::new()
            .deserialize(&mut bytes.as_slice())
            .map_err(|e| HistogramError::Decode(format!("{e:?}")))?;
        let mut out = Latency::new();
        out.hist
            .add(&hist)
            .map_err(|e| HistogramError::Merge(format!("{e:?}")))?;
        Ok(out)
    }
}

/// Percentiles in microseconds, as reported.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub count: u64,
    pub min: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub mean: f64,
}

/// A histogram as it travels in a JSON report: the summary for people, the blob for
/// merging.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HistogramReport {
    pub summary: Summary,
    pub hdr_v2_base64: String,
}

impl From<&Latency> for HistogramReport {
    fn from(l: &Latency) -> Self {
        HistogramReport {
            summary: l.summary(),
            hdr_v2_base64: l.to_base64(),
        }
    }
}

impl HistogramReport {
    pub fn latency(&self) -> Result<Latency, HistogramError> {
        if self.hdr_v2_base64.is_empty() {
            return Ok(Latency::new());
        }
        Latency::from_base64(&self.hdr_v2_base64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_two_halves_gives_the_whole() {
        let (mut a, mut b, mut whole) = (Latency::new(), Latency::new(), Latency::new());
        for v in 1..=1000u64 {
            if v % 2 == 0 { &mut a } else { &mut b }.record(v);
            whole.record(v);
        }
        a.merge(&b).unwrap();
        assert_eq!(a.summary(), whole.summary());
        assert_eq!(a.summary().count, 1000);
        assert_eq!(a.quantile(0.5), whole.quantile(0.5));
    }

    #[test]
    fn base64_round_trip_keeps_every_count() {
        let mut l = Latency::new();
        for v in [1, 5, 5, 250, 12_000, 3_000_000] {
            l.record(v);
        }
        let back = Latency::from_base64(&l.to_base64()).unwrap();
        assert_eq!(back.summary(), l.summary());
    }

    #[test]
    fn merging_through_reports_is_exact() {
        let mut parts = Vec::new();
        let mut whole = Latency::new();
        for child in 0..3u64 {
            let mut l = Latency::new();
            for v in 0..500u64 {
                l.record(child * 1000 + v + 1);
                whole.record(child * 1000 + v + 1);
            }
            parts.push(HistogramReport::from(&l));
        }
        let mut merged = Latency::new();
        for p in &parts {
            merged.merge(&p.latency().unwrap()).unwrap();
        }
        assert_eq!(merged.summary(), whole.summary());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(Latency::from_base64("not base64!").is_err());
        assert!(Latency::from_base64("AAAA").is_err());
    }

    #[test]
    fn huge_values_are_clamped_not_dropped() {
        let mut l = Latency::new();
        l.record(u64::MAX);
        assert_eq!(l.len(), 1);
        assert!(l.summary().max >= HIGHEST_US);
    }
}
