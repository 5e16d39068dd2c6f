//! `/api/v1/teams/{team}/webhooks` (admin): endpoints (the secret is shown once, at
//! creation and rotation), their deliveries and manual retries.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use teamhub_persistence::WebhookEndpoint;
use teamhub_persistence::webhooks::{Delivery, EndpointUpdate};
use teamhub_protocol::rest::{
    CreateWebhookRequest, DeliveryInfo, DeliveryList, UpdateWebhookRequest, WebhookCreated,
    WebhookInfo, WebhookList, WebhookSecret,
};
use teamhub_protocol::{ErrorCode, TeamId};

use super::api::{json_body, team_id};
use super::patterns::rfc3339;
use super::ws::authenticate;
use super::{ApiError, openapi};
use crate::node::Node;
use crate::webhooks::{DEFAULT_DELIVERIES, MAX_DELIVERIES};

fn info(e: WebhookEndpoint) -> WebhookInfo {
    WebhookInfo {
        id: e.id,
        url: e.url,
        events: e.events,
        description: e.description,
        enabled: e.enabled,
        created_at: rfc3339(e.created_at),
    }
}

fn delivery(d: Delivery) -> DeliveryInfo {
    DeliveryInfo {
        id: d.id,
        ty: d.event_type,
        status: d.status.as_str().to_owned(),
        attempts: d.attempts,
        last_status_code: d.last_status_code,
        next_attempt_at: rfc3339(d.next_attempt_at),
        created_at: rfc3339(d.created_at),
    }
}

/// Ids in paths: what this hub issues (`wh_...`, `msg_...`) is short and plain.
fn path_id(what: &str, id: &str) -> Result<(), ApiError> {
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            format!("{what} id: expected up to 64 characters of A-Z a-z 0-9 _"),
        ));
    }
    Ok(())
}

/// `POST /api/v1/teams/{team}/webhooks`
#[utoipa::path(
    post,
    path = "/api/v1/teams/{team}/webhooks",
    tag = "webhooks",
    summary = "Create a webhook endpoint (admin); its secret is shown only in this answer",
    params(("team" = TeamId, Path, description = "The team")),
    request_body = CreateWebhookRequest,
    responses(
        (status = 201, description = "Created", body = WebhookCreated),
        openapi::Errors,
        openapi::TooLarge,
    )
)]
pub async fn create(
    State(node): State<Arc<Node>>,
    Path(team): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<WebhookCreated>), ApiError> {
    let caller = authenticate(&node, &headers).await?;
    let team = team_id(&team)?;
    node.authorize(&caller, &team, teamhub_protocol::Action::ManageWebhooks)?;
    let req: CreateWebhookRequest = json_body(&headers, &body)?;
    let created = node
        .create_webhook(
            &caller,
            &team,
            &req.url,
            req.events,
            req.description.as_deref(),
        )
        .await?;
    let e = created.0;
    Ok((
        StatusCode::CREATED,
        Json(WebhookCreated {
            id: e.id,
            url: e.url,
            events: e.events,
            description: e.description,
            enabled: e.enabled,
            secret: e.secret,
            created_at: rfc3339(e.created_at),
        }),
    ))
}

/// `GET /api/v1/teams/{team}/webhooks`
#[utoipa::path(
    get,
    path = "/api/v1/teams/{team}/webhooks",
    tag = "webhooks",
    summary = "The team's webhook endpoints, without their secrets (admin)",
    params(("team" = TeamId, Path, description = "The team")),
    responses(
        (status = 200, description = "The endpoints", body = WebhookList),
        openapi::Errors,
    )
)]
pub async fn list(
    State(node): State<Arc<Node>>,
    Path(team): Path<String>,
    headers: HeaderMap,
) -> Result<Json<WebhookList>, ApiError> {
    let caller = authenticate(&node, &headers).await?;
    let team = team_id(&team)?;
    let webhooks = node.list_webhooks(&caller, &team).await?;
    Ok(Json(WebhookList {
        team,
        webhooks: webhooks.into_iter().map(info).collect(),
    }))
}

