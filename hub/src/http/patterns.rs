//! `/api/v1/teams/{team}/patterns`: the pattern library over REST, with versions as
//! entity tags.
//!
//! - `GET .../patterns?since_version=V` (viewer): `{"version","patterns"}`, tombstones
//!   included.
//! - `GET .../patterns/{name}` (viewer): the pattern with `ETag: "<version>"`; 404 when
//!   missing or deleted; 304 when `If-None-Match` matches.
//! - `PUT .../patterns/{name}` `{"content"}` (editor): `If-None-Match: *` creates (201),
//!   `If-Match: "<version>"` updates (200); a failed precondition is 409 with the
//!   stored pattern in `current` (also for a create over an existing pattern, and an
//!   update of a deleted one, whose `current` is the tombstone); `If-Match` on a name
//!   that never existed is 404; neither header is 428.
//! - `DELETE .../patterns/{name}` (admin): needs `If-Match` (428 without), 204; 409
//!   with `current` when stale; 404 when missing or already deleted.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use teamhub_persistence::{Expect, Pattern};
use teamhub_protocol::rest::{
    ConflictBody, ErrorDetail, PatternBody, PatternList, PutPatternRequest,
};
use teamhub_protocol::{ErrorCode, PatternName, TeamId};

use super::api::{json_body, team_id};
use super::etag::{self, Condition};
use super::ws::{authenticate, client_info};
use super::{ApiError, openapi};
use crate::library::WriteError;
use crate::node::Node;

fn pattern_name(raw: &str) -> Result<PatternName, ApiError> {
    PatternName::new(raw).map_err(|e| ApiError::new(ErrorCode::BadRequest, e.to_string()))
}

/// RFC 3339 in UTC.
pub(super) fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

pub(super) fn body(p: &Pattern) -> PatternBody {
    PatternBody {
        name: p.name.clone(),
        version: p.version,
        content: serde_json::from_str(p.content.get()).unwrap_or(serde_json::Value::Null),
        updated_by: p.updated_by.clone(),
        updated_at: rfc3339(p.updated_at),
        deleted: p.deleted,
    }
}

fn with_etag(status: StatusCode, p: &Pattern) -> Response {
    (status, [(header::ETAG, etag::of(p.version))], Json(body(p))).into_response()
}

fn write_error(e: WriteError) -> Response {
    match e {
        WriteError::Conflict(current) => {
            let out = ConflictBody {
                error: ErrorDetail {
                    code: ErrorCode::Conflict,
                    message: format!(
                        "precondition failed: pattern {} is at version {}{}",
                        current.name,
                        current.version,
                        if current.deleted { " (deleted)" } else { "" }
                    ),
                },
                current: body(&current),
            };
            (
                StatusCode::CONFLICT,
                [(header::ETAG, etag::of(current.version))],
                Json(out),
            )
                .into_response()
        }
        WriteError::Op(e) => ApiError::from(e).into_response(),
    }
}

fn since_version(query: Option<&str>) -> Result<u64, ApiError> {
    let mut since = 0;
    for (k, v) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        if k == "since_version" {
            since = v.parse().map_err(|_| {
                ApiError::new(
                    ErrorCode::BadRequest,
                    format!("since_version must be a version (unsigned integer), got {v:?}"),
                )
            })?;
        }
    }
    Ok(since)
}

