//! `GET /api/v1/teams/{team}/activity`: the activity log as JSON pages or a streamed
//! CSV / NDJSON export.
//!
//! Pages are keyset-paginated by the database (`persistence::query`): `next_cursor` is
//! the opaque position after the page's last row. Exports walk the same pages from the
//! database one at a time and write each as one chunk of a streaming body, so memory
//! stays at one page whatever the number of matching rows. The first page is read
//! before the response starts, so a database that is down is a 503, not a cut stream;
//! a failure later can only end the body early (the client sees a truncated transfer).

use std::sync::Arc;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use futures_util::stream;
use serde::Serialize;
use teamhub_persistence::{
    ActivityPage, ActivityQuery, ActivityReader, ActivityRow, Cursor, MAX_PAGE,
};
use teamhub_protocol::rest::ActivityPageResponse;
use teamhub_protocol::{Action, ErrorCode, MessageType, TeamId, UserId};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::api::team_id;
use super::ws::authenticate;
use super::{ApiError, openapi};
use crate::error::OpError;
use crate::node::Node;

/// Rows per JSON page unless `limit` says otherwise.
const DEFAULT_LIMIT: u32 = 100;
/// Rows read from the database per chunk of an export.
const EXPORT_PAGE: u32 = MAX_PAGE;
/// The CSV columns, in the order of the JSON row's fields.
const CSV_HEADER: [&str; 10] = [
    "id",
    "team",
    "user",
    "action",
    "resource_type",
    "resource_id",
    "metadata",
    "ip",
    "user_agent",
    "created_at",
];

/// What `format=` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Csv,
    Ndjson,
}

/// `GET /api/v1/teams/{team}/activity`
#[utoipa::path(
    get,
    path = "/api/v1/teams/{team}/activity",
    tag = "activity",
    summary = "The team's activity log, newest first, as pages or a streamed export (admin)",
    params(("team" = TeamId, Path, description = "The team"), openapi::ActivityParams),
    responses(
        (status = 200, description = "A page (`format=json`), or every matching row \
            (`format=csv` with a header line, `format=ndjson` one row per line)",
            content(
                (ActivityPageResponse = "application/json"),
                (String = "text/csv"),
                (String = "application/x-ndjson"),
            )),
        openapi::Errors,
    )
)]
pub async fn activity(
    State(node): State<Arc<Node>>,
    Path(team): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let caller = authenticate(&node, &headers).await?;
    let team = team_id(&team)?;
    node.authorize(&caller, &team, Action::ReadActivity)?;
    let (query, format) = parse_query(team, query.as_deref())?;
    let reader = node.database.activity_reader();
    match format {
        Format::Json => {
            let page = reader.page(&query).await.map_err(OpError::from)?;
            Ok(Json(PageOut {
                next_cursor: page.next.map(|c| c.encode()),
                items: page.items,
            })
            .into_response())
        }
        Format::Csv | Format::Ndjson => export(reader, query, format).await,
    }
}

#[derive(Serialize)]
struct PageOut {
    items: Vec<ActivityRow>,
    next_cursor: Option<String>,
}

/// Parses the query string. Unknown parameters are ignored; a repeated one counts
/// with its last value.
pub fn parse_query(team: TeamId, raw: Option<&str>) -> Result<(ActivityQuery, Format), ApiError> {
    let bad = |msg: String| ApiError::new(ErrorCode::BadRequest, msg);
    let mut query = ActivityQuery::team(team, DEFAULT_LIMIT);
    let mut format = Format::Json;
    for (key, value) in url::form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        match &*key {
            "user" => {
                query.user = Some(UserId::new(&value).map_err(|e| bad(format!("user: {e}")))?);
            }
            "action" => {
                let action = MessageType::new(&value).map_err(|e| bad(format!("action: {e}")))?;
                query.action = Some(action.as_str().to_owned());
            }
            "resource_type" => {
                check_filter(&value).map_err(|e| bad(format!("resource_type: {e}")))?;
                query.resource_type = Some(value.into_owned());
            }
            "since" => query.since = Some(rfc3339("since", &value)?),
            "until" => query.until = Some(rfc3339("until", &value)?),
            "limit" => {
                query.limit = value
                    .parse()
                    .ok()
                    .filter(|l| (1..=MAX_PAGE).contains(l))
                    .ok_or_else(|| {
                        bad(format!(
                            "limit must be an integer from 1 to {MAX_PAGE}, got {value:?}"
                        ))
                    })?;
            }
            // Empty is "no cursor" (a client that writes `cursor=${next ?? ""}`).
            "cursor" if value.is_empty() => query.after = None,
            "cursor" => {
                query.after = Some(Cursor::decode(&value).map_err(|e| bad(e.to_string()))?);
            }
            "format" => {
                format = match &*value {
                    "json" => Format::Json,
                    "csv" => Format::Csv,
                    "ndjson" => Format::Ndjson,
                    other => {
                        return Err(bad(format!(
                            "format must be json, csv or ndjson, got {other:?}"
                        )));
                    }
                };
            }
            _ => {}
        }
    }
    Ok((query, format))
}

