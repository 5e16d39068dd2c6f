//! JSON payloads kept verbatim (`data`, pattern `content`), checked once where they
//! enter.
//!
//! The hub forwards a payload's bytes without re-encoding them, so whatever it accepts
//! every receiver must be able to decode. serde_json checks a raw value's syntax but
//! not its `\u` escapes' pairing, and the JSON grammar allows an unpaired UTF-16
//! surrogate (`"\ud800"`), which strict decoders (serde_json's own `Value`, Go's, Java's)
//! refuse or mangle: one such payload would break its team's clients. It is refused at
//! the edge instead, with the contract's `bad_request`.

use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

/// Why a payload was refused.
pub const UNPAIRED_SURROGATE: &str =
    "JSON has an unpaired UTF-16 surrogate escape (\\ud800-\\udfff): receivers cannot decode it";

/// Deserializes a raw JSON value and refuses unpaired surrogate escapes.
pub fn strict_raw<'de, D: Deserializer<'de>>(d: D) -> Result<Box<RawValue>, D::Error> {
    let raw = Box::<RawValue>::deserialize(d)?;
    check_escapes(raw.get()).map_err(serde::de::Error::custom)?;
    Ok(raw)
}

/// As [`strict_raw`], for an optional field.
pub fn strict_raw_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Box<RawValue>>, D::Error> {
    let raw = Option::<Box<RawValue>>::deserialize(d)?;
    if let Some(raw) = &raw {
        check_escapes(raw.get()).map_err(serde::de::Error::custom)?;
    }
    Ok(raw)
}

/// Checks that every `\u` escape of a syntactically valid JSON text that encodes a
/// surrogate is half of a high-low pair.
pub fn check_escapes(json: &str) -> Result<(), &'static str> {
    if !json.contains("\\u") {
        return Ok(());
    }
    let bytes = json.as_bytes();
    let unit = |at: usize| -> Option<u16> {
        let hex = bytes.get(at..at + 4)?;
        u16::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()
    };
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            i += 1;
            continue;
        }
        if bytes.get(i + 1) != Some(&b'u') {
            i += 2; // `\"`, `\\`, `\n`...: the escaped character is not a `u` escape
            continue;
        }
        let Some(u) = unit(i + 2) else {
            return Err(UNPAIRED_SURROGATE);
        };
        match u {
            0xD800..=0xDBFF => {
                let low = (bytes.get(i + 6..i + 8) == Some(b"\\u"))
                    .then(|| unit(i + 8))
                    .flatten();
                if !matches!(low, Some(0xDC00..=0xDFFF)) {
                    return Err(UNPAIRED_SURROGATE);
                }
                i += 12;
            }
            0xDC00..=0xDFFF => return Err(UNPAIRED_SURROGATE),
            _ => i += 6,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unpaired_surrogates_are_refused() {
        for ok in [
            r#"{"a":1}"#,
            r#""\u00e9""#,
            r#""\ud83d\ude00""#,
            r#""\\ud800""#,
            r#""\\\ud83d\ude00x""#,
            r#"["\n\u0041"]"#,
        ] {
            assert_eq!(check_escapes(ok), Ok(()), "{ok}");
        }
        for bad in [
            r#""\ud800""#,
            r#""\udc00""#,
            r#""\ud800\u0041""#,
            r#""\ude00\ud83d""#,
            r#""x\\\ud800""#,
            r#""\ud83d""#,
        ] {
            assert!(check_escapes(bad).is_err(), "{bad}");
        }
    }
}
