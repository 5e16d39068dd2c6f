//! Frames of `/ws`: one JSON object per text frame.

pub mod client;
pub mod server;

/// `serde_json::value::RawValue` compared by its text, so frames can derive `PartialEq`.
pub(crate) fn raw_eq(a: &serde_json::value::RawValue, b: &serde_json::value::RawValue) -> bool {
    a.get() == b.get()
}
