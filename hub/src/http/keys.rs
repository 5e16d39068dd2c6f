//! `/api/v1/teams/{team}/api-keys` (admin): create (the key is shown once), list,
//! delete.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use teamhub_protocol::rest::{ApiKeyCreated, ApiKeyInfo, ApiKeyList, CreateApiKeyRequest};
use teamhub_protocol::{Action, ErrorCode, TeamId, UserId};

use super::api::{json_body, team_id};
use super::patterns::rfc3339;
use super::ws::{authenticate, client_info};
use super::{ApiError, openapi};
use crate::node::Node;

/// `POST /api/v1/teams/{team}/api-keys`
#[utoipa::path(
    post,
    path = "/api/v1/teams/{team}/api-keys",
    tag = "api-keys",
    summary = "Create an API key (admin); the key is shown only in this answer",
    params(("team" = TeamId, Path, description = "The team")),
    request_body = CreateApiKeyRequest,
    responses(
        (status = 201, description = "Created", body = ApiKeyCreated),
        openapi::Errors,
        openapi::TooLarge,
    )
)]
pub async fn create(
    State(node): State<Arc<Node>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(team): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<ApiKeyCreated>), ApiError> {
    let caller = authenticate(&node, &headers).await?;
    let team = team_id(&team)?;
    node.authorize(&caller, &team, Action::ManageApiKeys)?;
    let req: CreateApiKeyRequest = json_body(&headers, &body)?;
    let client = client_info(peer, &headers);
    let created = node
        .create_api_key(&caller, &team, &req.name, req.role, &client)
        .await?;
    let r = created.record;
    Ok((
        StatusCode::CREATED,
        Json(ApiKeyCreated {
            id: r.id,
            name: r.name,
            role: r.role,
            prefix: r.prefix,
            key: created.key,
            created_at: rfc3339(r.created_at),
        }),
    ))
}

/// `GET /api/v1/teams/{team}/api-keys`
#[utoipa::path(
    get,
    path = "/api/v1/teams/{team}/api-keys",
    tag = "api-keys",
    summary = "The team's API keys, without the keys themselves (admin)",
    params(("team" = TeamId, Path, description = "The team")),
    responses(
        (status = 200, description = "The keys", body = ApiKeyList),
        openapi::Errors,
    )
)]
pub async fn list(
    State(node): State<Arc<Node>>,
    Path(team): Path<String>,
    headers: HeaderMap,
) -> Result<Json<ApiKeyList>, ApiError> {
    let caller = authenticate(&node, &headers).await?;
    let team = team_id(&team)?;
    let keys = node.list_api_keys(&caller, &team).await?;
    Ok(Json(ApiKeyList {
        team,
        api_keys: keys
            .into_iter()
            .map(|r| ApiKeyInfo {
                id: r.id,
                name: r.name,
                role: r.role,
                prefix: r.prefix,
                created_by: r.created_by,
                created_at: rfc3339(r.created_at),
            })
            .collect(),
    }))
}

/// `DELETE /api/v1/teams/{team}/api-keys/{id}`
#[utoipa::path(
    delete,
    path = "/api/v1/teams/{team}/api-keys/{id}",
    tag = "api-keys",
    summary = "Delete an API key (admin); it stops working on every node within 1 s",
    params(("team" = TeamId, Path, description = "The team"), ("id" = UserId, Path, description = "The key's id")),
    responses(
        (status = 204, description = "Deleted"),
        openapi::Errors,
        openapi::NotFound,
    )
)]
pub async fn delete(
    State(node): State<Arc<Node>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((team, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let caller = authenticate(&node, &headers).await?;
    let team = team_id(&team)?;
    // Key ids are in the id alphabet (they appear in `apikey:<id>` user ids).
    UserId::new(&id)
        .map_err(|e| ApiError::new(ErrorCode::BadRequest, format!("API key id: {e}")))?;
    let client = client_info(peer, &headers);
    node.delete_api_key(&caller, &team, &id, &client).await?;
    Ok(StatusCode::NO_CONTENT)
}
