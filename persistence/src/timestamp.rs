//! The one text form of activity timestamps: `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
//!
//! SQLite has no timestamp type, and reporting tools read its `created_at` column as
//! text, so the encoding is fixed here once: UTC, always 27 characters, microseconds,
//! a literal `Z`. Fixed width makes text order equal time order (so `ORDER BY created_at`
//! and range filters work on the index), and it is valid RFC 3339, so the same string
//! serves the JSON `created_at` of an activity row. Microseconds are what Postgres
//! `timestamptz` stores too, so both backends round-trip the same value.

use time::format_description::BorrowedFormatItem;
use time::macros::format_description;
use time::{Duration, OffsetDateTime, PrimitiveDateTime, UtcOffset};

const FORMAT: &[BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");

/// A time that has no fixed-width text form (before year 0).
#[derive(Debug, thiserror::Error)]
#[error("timestamp {0} is outside the storable range (years 0000 to 9999)")]
pub(crate) struct OutOfRange(pub(crate) OffsetDateTime);

/// Converts to UTC and drops sub-microsecond precision, which no backend stores.
pub(crate) fn normalize(t: OffsetDateTime) -> OffsetDateTime {
    let t = t.to_offset(UtcOffset::UTC);
    t - Duration::nanoseconds(i64::from(t.nanosecond() % 1_000))
}

/// Formats `t` (normalized first) as `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
pub(crate) fn format(t: OffsetDateTime) -> Result<String, OutOfRange> {
    let t = normalize(t);
    if t.year() < 0 {
        return Err(OutOfRange(t));
    }
    // Formatting into a String with a description that only uses date and time parts
    // of a value that has them cannot fail; map it anyway rather than panic.
    t.format(FORMAT).map_err(|_| OutOfRange(t))
}

/// Parses the text written by [`format`].
pub(crate) fn parse(s: &str) -> Result<OffsetDateTime, time::error::Parse> {
    Ok(PrimitiveDateTime::parse(s, FORMAT)?.assume_utc())
}

/// Serde adapter writing the fixed-width form (used by `ActivityRow::created_at`).
pub(crate) mod serde_fixed {
    use serde::Serializer;
    use time::OffsetDateTime;

    pub(crate) fn serialize<S: Serializer>(t: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
        let text = super::format(*t).map_err(serde::ser::Error::custom)?;
        s.serialize_str(&text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn fixed_width_utc_microseconds() {
        let t = datetime!(2025-01-31 10:05:03.000_120_999 +01:00);
        assert_eq!(format(t).unwrap(), "2025-01-31T09:05:03.000120Z");
        assert_eq!(format(datetime!(0001-01-01 0:00 UTC)).unwrap().len(), 27);
        assert_eq!(
            parse("2025-01-31T09:05:03.000120Z").unwrap(),
            datetime!(2025-01-31 09:05:03.000_120 UTC)
        );
    }

    #[test]
    fn text_order_is_time_order() {
        let a = format(datetime!(2025-01-31 09:05:03.9 UTC)).unwrap();
        let b = format(datetime!(2025-01-31 09:05:10.0 UTC)).unwrap();
        let c = format(datetime!(2025-12-01 00:00 UTC)).unwrap();
        assert!(a < b && b < c, "{a} {b} {c}");
    }

    #[test]
    fn negative_years_are_refused() {
        assert!(format(datetime!(-0001-01-01 0:00 UTC)).is_err());
    }

    #[test]
    fn round_trips_normalized_values() {
        let t = normalize(OffsetDateTime::now_utc());
        assert_eq!(parse(&format(t).unwrap()).unwrap(), t);
    }
}
