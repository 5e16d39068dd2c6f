//! What a reader of the activity log asks for: filters, a keyset cursor, and the
//! retention scope of expired rows.
//!
//! Pages are keyset-paginated, newest first, in the order of the activity indexes
//! (`created_at DESC, id DESC`; ids are UUID v7, so ties on the microsecond are broken
//! by creation order). A [`Cursor`] is the `(created_at, id)` of the last row of a page;
//! the next page holds the rows strictly after it in that order. Rows written while a
//! client pages through are either newer than every cursor (and never show up in its
//! later pages) or older than its cursor (and show up where they belong), so no row is
//! skipped or repeated, and a deep page costs as much as the first: the database seeks
//! to the cursor in the index instead of counting rows as `OFFSET` would.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use teamhub_protocol::{TeamId, UserId};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::activity::ActivityRow;
use crate::timestamp;

/// The largest page a reader may ask for.
pub const MAX_PAGE: u32 = 1000;

/// A filtered page of one team's activity.
#[derive(Debug, Clone)]
pub struct ActivityQuery {
    pub team: TeamId,
    pub user: Option<UserId>,
    pub action: Option<String>,
    pub resource_type: Option<String>,
    /// Rows created at or after this time.
    pub since: Option<OffsetDateTime>,
    /// Rows created strictly before this time.
    pub until: Option<OffsetDateTime>,
    /// Rows after this position (the previous page's [`ActivityPage::next`]).
    pub after: Option<Cursor>,
    /// Rows per page, at most [`MAX_PAGE`] (larger values are treated as [`MAX_PAGE`]);
    /// 0 reads nothing.
    pub limit: u32,
}

impl ActivityQuery {
    /// The first page of `team`'s activity, unfiltered, `limit` rows.
    pub fn team(team: TeamId, limit: u32) -> Self {
        ActivityQuery {
            team,
            user: None,
            action: None,
            resource_type: None,
            since: None,
            until: None,
            after: None,
            limit,
        }
    }

    /// The limit a backend applies.
    pub(crate) fn page_size(&self) -> u32 {
        self.limit.min(MAX_PAGE)
    }

    /// `since` and `until` in the backends' range, or `None` when the query is
    /// certain to match nothing (a range outside what any row can hold).
    pub(crate) fn clamped(&self) -> Option<(Option<OffsetDateTime>, Option<OffsetDateTime>)> {
        let since = self.since.map(timestamp::normalize);
        let until = self.until.map(timestamp::normalize);
        if let (Some(s), Some(u)) = (since, until)
            && s >= u
        {
            return None;
        }
        Some((since, until))
    }
}

/// One page, newest first, and where the next one starts (`None` at the end).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ActivityPage {
    pub items: Vec<ActivityRow>,
    pub next: Option<Cursor>,
}

impl ActivityPage {
    /// Builds a page from up to `limit + 1` rows read in order: the extra row only says
    /// that there is a next page.
    pub(crate) fn from_rows(mut rows: Vec<ActivityRow>, limit: u32) -> Self {
        let limit = limit as usize;
        let more = rows.len() > limit;
        rows.truncate(limit);
        let next = if more {
            rows.last().map(Cursor::after_row)
        } else {
            None
        };
        ActivityPage { items: rows, next }
    }
}

/// A position in a team's activity: the `(created_at, id)` of the last row seen.
///
/// Its text form ([`Cursor::encode`]) is opaque to clients: base64url (no padding) of a
/// version byte, the time in microseconds since the Unix epoch (big-endian `i64`) and
/// the 16 bytes of the id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub created_at: OffsetDateTime,
    pub id: Uuid,
}

const CURSOR_VERSION: u8 = 1;
const CURSOR_BYTES: usize = 1 + 8 + 16;

/// A `cursor` that no page of this server handed out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid cursor: pass the next_cursor of a previous page unchanged")]
pub struct BadCursor;

impl Cursor {
    /// The position just after `row`.
    pub fn after_row(row: &ActivityRow) -> Cursor {
        Cursor {
            created_at: row.created_at,
            id: row.id,
        }
    }