/// `GET /api/v1/teams/{team}/patterns?since_version=V`
#[utoipa::path(
    get,
    path = "/api/v1/teams/{team}/patterns",
    tag = "patterns",
    summary = "Every pattern changed after a version, deletions included (viewer)",
    params(("team" = TeamId, Path, description = "The team"), openapi::PatternsParams),
    responses(
        (status = 200, description = "The changes and the latest version", body = PatternList),
        openapi::Errors,
    )
)]
pub async fn list(
    State(node): State<Arc<Node>>,
    Path(team): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Json<PatternList>, ApiError> {
    let caller = authenticate(&node, &headers).await?;
    let team = team_id(&team)?;
    let since = since_version(query.as_deref())?;
    let changes = node.pattern_changes(&caller, &team, since).await?;
    Ok(Json(PatternList {
        version: changes.version,
        patterns: changes.patterns.iter().map(body).collect(),
    }))
}

/// `GET /api/v1/teams/{team}/patterns/{name}`
#[utoipa::path(
    get,
    path = "/api/v1/teams/{team}/patterns/{name}",
    tag = "patterns",
    summary = "One pattern, with its version as ETag (viewer)",
    params(("team" = TeamId, Path, description = "The team"), ("name" = PatternName, Path, description = "The pattern"),
        ("If-None-Match" = Option<String>, Header, description = "`\"<version>\"`: 304 while unchanged")),
    responses(
        (status = 200, description = "The pattern", body = PatternBody,
            headers(("ETag" = String, description = "`\"<version>\"`"))),
        (status = 304, description = "Unchanged since the version in If-None-Match",
            headers(("ETag" = String, description = "`\"<version>\"`"))),
        openapi::Errors,
        openapi::NotFound,
    )
)]
pub async fn get(
    State(node): State<Arc<Node>>,
    Path((team, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = authenticate(&node, &headers).await?;
    let (team, name) = (team_id(&team)?, pattern_name(&name)?);
    let pattern = node.pattern(&caller, &team, &name).await?;
    if etag::none_match(&headers, pattern.version)? {
        return Ok((
            StatusCode::NOT_MODIFIED,
            [(header::ETAG, etag::of(pattern.version))],
        )
            .into_response());
    }
    Ok(with_etag(StatusCode::OK, &pattern))
}

/// `PUT /api/v1/teams/{team}/patterns/{name}`
#[utoipa::path(
    put,
    path = "/api/v1/teams/{team}/patterns/{name}",
    tag = "patterns",
    summary = "Create (If-None-Match: *) or update (If-Match: \"<version>\") a pattern (editor)",
    params(("team" = TeamId, Path, description = "The team"), ("name" = PatternName, Path, description = "The pattern"),
        ("If-None-Match" = Option<String>, Header, description = "`*`: create; the pattern must not exist"),
        ("If-Match" = Option<String>, Header, description = "`\"<version>\"`: update that version")),
    request_body = PutPatternRequest,
    responses(
        (status = 200, description = "Updated", body = PatternBody,
            headers(("ETag" = String, description = "`\"<version>\"`"))),
        (status = 201, description = "Created", body = PatternBody,
            headers(("ETag" = String, description = "`\"<version>\"`"))),
        (status = 409, description = "Stale version: the stored pattern is in `current`",
            body = ConflictBody,
            headers(("ETag" = String, description = "`\"<version>\"` of `current`"))),
        openapi::Errors,
        openapi::NotFound,
        openapi::TooLarge,
        openapi::PreconditionRequired,
    )
)]
pub async fn put(
    State(node): State<Arc<Node>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((team, name)): Path<(String, String)>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Response {
    let parsed = async {
        let caller = authenticate(&node, &headers).await?;
        let (team, name) = (team_id(&team)?, pattern_name(&name)?);
        node.authorize(&caller, &team, teamhub_protocol::Action::WritePattern)?;
        let condition = etag::write_condition(&headers)?.ok_or_else(|| {
            ApiError::new(
                ErrorCode::PreconditionRequired,
                "send If-None-Match: * to create or If-Match: \"<version>\" to update",
            )
        })?;
        let req: PutPatternRequest = json_body(&headers, &raw)?;
        Ok::<_, ApiError>((caller, team, name, condition, req))
    };
    let (caller, team, name, condition, req) = match parsed.await {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let expect = match condition {
        Condition::Absent => Expect::Absent,
        Condition::Version(v) => Expect::Version(v),
    };
    let client = client_info(peer, &headers);
    match node
        .put_pattern(&caller, &team, &name, &req.content, expect, &client)
        .await
    {
        Ok(p) if condition == Condition::Absent => with_etag(StatusCode::CREATED, &p),
        Ok(p) => with_etag(StatusCode::OK, &p),
        Err(e) => write_error(e),
    }
}

/// `DELETE /api/v1/teams/{team}/patterns/{name}`
#[utoipa::path(
    delete,
    path = "/api/v1/teams/{team}/patterns/{name}",
    tag = "patterns",
    summary = "Delete a pattern at a version (admin)",
    params(("team" = TeamId, Path, description = "The team"), ("name" = PatternName, Path, description = "The pattern"),
        ("If-Match" = Option<String>, Header, description = "`\"<version>\"`: delete that version")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 409, description = "Stale version: the stored pattern is in `current`",
            body = ConflictBody,
            headers(("ETag" = String, description = "`\"<version>\"` of `current`"))),
        openapi::Errors,
        openapi::NotFound,
        openapi::PreconditionRequired,
    )
)]
pub async fn delete(
    State(node): State<Arc<Node>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((team, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let parsed = async {
        let caller = authenticate(&node, &headers).await?;
        let (team, name) = (team_id(&team)?, pattern_name(&name)?);
        node.authorize(&caller, &team, teamhub_protocol::Action::DeletePattern)?;
        let version = etag::if_match(&headers)?.ok_or_else(|| {
            ApiError::new(
                ErrorCode::PreconditionRequired,
                "send If-Match: \"<version>\" to delete",
            )
        })?;
        Ok::<_, ApiError>((caller, team, name, version))
    };
    let (caller, team, name, version) = match parsed.await {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let client = client_info(peer, &headers);
    match node
        .delete_pattern(&caller, &team, &name, version, &client)
        .await
    {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => write_error(e),
    }
}
