//! `GET /api/v1/teams/{team}/usage?from=&to=`: a team's use per UTC day and its plan's
//! quotas (admin).
//!
//! The answering node adds what it has counted to the database first, so the answer
//! includes this node's latest use (this request among it); other nodes' counts arrive
//! within their flush interval (`--usage-flush-interval`).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use teamhub_protocol::rest::{UsageDayBody, UsageQuota, UsageResponse};
use teamhub_protocol::{Action, ErrorCode};
use time::Date;

use super::api::team_id;
use super::ws::authenticate;
use super::{ApiError, openapi};
use crate::error::OpError;
use crate::node::Node;
use crate::usage::today;

const DAY: &[time::format_description::BorrowedFormatItem<'_>] =
    time::macros::format_description!("[year]-[month]-[day]");

/// Longest range one request may ask for.
const MAX_DAYS: i64 = 366;

/// `from` and `to` (both inclusive); by default the month of `today`.
fn usage_range(query: Option<&str>, today: Date) -> Result<(Date, Date), ApiError> {
    let first = today.replace_day(1).expect("day 1 exists");
    let last = Date::from_calendar_date(
        today.year(),
        today.month(),
        today.month().length(today.year()),
    )
    .expect("the month's last day exists");
    let (mut from, mut to) = (first, last);
    for (k, v) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        let slot = match &*k {
            "from" => &mut from,
            "to" => &mut to,
            _ => continue,
        };
        *slot = Date::parse(&v, DAY).map_err(|_| {
            ApiError::new(
                ErrorCode::BadRequest,
                format!("{k} must be a date YYYY-MM-DD, got {v:?}"),
            )
        })?;
    }
    if from > to {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            format!("from ({from}) is after to ({to})"),
        ));
    }
    if (to - from).whole_days() >= MAX_DAYS {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            format!("at most {MAX_DAYS} days per request"),
        ));
    }
    Ok((from, to))
}

/// `GET /api/v1/teams/{team}/usage`
#[utoipa::path(
    get,
    path = "/api/v1/teams/{team}/usage",
    tag = "usage",
    summary = "The team's use per UTC day and its plan's quotas (admin)",
    params(("team" = teamhub_protocol::TeamId, Path, description = "The team"), openapi::UsageParams),
    responses(
        (status = 200, description = "One entry per day with any use, oldest first", body = UsageResponse),
        openapi::Errors,
        openapi::RateLimited,
    )
)]
pub async fn usage(
    State(node): State<Arc<Node>>,
    Path(team): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Json<UsageResponse>, ApiError> {
    let caller = authenticate(&node, &headers).await?;
    let team = team_id(&team)?;
    node.authorize(&caller, &team, Action::ReadUsage)?;
    let (from, to) = usage_range(query.as_deref(), today())?;
    if let Err(e) = node.usage.flush().await {
        // The stored counts still answer; what this node holds follows with its next flush.
        tracing::warn!(error = %e, "usage flush before a usage request failed");
    }
    let days = node
        .database
        .usage_store()
        .days(&team, from, to)
        .await
        .map_err(OpError::from)?;
    let (plan, limits) = node.plans.of(&team);
    let days = days
        .into_iter()
        .map(|d| UsageDayBody {
            date: d.day.format(DAY).unwrap_or_default(),
            messages: d.counts.messages,
            api_calls: d.counts.api_calls,
            peak_connections: d.counts.peak_connections,
            webhook_deliveries: d.counts.webhook_deliveries,
        })
        .collect();
    Ok(Json(UsageResponse {
        team,
        plan: plan.to_string(),
        quota: UsageQuota {
            max_connections: limits.max_connections,
            messages_per_day: limits.messages_per_day,
        },
        days,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    #[test]
    fn ranges() {
        let today = date!(2026 - 02 - 14);
        assert_eq!(
            usage_range(None, today).unwrap(),
            (date!(2026 - 02 - 01), date!(2026 - 02 - 28)),
            "the current month"
        );
        assert_eq!(
            usage_range(Some("from=2026-01-30&to=2026-02-02&x=1"), today).unwrap(),
            (date!(2026 - 01 - 30), date!(2026 - 02 - 02))
        );
        assert_eq!(
            usage_range(Some("from=2026-02-10"), today).unwrap(),
            (date!(2026 - 02 - 10), date!(2026 - 02 - 28))
        );
        for bad in [
            "from=2026-2-1",
            "to=yesterday",
            "from=2026-03-01",
            "from=2024-01-01&to=2026-01-01",
        ] {
            let e = usage_range(Some(bad), today).unwrap_err();
            assert_eq!(e.0.code, ErrorCode::BadRequest, "{bad}");
        }
    }
}