    pub fn encode(&self) -> String {
        let micros = (self.created_at.unix_timestamp_nanos() / 1_000) as i64;
        let mut bytes = [0u8; CURSOR_BYTES];
        bytes[0] = CURSOR_VERSION;
        bytes[1..9].copy_from_slice(&micros.to_be_bytes());
        bytes[9..].copy_from_slice(self.id.as_bytes());
        URL_SAFE_NO_PAD.encode(bytes)
    }

    pub fn decode(text: &str) -> Result<Cursor, BadCursor> {
        // 25 bytes are 34 characters; anything longer is refused before decoding.
        if text.len() > 40 {
            return Err(BadCursor);
        }
        let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| BadCursor)?;
        let bytes: [u8; CURSOR_BYTES] = bytes.try_into().map_err(|_| BadCursor)?;
        if bytes[0] != CURSOR_VERSION {
            return Err(BadCursor);
        }
        let micros = i64::from_be_bytes(bytes[1..9].try_into().map_err(|_| BadCursor)?);
        let created_at = OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1_000)
            .map_err(|_| BadCursor)?;
        // Only times a row can have (the fixed-width text form starts at year 0).
        if created_at.year() < 0 {
            return Err(BadCursor);
        }
        let id = Uuid::from_bytes(bytes[9..].try_into().map_err(|_| BadCursor)?);
        Ok(Cursor { created_at, id })
    }
}

/// Which teams' rows a retention pass deletes.
#[derive(Debug, Clone, Copy)]
pub enum RetentionScope<'a> {
    /// One team (a team with a plan of its own).
    Team(&'a TeamId),
    /// Every team except these (the teams on the default plan).
    AllExcept(&'a [TeamId]),
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn cursor_round_trips_and_is_url_safe() {
        let c = Cursor {
            created_at: datetime!(2025-01-31 09:05:03.000_120 UTC),
            id: Uuid::now_v7(),
        };
        let text = c.encode();
        assert_eq!(text.len(), 34);
        assert!(
            text.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "{text}"
        );
        assert_eq!(Cursor::decode(&text), Ok(c));
    }

    #[test]
    fn bad_cursors_are_refused() {
        let good = Cursor {
            created_at: datetime!(2025-01-31 09:05:03 UTC),
            id: Uuid::nil(),
        }
        .encode();
        for bad in [
            "",
            "abc",
            "!!!!",
            &good[..33],
            &format!("{good}A"),
            &"A".repeat(100),
        ] {
            assert_eq!(Cursor::decode(bad), Err(BadCursor), "{bad:?}");
        }
        let mut other_version = URL_SAFE_NO_PAD.decode(&good).unwrap();
        other_version[0] = 2;
        assert!(Cursor::decode(&URL_SAFE_NO_PAD.encode(&other_version)).is_err());
        let mut negative_year = other_version.clone();
        negative_year[0] = CURSOR_VERSION;
        negative_year[1..9].copy_from_slice(&(-70_000_000_000_000_000i64).to_be_bytes());
        assert!(Cursor::decode(&URL_SAFE_NO_PAD.encode(&negative_year)).is_err());
    }

    #[test]
    fn empty_ranges_match_nothing() {
        let mut q = ActivityQuery::team(TeamId::new("t").unwrap(), 10);
        assert!(q.clamped().is_some());
        q.since = Some(datetime!(2025-01-02 0:00 UTC));
        q.until = Some(datetime!(2025-01-02 0:00 UTC));
        assert!(q.clamped().is_none());
        q.until = Some(datetime!(2025-01-03 0:00 UTC));
        assert!(q.clamped().is_some());
    }

    mod fuzz {
        use proptest::prelude::*;

        use super::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn any_cursor_text_decodes_or_is_refused(text in any::<String>()) {
                let _ = Cursor::decode(&text);
            }

            #[test]
            fn any_cursor_bytes_decode_or_are_refused(bytes in prop::collection::vec(any::<u8>(), 0..40)) {
                let _ = Cursor::decode(&URL_SAFE_NO_PAD.encode(bytes));
            }

            #[test]
            fn cursors_round_trip(micros in 0i64..253_402_300_799_000_000, id in any::<u128>()) {
                let cursor = Cursor {
                    created_at: OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000).unwrap(),
                    id: Uuid::from_u128(id),
                };
                prop_assert_eq!(Cursor::decode(&cursor.encode()), Ok(cursor));
            }
        }
    }
}
