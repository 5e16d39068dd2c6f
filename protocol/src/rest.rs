//! Bodies of the REST API (`/api/v1`) shared by the hub and its clients.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::{ErrorCode, MessageFrame, MessageType, PresenceEntry, TeamId};

/// `{"error":{"code":CODE,"message":TEXT}}`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: ErrorCode,
    pub message: String,
}

/// `POST /api/v1/teams/{team}/messages`
#[derive(Debug, Serialize, Deserialize)]
pub struct PublishRequest {
    #[serde(rename = "type")]
    pub ty: MessageType,
    pub data: Box<RawValue>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PublishResponse {
    pub offset: u64,
}

/// `GET /api/v1/teams/{team}/presence`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PresenceResponse {
    pub team: TeamId,
    pub presence: Vec<PresenceEntry>,
}

/// `GET /api/v1/teams/{team}/history`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryResponse {
    pub team: TeamId,
    pub epoch: String,
    pub offset: u64,
    pub messages: Vec<HistoryMessage>,
}

/// A message as it appears in history: a `message` frame, `op` included.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryMessage {
    pub op: String,
    #[serde(flatten)]
    pub message: MessageFrame,
}

/// Free-form JSON, for bodies whose shape the caller decides.
pub type Json = Value;
