//! Bodies of the REST API (`/api/v1`) shared by the hub and its clients.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::{ErrorCode, MessageFrame, MessageType, PresenceEntry, TeamId, UserId};

/// `{"error":{"code":CODE,"message":TEXT}}`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorDetail {
    pub code: ErrorCode,
    pub message: String,
}

/// `POST /api/v1/teams/{team}/messages`
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PublishRequest {
    #[serde(rename = "type")]
    pub ty: MessageType,
    /// Any JSON value.
    #[cfg_attr(feature = "openapi", schema(value_type = serde_json::Value))]
    #[serde(deserialize_with = "crate::json::strict_raw")]
    pub data: Box<RawValue>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PublishResponse {
    pub offset: u64,
}

/// `GET /api/v1/teams/{team}/presence`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PresenceResponse {
    pub team: TeamId,
    pub presence: Vec<PresenceEntry>,
}

/// `GET /api/v1/teams/{team}/history`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HistoryResponse {
    pub team: TeamId,
    pub epoch: String,
    pub offset: u64,
    pub messages: Vec<HistoryMessage>,
}

/// A message as it appears in history: a `message` frame, `op` included.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HistoryMessage {
    pub op: String,
    #[serde(flatten)]
    pub message: MessageFrame,
}

/// `GET /api/v1/teams/{team}/activity` (`format=json`): one page, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ActivityPageResponse {
    pub items: Vec<ActivityRow>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// One activity log entry (PROTOCOL.md section 4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ActivityRow {
    /// UUID v7 (time-ordered).
    #[cfg_attr(feature = "openapi", schema(format = "uuid"))]
    pub id: String,
    pub team: TeamId,
    pub user: UserId,
    /// A message type, or one of the hub's own actions (`presence.joined`, ...).
    pub action: String,
    pub resource_type: Option<String>,
    pub resource_id: Option<String>,
    /// Any JSON value: a message's data, verbatim.
    #[cfg_attr(feature = "openapi", schema(value_type = serde_json::Value))]
    pub metadata: Value,
    /// The client's address (`203.0.113.7`, `2001:db8::1`).
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    /// RFC 3339, UTC, microseconds: `2025-01-31T09:05:03.000120Z`.
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub created_at: String,
}

/// Free-form JSON, for bodies whose shape the caller decides.
pub type Json = Value;

/// `POST /api/v1/teams/{team}/api-keys`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateApiKeyRequest {
    pub name: String,
    pub role: crate::Role,
}

/// An API key in a listing: never the key itself nor its hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApiKeyInfo {
    pub id: String,
    pub name: String,
    pub role: crate::Role,
    /// The key's first characters (`thk_` and 8 more), to tell keys apart.
    pub prefix: String,
    pub created_by: crate::UserId,
    /// RFC 3339, UTC.
    pub created_at: String,
}

/// `201` answer to a key creation: the only time `key` is shown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApiKeyCreated {
    pub id: String,
    pub name: String,
    pub role: crate::Role,
    pub prefix: String,
    pub key: String,
    pub created_at: String,
}

/// `GET /api/v1/teams/{team}/api-keys`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApiKeyList {
    pub team: TeamId,
    pub api_keys: Vec<ApiKeyInfo>,
}

/// `POST /api/v1/teams/{team}/members/{user}/revoke` answers `200` with this.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RevokeResponse {
    pub team: TeamId,
    pub user: crate::UserId,
    /// RFC 3339, UTC: tokens issued at or before this second no longer count in `team`.
    pub revoked_at: String,
}

/// A pattern of the library (or a tombstone: `deleted: true`, `content: null`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PatternBody {
    pub name: crate::PatternName,
    pub version: u64,
    /// Any JSON value (`null` for a tombstone).
    #[cfg_attr(feature = "openapi", schema(value_type = serde_json::Value))]
    pub content: Value,
    pub updated_by: crate::UserId,
    /// RFC 3339, UTC.
    pub updated_at: String,
    pub deleted: bool,
}

