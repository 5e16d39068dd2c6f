//! Entity tags of the pattern library: a pattern's version in quotes, `"<version>"`.
//!
//! Only the forms the contract uses are accepted; anything else in a conditional header
//! is a `bad_request` (400), never ignored, so a client's typo cannot turn a guarded
//! write into an unguarded one.

use axum::http::{HeaderMap, HeaderValue, header};
use teamhub_protocol::ErrorCode;

use super::ApiError;

/// The `ETag` of a version.
pub fn of(version: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\"")).expect("digits and quotes are a valid header")
}

fn bad(header: &str, value: &str) -> ApiError {
    ApiError::new(
        ErrorCode::BadRequest,
        format!(
            "malformed {header}: {value:?}; expected \"<version>\" (a quoted unsigned integer)"
        ),
    )
}

/// A strong tag `"N"`.
fn strong(tag: &str) -> Option<u64> {
    let digits = tag.strip_prefix('"')?.strip_suffix('"')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn text<'a>(
    headers: &'a HeaderMap,
    name: &header::HeaderName,
) -> Result<Option<&'a str>, ApiError> {
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            format!("send one {name} header"),
        ));
    }
    first
        .to_str()
        .map(|s| Some(s.trim()))
        .map_err(|_| bad(name.as_str(), "<not ASCII>"))
}

/// What a write is conditioned on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// `If-None-Match: *`
    Absent,
    /// `If-Match: "N"`
    Version(u64),
}

/// The precondition of a PUT: exactly one of `If-None-Match: *` and `If-Match: "N"`.
/// `None` when neither is present (the caller answers 428).
pub fn write_condition(headers: &HeaderMap) -> Result<Option<Condition>, ApiError> {
    let if_match = text(headers, &header::IF_MATCH)?;
    let if_none = text(headers, &header::IF_NONE_MATCH)?;
    match (if_match, if_none) {
        (Some(_), Some(_)) => Err(ApiError::new(
            ErrorCode::BadRequest,
            "send If-Match (update) or If-None-Match: * (create), not both",
        )),
        (Some(m), None) => strong(m)
            .map(|v| Some(Condition::Version(v)))
            .ok_or_else(|| bad("If-Match", m)),
        (None, Some("*")) => Ok(Some(Condition::Absent)),
        (None, Some(other)) => Err(ApiError::new(
            ErrorCode::BadRequest,
            format!("If-None-Match on a write must be *, got {other:?}"),
        )),
        (None, None) => Ok(None),
    }
}

/// The version a DELETE is conditioned on (`If-Match: "N"`); `None` without the header.
pub fn if_match(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    match text(headers, &header::IF_MATCH)? {
        None => Ok(None),
        Some(m) => strong(m).map(Some).ok_or_else(|| bad("If-Match", m)),
    }
}

/// Whether a GET's `If-None-Match` (`*` or a list of tags, weak ones allowed, as the
/// weak comparison of RFC 9110 does) matches `version`: then the answer is 304.
pub fn none_match(headers: &HeaderMap, version: u64) -> Result<bool, ApiError> {
    let Some(value) = text(headers, &header::IF_NONE_MATCH)? else {
        return Ok(false);
    };
    if value == "*" {
        return Ok(true);
    }
    let mut matched = false;
    for tag in value.split(',').map(str::trim) {
        let tag = tag.strip_prefix("W/").unwrap_or(tag);
        match strong(tag) {
            Some(v) => matched |= v == version,
            None => return Err(bad("If-None-Match", value)),
        }
    }
    Ok(matched)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn conditions() {
        assert_eq!(write_condition(&headers(&[])).unwrap(), None);
        assert_eq!(
            write_condition(&headers(&[("if-none-match", "*")])).unwrap(),
            Some(Condition::Absent)
        );
        assert_eq!(
            write_condition(&headers(&[("if-match", "\"12\"")])).unwrap(),
            Some(Condition::Version(12))
        );
        for bad in [
            "12",
            "\"\"",
            "\"-1\"",
            "W/\"1\"",
            "\"1\", \"2\"",
            "*",
            "\"x\"",
        ] {
            assert!(
                write_condition(&headers(&[("if-match", bad)])).is_err(),
                "{bad}"
            );
        }
        assert!(write_condition(&headers(&[("if-none-match", "\"1\"")])).is_err());
        assert!(
            write_condition(&headers(&[("if-match", "\"1\""), ("if-none-match", "*")])).is_err()
        );
        assert!(none_match(&headers(&[("if-none-match", "\"3\"")]), 3).unwrap());
        assert!(none_match(&headers(&[("if-none-match", "W/\"1\", \"3\"")]), 3).unwrap());
        assert!(!none_match(&headers(&[("if-none-match", "\"2\"")]), 3).unwrap());
        assert!(none_match(&headers(&[("if-none-match", "*")]), 3).unwrap());
        assert!(none_match(&headers(&[("if-none-match", "3")]), 3).is_err());
        assert_eq!(of(7), "\"7\"");
    }

    mod fuzz {
        use proptest::prelude::*;

        use super::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            /// Any header bytes: a condition, or a 400, never a panic or a silently
            /// unguarded write.
            #[test]
            fn any_conditional_header_is_read_or_refused(
                match_bytes in prop::option::of(prop::collection::vec(any::<u8>(), 0..40)),
                none_bytes in prop::option::of(prop::collection::vec(any::<u8>(), 0..40)),
                version in any::<u64>(),
            ) {
                let mut h = HeaderMap::new();
                for (name, value) in [(header::IF_MATCH, &match_bytes), (header::IF_NONE_MATCH, &none_bytes)] {
                    if let Some(v) = value.as_ref().and_then(|v| HeaderValue::from_bytes(v).ok()) {
                        h.insert(name, v);
                    }
                }
                for r in [write_condition(&h).map(|_| ()), if_match(&h).map(|_| ()), none_match(&h, version).map(|_| ())] {
                    if let Err(e) = r {
                        prop_assert_eq!(e.0.code, ErrorCode::BadRequest);
                    }
                }
                if h.contains_key(header::IF_MATCH) && !h.contains_key(header::IF_NONE_MATCH) {
                    // A present If-Match is either that version or refused.
                    prop_assert!(!matches!(write_condition(&h), Ok(None)));
                }
            }

            #[test]
            fn tags_round_trip(version in any::<u64>()) {
                let mut h = HeaderMap::new();
                h.insert(header::IF_MATCH, of(version));
                prop_assert_eq!(if_match(&h).unwrap(), Some(version));
            }
        }
    }
}
