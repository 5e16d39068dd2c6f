//! What publishers put in `data`, so receivers can measure latency and count without
//! trusting the server.
//!
//! The send time is wall-clock microseconds (not `Instant`): children of a
//! `--processes` run are separate processes and only share `CLOCK_REALTIME`. On one
//! machine that clock is the same for every process, so the difference is a latency.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// The body of every load message: `{"t":SENT_US,"p":PUBLISHER,"s":SEQ,"x":"pad"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payload {
    /// Send time, microseconds since the Unix epoch.
    #[serde(rename = "t")]
    pub sent_us: u64,
    /// Global publisher index (stable across child processes).
    #[serde(rename = "p")]
    pub publisher: u32,
    /// 1-based sequence number of this publisher's messages.
    #[serde(rename = "s")]
    pub seq: u64,
}

impl Payload {
    /// JSON text with `pad` filler bytes, so message size can be chosen on the command
    /// line without changing what is measured.
    pub fn encode(&self, pad: &str) -> String {
        format!(
            r#"{{"t":{},"p":{},"s":{},"x":"{pad}"}}"#,
            self.sent_us, self.publisher, self.seq
        )
    }

    pub fn from_value(value: &serde_json::Value) -> Option<Payload> {
        Payload::deserialize(value).ok()
    }
}

/// Filler of `bytes` ASCII characters (no escaping needed).
pub fn padding(bytes: usize) -> String {
    "x".repeat(bytes)
}

/// Wall-clock microseconds since the Unix epoch.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_json() {
        let p = Payload {
            sent_us: 1_700_000_000_000_000,
            publisher: 3,
            seq: 42,
        };
        let text = p.encode(&padding(5));
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(Payload::from_value(&value), Some(p));
        assert_eq!(value["x"], "xxxxx");
    }
}
