//! Server -> client frames, as clients decode them.
//!
//! The hub encodes its hot frames (`message`, join replies with `missed`) with its own
//! borrowing encoders so payloads are never re-parsed; tests in the hub decode that
//! output with these types, so the two cannot drift apart.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{ErrorCode, MessageType, TeamId, UserId};

/// Every frame the server sends on `/ws`, tagged by `op`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ServerFrame {
    Reply(Reply),
    Pong { id: Option<u64> },
    Message(MessageFrame),
    PresenceDiff(PresenceDiff),
    Kicked(Kicked),
    Error(ErrorFrame),
}

/// A successful answer to a client frame, carrying the frame's `id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    pub id: Option<u64>,
    pub ok: bool,
    #[serde(flatten)]
    pub body: ReplyBody,
}

/// The op-specific fields of a reply. Decoded by shape: a client knows which op it
/// sent for an `id`, and the shapes are distinct.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ReplyBody {
    Join(JoinReply),
    Publish(PublishReply),
    Presence(PresenceReply),
    Refresh(RefreshReply),
    /// `leave` replies carry nothing more.
    Empty {},
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JoinReply {
    pub team: TeamId,
    pub epoch: String,
    /// The team's latest offset when the join took effect (0 before the first message).
    pub offset: u64,
    pub presence: Vec<PresenceEntry>,
    pub recovered: bool,
    /// Encoded as full `message` frames (`"op":"message"` included), as the contract
    /// says and as the hub's own encoder writes them.
    #[serde(with = "missed_frames")]
    pub missed: Vec<MessageFrame>,
}

/// `missed` holds `message` frames, `op` and all. [`MessageFrame`] alone has no `op`
/// (inside [`ServerFrame`] the tag supplies it), so it is added here on encoding; on
/// decoding it is ignored like any other extra field.
mod missed_frames {
    use serde::ser::SerializeSeq;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::MessageFrame;

    #[derive(Serialize)]
    struct WithOp<'a> {
        op: &'static str,
        #[serde(flatten)]
        message: &'a MessageFrame,
    }

    pub fn serialize<S: Serializer>(missed: &[MessageFrame], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(missed.len()))?;
        for message in missed {
            seq.serialize_element(&WithOp {
                op: "message",
                message,
            })?;
        }
        seq.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<MessageFrame>, D::Error> {
        Vec::deserialize(d)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PublishReply {
    pub offset: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PresenceReply {
    pub presence: Vec<PresenceEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RefreshReply {
    /// The new token's expiry, in seconds since the Unix epoch.
    pub exp: u64,
}

/// A message published to a team. In `missed` lists and REST history it also carries
/// `"op":"message"`, so the same bytes serve every place a message appears.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MessageFrame {
    pub team: TeamId,
    pub offset: u64,
    #[serde(rename = "type")]
    pub ty: MessageType,
    pub user: UserId,
    #[cfg_attr(feature = "openapi", schema(value_type = serde_json::Value))]
    pub data: Value,
    /// RFC 3339, UTC, milliseconds: `2026-01-02T03:04:05.678Z`.
    pub ts: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PresenceDiff {
    pub team: TeamId,
    pub joins: Vec<PresenceEntry>,
    pub leaves: Vec<PresenceEntry>,
}

/// One user present in a team.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PresenceEntry {
    pub user: UserId,
    pub name: Option<String>,
    /// Live connections of this user in the team, across nodes.
    pub conns: u32,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub meta: Option<serde_json::Map<String, Value>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KickReason {
    /// An admin revoked the user's membership.
    Revoked,
    /// A refreshed token no longer grants the team.
    RoleRemoved,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Kicked {
    pub team: TeamId,
    pub reason: KickReason,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorFrame {
    pub id: Option<u64>,
    pub code: ErrorCode,
    pub message: String,
}

/// What a client of the seed-compatible endpoint `/ws/{team}` receives: exactly these
/// three fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedFrame {
    #[serde(rename = "type")]
    pub ty: MessageType,
    pub user_id: UserId,
    pub data: Value,
}
