//! Encoders for the frames a session answers with.

use axum::extract::ws::Utf8Bytes;
use serde::Serialize;
use serde_json::value::RawValue;
use teamhub_protocol::{ErrorFrame, KickReason, Kicked, PresenceEntry, ServerFrame, TeamId};

use crate::error::OpError;
use crate::event::encode;

#[derive(Serialize)]
struct ReplyOut<B: Serialize> {
    op: &'static str,
    id: Option<u64>,
    ok: bool,
    #[serde(flatten)]
    body: B,
}

pub(super) fn reply<B: Serialize>(id: Option<u64>, body: B) -> Utf8Bytes {
    encode(&ReplyOut {
        op: "reply",
        id,
        ok: true,
        body,
    })
}

#[derive(Serialize)]
pub(super) struct JoinBody<'a> {
    pub team: &'a TeamId,
    pub epoch: &'a str,
    pub offset: u64,
    pub presence: &'a [PresenceEntry],
    pub recovered: bool,
    /// History entries are already-encoded `message` frames; they are embedded as-is.
    pub missed: Vec<&'a RawValue>,
}

#[derive(Serialize)]
pub(super) struct OffsetBody {
    pub offset: u64,
}

#[derive(Serialize)]
pub(super) struct PresenceBody<'a> {
    pub presence: &'a [PresenceEntry],
}

#[derive(Serialize)]
pub(super) struct ExpBody {
    pub exp: u64,
}

#[derive(Serialize)]
pub(super) struct Empty {}

pub(super) fn pong(id: Option<u64>) -> Utf8Bytes {
    encode(&ServerFrame::Pong { id })
}

pub(super) fn error(id: Option<u64>, e: &OpError) -> Utf8Bytes {
    encode(&ServerFrame::Error(ErrorFrame {
        id,
        code: e.code,
        message: e.message.clone(),
    }))
}

pub(super) fn kicked(team: &TeamId, reason: KickReason) -> Utf8Bytes {
    encode(&ServerFrame::Kicked(Kicked {
        team: team.clone(),
        reason,
    }))
}

/// Errors on the seed endpoint keep its three-field framing, under a reserved type.
pub(super) fn seed_error(e: &OpError) -> Utf8Bytes {
    encode(&serde_json::json!({
        "type": "system.error",
        "user_id": "system",
        "data": {"code": e.code, "message": e.message},
    }))
}