/// Filter values follow the id pattern of the contract (`[A-Za-z0-9_.:-]`, 1 to 128).
fn check_filter(value: &str) -> Result<(), String> {
    // Same alphabet and bound as team ids; the error names the parameter, not a team.
    TeamId::new(value).map(drop).map_err(|_| {
        format!(
            "must be 1 to {} characters of A-Z, a-z, 0-9, '_', '.', ':' and '-'",
            TeamId::MAX_LEN
        )
    })
}

fn rfc3339(name: &str, value: &str) -> Result<OffsetDateTime, ApiError> {
    let t = OffsetDateTime::parse(value, &Rfc3339).map_err(|e| {
        ApiError::new(
            ErrorCode::BadRequest,
            format!(
                "{name} must be an RFC 3339 time such as 2025-01-31T09:00:00Z ({e}), got {value:?}"
            ),
        )
    })?;
    // Stored times are UTC with a four-digit year: an offset can push an RFC 3339
    // time outside that range.
    let utc = t.to_offset(time::UtcOffset::UTC);
    if !(0..=9999).contains(&utc.year()) {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            format!("{name} is outside years 0000 to 9999 in UTC, got {value:?}"),
        ));
    }
    Ok(utc)
}

/// Streams every row `query` matches, from `query.after` on, as CSV or NDJSON.
async fn export(
    reader: Arc<dyn ActivityReader>,
    mut query: ActivityQuery,
    format: Format,
) -> Result<Response, ApiError> {
    query.limit = EXPORT_PAGE;
    let first = reader.page(&query).await.map_err(OpError::from)?;
    let (content_type, ext) = match format {
        Format::Csv => ("text/csv; charset=utf-8", "csv"),
        _ => ("application/x-ndjson", "ndjson"),
    };
    let disposition = format!("attachment; filename=\"activity-{}.{ext}\"", query.team);
    let state = Export {
        reader,
        query,
        format,
        pending: Some(first),
        header: format == Format::Csv,
        done: false,
    };
    let body = Body::from_stream(stream::unfold(state, Export::next_chunk));
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(value) = HeaderValue::from_str(&disposition) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}

/// The state of one export: the next page to write, or where to read it from.
struct Export {
    reader: Arc<dyn ActivityReader>,
    query: ActivityQuery,
    format: Format,
    pending: Option<ActivityPage>,
    header: bool,
    done: bool,
}

impl Export {
    /// The next chunk of the body: one page of rows (the CSV header before the first).
    async fn next_chunk(mut self) -> Option<(Result<Bytes, std::io::Error>, Export)> {
        if self.done {
            return None;
        }
        let page = match self.pending.take() {
            Some(page) => page,
            None => match self.reader.page(&self.query).await {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(team = %self.query.team, error = %e, "activity export failed mid-stream");
                    self.done = true;
                    return Some((Err(std::io::Error::other(e)), self));
                }
            },
        };
        match page.next {
            Some(next) => self.query.after = Some(next),
            None => self.done = true,
        }
        let chunk = match self.format {
            Format::Csv => {
                let header = std::mem::take(&mut self.header);
                csv_chunk(&page.items, header)
            }
            _ => ndjson_chunk(&page.items),
        };
        Some((chunk.map(Bytes::from), self))
    }
}

fn csv_chunk(rows: &[ActivityRow], header: bool) -> Result<Vec<u8>, std::io::Error> {
    let mut out = csv::Writer::from_writer(Vec::with_capacity(rows.len() * 256));
    if header {
        out.write_record(CSV_HEADER)?;
    }
    for row in rows {
        let metadata = row.metadata.to_string();
        let id = row.id.to_string();
        let created_at = row.created_at_text();
        let cells = [
            id.as_str(),
            row.team.as_str(),
            row.user.as_str(),
            &row.action,
            row.resource_type.as_deref().unwrap_or(""),
            row.resource_id.as_deref().unwrap_or(""),
            &metadata,
            row.ip.as_deref().unwrap_or(""),
            row.user_agent.as_deref().unwrap_or(""),
            &created_at,
        ];
        out.write_record(cells.map(neutralise_formula).iter().map(|c| c.as_bytes()))?;
    }
    out.into_inner().map_err(|e| e.into_error())
}