/// `GET /api/v1/teams/{team}/patterns?since_version=V`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PatternList {
    pub version: u64,
    pub patterns: Vec<PatternBody>,
}

/// `PUT /api/v1/teams/{team}/patterns/{name}`
#[derive(Debug, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PutPatternRequest {
    /// Any JSON value.
    #[cfg_attr(feature = "openapi", schema(value_type = serde_json::Value))]
    #[serde(deserialize_with = "crate::json::strict_raw")]
    pub content: Box<RawValue>,
}

/// `409` answer to a pattern write whose precondition failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConflictBody {
    pub error: ErrorDetail,
    /// What is stored now (a tombstone if the pattern was deleted).
    pub current: PatternBody,
}

/// `GET /api/v1/teams/{team}/usage?from=YYYY-MM-DD&to=YYYY-MM-DD`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UsageResponse {
    pub team: TeamId,
    /// The team's plan.
    pub plan: String,
    pub quota: UsageQuota,
    /// One entry per UTC day of the range that had any use, oldest first.
    pub days: Vec<UsageDayBody>,
}

/// A plan's quotas; `null` is unlimited.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UsageQuota {
    pub max_connections: Option<u64>,
    pub messages_per_day: Option<u64>,
}

/// One UTC day of a team's use.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UsageDayBody {
    /// `YYYY-MM-DD`.
    pub date: String,
    /// Publishes accepted (WebSocket and REST, ephemeral types included).
    pub messages: u64,
    /// Authenticated REST requests naming the team in their path, whatever the answer.
    pub api_calls: u64,
    /// The most connections joined to the team at once, across the cluster.
    pub peak_connections: u64,
    pub webhook_deliveries: u64,
}

/// `POST /api/v1/teams/{team}/webhooks`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateWebhookRequest {
    /// `http://` or `https://`; its host must not resolve to a loopback, private,
    /// link-local or unspecified address.
    pub url: String,
    /// Type prefixes; `"*"` or `""` matches every type.
    pub events: Vec<String>,
    #[serde(default)]
    pub description: Option<String>,
}

/// `PATCH /api/v1/teams/{team}/webhooks/{id}`: absent fields are kept.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UpdateWebhookRequest {
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub events: Option<Vec<String>>,
    #[serde(default)]
    pub description: Option<String>,
    /// `true` re-enables an endpoint that was disabled (by a `410` or by hand).
    #[serde(default)]
    pub enabled: Option<bool>,
}

/// A webhook endpoint, without its secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WebhookInfo {
    pub id: String,
    pub url: String,
    pub events: Vec<String>,
    pub description: String,
    pub enabled: bool,
    /// RFC 3339, UTC.
    pub created_at: String,
}

/// `201` answer to an endpoint's creation: the only time `secret` is shown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WebhookCreated {
    pub id: String,
    pub url: String,
    pub events: Vec<String>,
    pub description: String,
    pub enabled: bool,
    /// `whsec_` and the standard base64 of the signing key.
    pub secret: String,
    pub created_at: String,
}

/// `GET /api/v1/teams/{team}/webhooks`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WebhookList {
    pub team: TeamId,
    pub webhooks: Vec<WebhookInfo>,
}

/// `200` answer to a rotation: the new secret (the old one signs for 24 h more).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WebhookSecret {
    pub secret: String,
}

/// One delivery in an endpoint's log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeliveryInfo {
    /// The `webhook-id` header of every attempt.
    pub id: String,
    #[serde(rename = "type")]
    pub ty: String,
    /// `pending`, `delivered` or `failed`.
    pub status: String,
    pub attempts: u32,
    pub last_status_code: Option<u16>,
    /// RFC 3339; for a pending delivery, when it is attempted next.
    pub next_attempt_at: String,
    pub created_at: String,
}

/// `GET /api/v1/teams/{team}/webhooks/{id}/deliveries`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeliveryList {
    pub deliveries: Vec<DeliveryInfo>,
}
