//! REST endpoints (`/api/v1`).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::value::RawValue;
use teamhub_protocol::rest::{HistoryResponse, PresenceResponse, PublishRequest, PublishResponse};
use teamhub_protocol::{Action, ErrorCode, TeamId};

use super::ws::{authenticate, client_info};
use super::{ApiError, openapi};
use crate::error::OpError;
use crate::node::{Node, Outgoing};

pub(super) fn team_id(raw: &str) -> Result<TeamId, ApiError> {
    TeamId::new(raw).map_err(|e| ApiError::new(ErrorCode::BadRequest, e.to_string()))
}

/// The JSON body of a request: checks the content type and maps every failure to the
/// contract's error body (413 when over the body limit).
pub(super) fn json_body<'a, T: serde::Deserialize<'a>>(
    headers: &HeaderMap,
    body: &'a Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            "expected Content-Type: application/json",
        ));
    }
    let bytes = match body {
        Ok(b) => b,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return Err(ApiError::new(ErrorCode::TooLarge, "request body too large"));
        }
        Err(e) => return Err(ApiError::new(ErrorCode::BadRequest, e.body_text())),
    };
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::new(ErrorCode::BadRequest, format!("invalid JSON body: {e}")))
}

/// `POST /api/v1/teams/{team}/messages`
#[utoipa::path(
    post,
    path = "/api/v1/teams/{team}/messages",
    tag = "messages",
    summary = "Publish a message to the team as the caller (editor)",
    params(("team" = TeamId, Path, description = "The team")),
    request_body = PublishRequest,
    responses(
        (status = 200, description = "Published; its offset in the team", body = PublishResponse),
        openapi::Errors,
        openapi::TooLarge,
        openapi::RateLimited,
    )
)]
pub async fn publish(
    State(node): State<Arc<Node>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(team): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<PublishResponse>, ApiError> {
    let caller = authenticate(&node, &headers).await?;
    let team = team_id(&team)?;
    node.authorize(&caller, &team, Action::Publish)?;
    let req: PublishRequest = json_body(&headers, &body)?;
    let client = client_info(peer, &headers);
    let published = node
        .publish(
            &caller,
            Outgoing {
                team: &team,
                ty: &req.ty,
                data: &req.data,
                origin: None,
                echo: false,
            },
            &client,
        )
        .await?;
    Ok(Json(PublishResponse {
        offset: published.offset,
    }))
}

/// `GET /api/v1/teams/{team}/presence`
#[utoipa::path(
    get,
    path = "/api/v1/teams/{team}/presence",
    tag = "presence",
    summary = "Who is present in the team (viewer)",
    params(("team" = TeamId, Path, description = "The team")),
    responses(
        (status = 200, description = "The team's presence", body = PresenceResponse),
        openapi::Errors,
    )
)]
pub async fn presence(
    State(node): State<Arc<Node>>,
    Path(team): Path<String>,
    headers: HeaderMap,
) -> Result<Json<PresenceResponse>, ApiError> {
    let caller = authenticate(&node, &headers).await?;
    let team = team_id(&team)?;
    let snapshot = node.presence_snapshot(&caller, &team).await?;
    Ok(Json(PresenceResponse {
        team,
        presence: snapshot.entries,
    }))
}

#[derive(Serialize)]
struct HistoryOut<'a> {
    team: &'a TeamId,
    epoch: &'a str,
    offset: u64,
    messages: Vec<&'a RawValue>,
}

/// Parses `since` and `limit`; anything else in the query is ignored.
fn history_query(query: Option<&str>) -> Result<(u64, usize), ApiError> {
    let (mut since, mut limit) = (0u64, 100usize);
    for (k, v) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match &*k {
            "since" => {
                since = v.parse().map_err(|_| {
                    ApiError::new(
                        ErrorCode::BadRequest,
                        format!("since must be an offset (unsigned integer), got {v:?}"),
                    )
                })?;
            }
            "limit" => {
                limit = v
                    .parse()
                    .ok()
                    .filter(|l| (1..=1000).contains(l))
                    .ok_or_else(|| {
                        ApiError::new(
                            ErrorCode::BadRequest,
                            format!("limit must be an integer from 1 to 1000, got {v:?}"),
                        )
                    })?;
            }
            _ => {}
        }
    }
    Ok((since, limit))
}

/// `GET /api/v1/teams/{team}/history?since=O&limit=L`
#[utoipa::path(
    get,
    path = "/api/v1/teams/{team}/history",
    tag = "history",
    summary = "Messages after an offset still in history, oldest first (viewer)",
    params(("team" = TeamId, Path, description = "The team"), openapi::HistoryParams),
    responses(
        (status = 200, description = "The messages", body = HistoryResponse),
        openapi::Errors,
    )
)]
pub async fn history(
    State(node): State<Arc<Node>>,
    Path(team): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let caller = authenticate(&node, &headers).await?;
    let team = team_id(&team)?;
    node.authorize(&caller, &team, Action::ReadHistory)?;
    let (since, limit) = history_query(query.as_deref())?;
    let read = node
        .history
        .read(&team, since, limit)
        .await
        .map_err(OpError::from)?;
    let messages = read
        .messages
        .iter()
        .map(|m| serde_json::from_str::<&RawValue>(m.as_str()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| OpError::internal(format!("corrupt history entry: {e}")))?;
    let out = HistoryOut {
        team: &team,
        epoch: &read.position.epoch,
        offset: read.position.offset,
        messages,
    };
    Ok(Json(out).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_query_values() {
        assert_eq!(history_query(None).unwrap(), (0, 100));
        assert_eq!(
            history_query(Some("since=5&limit=1000&x=y")).unwrap(),
            (5, 1000)
        );
        assert!(history_query(Some("limit=0")).is_err());
        assert!(history_query(Some("limit=1001")).is_err());
        assert!(history_query(Some("limit=abc")).is_err());
        assert!(history_query(Some("since=-1")).is_err());
    }

    mod fuzz {
        use proptest::prelude::*;

        use super::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn any_history_query_is_parsed_or_refused(q in any::<String>()) {
                match history_query(Some(&q)) {
                    Ok((_, limit)) => prop_assert!((1..=1000).contains(&limit)),
                    Err(e) => prop_assert_eq!(e.0.code, ErrorCode::BadRequest),
                }
            }

            #[test]
            fn query_shaped_history_queries(
                pairs in prop::collection::vec(("since|limit|x", "[0-9a-z%+-]{0,24}"), 0..4)
            ) {
                let q = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&");
                match history_query(Some(&q)) {
                    Ok((_, limit)) => prop_assert!((1..=1000).contains(&limit)),
                    Err(e) => prop_assert_eq!(e.0.code, ErrorCode::BadRequest),
                }
            }
        }
    }
}