/// `PATCH /api/v1/teams/{team}/webhooks/{id}`
#[utoipa::path(
    patch,
    path = "/api/v1/teams/{team}/webhooks/{id}",
    tag = "webhooks",
    summary = "Change a webhook endpoint (admin); `\"enabled\": true` re-enables it",
    params(("team" = TeamId, Path, description = "The team"), ("id" = String, Path, description = "The endpoint")),
    request_body = UpdateWebhookRequest,
    responses(
        (status = 200, description = "The endpoint", body = WebhookInfo),
        openapi::Errors,
        openapi::NotFound,
        openapi::TooLarge,
    )
)]
pub async fn update(
    State(node): State<Arc<Node>>,
    Path((team, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<WebhookInfo>, ApiError> {
    let caller = authenticate(&node, &headers).await?;
    let team = team_id(&team)?;
    path_id("webhook", &id)?;
    node.authorize(&caller, &team, teamhub_protocol::Action::ManageWebhooks)?;
    let req: UpdateWebhookRequest = json_body(&headers, &body)?;
    let update = EndpointUpdate {
        url: req.url,
        events: req.events,
        description: req.description,
        enabled: req.enabled,
    };
    let e = node.update_webhook(&caller, &team, &id, update).await?;
    Ok(Json(info(e)))
}

/// `DELETE /api/v1/teams/{team}/webhooks/{id}`
#[utoipa::path(
    delete,
    path = "/api/v1/teams/{team}/webhooks/{id}",
    tag = "webhooks",
    summary = "Delete a webhook endpoint and its deliveries (admin)",
    params(("team" = TeamId, Path, description = "The team"), ("id" = String, Path, description = "The endpoint")),
    responses(
        (status = 204, description = "Deleted"),
        openapi::Errors,
        openapi::NotFound,
    )
)]
pub async fn delete(
    State(node): State<Arc<Node>>,
    Path((team, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let caller = authenticate(&node, &headers).await?;
    let team = team_id(&team)?;
    path_id("webhook", &id)?;
    node.delete_webhook(&caller, &team, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/v1/teams/{team}/webhooks/{id}/rotate-secret`
#[utoipa::path(
    post,
    path = "/api/v1/teams/{team}/webhooks/{id}/rotate-secret",
    tag = "webhooks",
    summary = "Replace the secret (admin); for 24 h deliveries carry a signature by each",
    params(("team" = TeamId, Path, description = "The team"), ("id" = String, Path, description = "The endpoint")),
    responses(
        (status = 200, description = "The new secret, shown only here", body = WebhookSecret),
        openapi::Errors,
        openapi::NotFound,
    )
)]
pub async fn rotate(
    State(node): State<Arc<Node>>,
    Path((team, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<WebhookSecret>, ApiError> {
    let caller = authenticate(&node, &headers).await?;
    let team = team_id(&team)?;
    path_id("webhook", &id)?;
    let secret = node.rotate_webhook_secret(&caller, &team, &id).await?;
    Ok(Json(WebhookSecret { secret }))
}

/// `GET /api/v1/teams/{team}/webhooks/{id}/deliveries?limit=L`
#[utoipa::path(
    get,
    path = "/api/v1/teams/{team}/webhooks/{id}/deliveries",
    tag = "webhooks",
    summary = "The endpoint's deliveries, newest first (admin)",
    params(
        ("team" = TeamId, Path, description = "The team"),
        ("id" = String, Path, description = "The endpoint"),
        openapi::DeliveriesParams,
    ),
    responses(
        (status = 200, description = "The deliveries", body = DeliveryList),
        openapi::Errors,
        openapi::NotFound,
    )
)]
pub async fn deliveries(
    State(node): State<Arc<Node>>,
    Path((team, id)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Json<DeliveryList>, ApiError> {
    let caller = authenticate(&node, &headers).await?;
    let team = team_id(&team)?;
    path_id("webhook", &id)?;
    let mut limit = DEFAULT_DELIVERIES;
    for (k, v) in url::form_urlencoded::parse(query.as_deref().unwrap_or("").as_bytes()) {
        if k == "limit" {
            limit = v
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=MAX_DELIVERIES).contains(n))
                .ok_or_else(|| {
                    ApiError::new(
                        ErrorCode::BadRequest,
                        format!("limit: an integer from 1 to {MAX_DELIVERIES}"),
                    )
                })?;
        }
    }
    let got = node.webhook_deliveries(&caller, &team, &id, limit).await?;
    Ok(Json(DeliveryList {
        deliveries: got.into_iter().map(delivery).collect(),
    }))
}

/// `POST /api/v1/teams/{team}/webhooks/{id}/deliveries/{delivery}/retry`
#[utoipa::path(
    post,
    path = "/api/v1/teams/{team}/webhooks/{id}/deliveries/{delivery}/retry",
    tag = "webhooks",
    summary = "Attempt a failed delivery again (admin)",
    params(
        ("team" = TeamId, Path, description = "The team"),
        ("id" = String, Path, description = "The endpoint"),
        ("delivery" = String, Path, description = "The delivery (`webhook-id`)"),
    ),
    responses(
        (status = 202, description = "Queued: attempted again shortly"),
        (status = 409, description = "The delivery has not failed", body = teamhub_protocol::rest::ErrorBody),
        openapi::Errors,
        openapi::NotFound,
    )
)]
pub async fn retry(
    State(node): State<Arc<Node>>,
    Path((team, id, delivery)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let caller = authenticate(&node, &headers).await?;
    let team = team_id(&team)?;
    path_id("webhook", &id)?;
    path_id("delivery", &delivery)?;
    node.retry_webhook_delivery(&caller, &team, &id, &delivery)
        .await?;
    Ok(StatusCode::ACCEPTED)
}