/// A CSV cell a spreadsheet will not run as a formula (OWASP "CSV injection"): text
/// starting with `=`, `+`, `-`, `@`, a tab or a carriage return gets a leading `'`.
/// Every cell goes through here, not only those known to carry user text: ids and
/// timestamps never start with these characters, so they come out unchanged.
fn neutralise_formula(cell: &str) -> std::borrow::Cow<'_, str> {
    match cell.as_bytes().first() {
        Some(b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r') => format!("'{cell}").into(),
        _ => cell.into(),
    }
}

fn ndjson_chunk(rows: &[ActivityRow]) -> Result<Vec<u8>, std::io::Error> {
    let mut out = Vec::with_capacity(rows.len() * 256);
    for row in rows {
        serde_json::to_writer(&mut out, row)?;
        out.push(b'\n');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(q: &str) -> Result<(ActivityQuery, Format), ApiError> {
        parse_query(TeamId::new("t").unwrap(), Some(q))
    }

    fn code(r: Result<(ActivityQuery, Format), ApiError>) -> ErrorCode {
        r.expect_err("must be refused").0.code
    }

    #[test]
    fn defaults_and_values() {
        let (q, f) = parse("").unwrap();
        assert_eq!((q.limit, f), (DEFAULT_LIMIT, Format::Json));
        let (q, f) = parse(
            "user=ann&action=doc.edit&resource_type=doc&since=2025-01-01T00:00:00%2B01:00\
             &until=2025-02-01T00:00:00Z&limit=1000&format=ndjson&other=x",
        )
        .unwrap();
        assert_eq!(f, Format::Ndjson);
        assert_eq!(q.user.unwrap().as_str(), "ann");
        assert_eq!(q.action.as_deref(), Some("doc.edit"));
        assert_eq!(q.resource_type.as_deref(), Some("doc"));
        assert_eq!(q.since, Some(time::macros::datetime!(2024-12-31 23:00 UTC)));
        assert_eq!(q.limit, 1000);
        assert_eq!(parse("format=csv").unwrap().1, Format::Csv);
    }

    #[test]
    fn formulas_are_neutralised_and_other_cells_kept() {
        for (cell, out) in [
            (
                "=HYPERLINK(\"http://x\",\"y\")",
                "'=HYPERLINK(\"http://x\",\"y\")",
            ),
            ("+1", "'+1"),
            ("-2+3", "'-2+3"),
            ("@SUM(A1)", "'@SUM(A1)"),
            ("\tx", "'\tx"),
            ("\rx", "'\rx"),
            ("plain", "plain"),
            ("a=b", "a=b"),
            ("", ""),
            ("'quoted", "'quoted"),
        ] {
            assert_eq!(neutralise_formula(cell), out, "{cell:?}");
        }
    }

    #[test]
    fn bad_values_are_bad_requests() {
        for q in [
            "limit=abc",
            "limit=0",
            "limit=1001",
            "limit=-1",
            "cursor=nope",
            "since=yesterday",
            "until=2025-01-01",
            "since=0000-01-01T00:00:00%2B01:00",
            "format=xml",
            "user=a%20b",
            "user=",
            "action=",
            "action=x%2Fy",
            "resource_type=a%20b",
        ] {
            assert_eq!(code(parse(q)), ErrorCode::BadRequest, "{q}");
        }
    }

    mod fuzz {
        use proptest::prelude::*;

        use super::*;

        fn refused_as_bad_request(r: Result<(ActivityQuery, Format), ApiError>) -> bool {
            match r {
                Ok(_) => true,
                Err(e) => e.0.code == ErrorCode::BadRequest,
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn any_activity_query_is_parsed_or_refused(q in any::<String>()) {
                prop_assert!(refused_as_bad_request(parse(&q)));
            }

            #[test]
            fn query_shaped_activity_queries(
                pairs in prop::collection::vec((
                    "limit|cursor|since|until|user|action|resource_type|resource_id|format|x",
                    "[0-9A-Za-z%+:._-]{0,40}",
                ), 0..6)
            ) {
                let q = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&");
                prop_assert!(refused_as_bad_request(parse(&q)));
            }
        }
    }
}
