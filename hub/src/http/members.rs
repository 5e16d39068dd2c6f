//! `POST /api/v1/teams/{team}/members/{user}/revoke` (admin): answers
//! `200 {"team","user","revoked_at"}`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::HeaderMap;
use teamhub_protocol::rest::RevokeResponse;
use teamhub_protocol::{ErrorCode, TeamId, UserId};

use super::api::team_id;
use super::patterns::rfc3339;
use super::ws::{authenticate, client_info};
use super::{ApiError, openapi};
use crate::node::Node;

/// `POST /api/v1/teams/{team}/members/{user}/revoke`
#[utoipa::path(
    post,
    path = "/api/v1/teams/{team}/members/{user}/revoke",
    tag = "members",
    summary = "Revoke a member (admin): live connections leave, older tokens stop counting",
    params(("team" = TeamId, Path, description = "The team"), ("user" = UserId, Path, description = "The member")),
    responses(
        (status = 200, description = "Revoked", body = RevokeResponse),
        openapi::Errors,
    )
)]
pub async fn revoke(
    State(node): State<Arc<Node>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((team, user)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<RevokeResponse>, ApiError> {
    let caller = authenticate(&node, &headers).await?;
    let team = team_id(&team)?;
    let user =
        UserId::new(&user).map_err(|e| ApiError::new(ErrorCode::BadRequest, e.to_string()))?;
    let client = client_info(peer, &headers);
    let r = node.revoke_member(&caller, &team, &user, &client).await?;
    Ok(Json(RevokeResponse {
        team: r.team,
        user: r.user,
        revoked_at: rfc3339(r.revoked_at),
    }))
}
