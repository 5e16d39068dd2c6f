//! Client -> server frames.
//!
//! Decoding is two-step on purpose: first the envelope (`op`, `id`), then the op's own
//! fields. A frame whose fields are wrong still has a known `id`, so the `bad_request`
//! error can carry it, as the contract requires.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::{MAX_META_BYTES, MessageType, TeamId};

/// One decoded client frame: the op and the optional correlation id.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientFrame {
    pub id: Option<u64>,
    pub op: ClientOp,
}

/// The ops a client may send.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientOp {
    Join(Join),
    Leave(Leave),
    Publish(Publish),
    Presence(PresenceRequest),
    Refresh(Refresh),
    Ping,
}

impl ClientOp {
    pub const fn name(&self) -> &'static str {
        match self {
            ClientOp::Join(_) => "join",
            ClientOp::Leave(_) => "leave",
            ClientOp::Publish(_) => "publish",
            ClientOp::Presence(_) => "presence",
            ClientOp::Refresh(_) => "refresh",
            ClientOp::Ping => "ping",
        }
    }
}

/// Where a reconnecting client left off in a team.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Since {
    pub epoch: String,
    pub offset: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Join {
    pub team: TeamId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Since>,
    /// Kept as raw JSON so its size can be checked exactly; see [`Join::meta_object`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<Box<RawValue>>,
}

/// Why a `join`'s `meta` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetaError {
    #[error("meta must be a JSON object")]
    NotObject,
    #[error("meta is larger than {MAX_META_BYTES} bytes")]
    TooLarge,
}

impl Join {
    /// The `meta` object, checked against the contract (an object of at most 1 KiB).
    /// `null` and absence are both `None`.
    pub fn meta_object(
        &self,
    ) -> Result<Option<serde_json::Map<String, serde_json::Value>>, MetaError> {
        let Some(raw) = &self.meta else {
            return Ok(None);
        };
        if raw.get().len() > MAX_META_BYTES {
            return Err(MetaError::TooLarge);
        }
        match serde_json::from_str::<serde_json::Value>(raw.get()) {
            Ok(serde_json::Value::Null) => Ok(None),
            Ok(serde_json::Value::Object(map)) => Ok(Some(map)),
            _ => Err(MetaError::NotObject),
        }
    }
}

impl PartialEq for Join {
    fn eq(&self, other: &Self) -> bool {
        self.team == other.team
            && self.since == other.since
            && match (&self.meta, &other.meta) {
                (Some(a), Some(b)) => super::raw_eq(a, b),
                (None, None) => true,
                _ => false,
            }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Leave {
    pub team: TeamId,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Publish {
    pub team: TeamId,
    #[serde(rename = "type")]
    pub ty: MessageType,
    /// Any JSON, kept verbatim: the hub forwards these bytes without re-encoding them.
    #[serde(deserialize_with = "crate::json::strict_raw")]
    pub data: Box<RawValue>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub echo: bool,
}

impl PartialEq for Publish {
    fn eq(&self, other: &Self) -> bool {
        self.team == other.team
            && self.ty == other.ty
            && super::raw_eq(&self.data, &other.data)
            && self.echo == other.echo
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PresenceRequest {
    pub team: TeamId,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Refresh {
    pub token: String,
}

/// A frame that could not be decoded, with the `id` when it was readable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct DecodeError {
    pub id: Option<u64>,
    pub message: String,
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    op: Option<Cow<'a, str>>,
    #[serde(default)]
    id: Option<u64>,
}

fn body<'a, T: Deserialize<'a>>(
    text: &'a str,
    id: Option<u64>,
    op: &str,
) -> Result<T, DecodeError> {
    serde_json::from_str(text).map_err(|e| DecodeError {
        id,
        message: format!("invalid {op} frame: {}", strip_position(&e)),
    })
}

/// serde_json appends " at line 1 column 17"; useful for files, noise for frames.
fn strip_position(e: &serde_json::Error) -> String {
    let s = e.to_string();
    match s.rfind(" at line ") {
        Some(i) => s[..i].to_owned(),
        None => s,
    }
}

/// Decodes one text frame from a client.
pub fn decode_client_frame(text: &str) -> Result<ClientFrame, DecodeError> {
    let env: Envelope<'_> = serde_json::from_str(text).map_err(|e| DecodeError {
        id: None,
        message: format!(
            "frame must be a JSON object with an \"op\" and an unsigned integer \"id\": {}",
            strip_position(&e)
        ),
    })?;
    let id = env.id;
    let Some(op) = env.op else {
        return Err(DecodeError {
            id,
            message: "missing field `op`".into(),
        });
    };
    let op = match &*op {
        "join" => ClientOp::Join(body(text, id, "join")?),
        "leave" => ClientOp::Leave(body(text, id, "leave")?),
        "publish" => ClientOp::Publish(body(text, id, "publish")?),
        "presence" => ClientOp::Presence(body(text, id, "presence")?),
        "refresh" => ClientOp::Refresh(body(text, id, "refresh")?),
        "ping" => ClientOp::Ping,
        other => {
            return Err(DecodeError {
                id,
                message: format!("unknown op {other:?}"),
            });
        }
    };
    Ok(ClientFrame { id, op })
}

impl Serialize for ClientFrame {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        // The op's own fields, flattened next to `op` and `id`.
        let fields = match &self.op {
            ClientOp::Join(j) => serde_json::to_value(j),
            ClientOp::Leave(l) => serde_json::to_value(l),
            ClientOp::Publish(p) => serde_json::to_value(p),
            ClientOp::Presence(p) => serde_json::to_value(p),
            ClientOp::Refresh(r) => serde_json::to_value(r),
            ClientOp::Ping => Ok(serde_json::Value::Object(Default::default())),
        }
        .map_err(serde::ser::Error::custom)?;
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("op", self.op.name())?;
        if let Some(id) = self.id {
            map.serialize_entry("id", &id)?;
        }
        if let serde_json::Value::Object(fields) = fields {
            for (k, v) in fields {
                map.serialize_entry(&k, &v)?;
            }
        }
        map.end()
    }
}

/// A frame sent by a client of the seed-compatible endpoint `/ws/{team}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SeedPublish {
    #[serde(rename = "type")]
    pub ty: MessageType,
    #[serde(deserialize_with = "crate::json::strict_raw")]
    pub data: Box<RawValue>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> DecodeError {
        decode_client_frame(text).unwrap_err()
    }

    #[test]
    fn errors_keep_the_id_when_it_is_readable() {
        assert_eq!(err(r#"{"op":"join","id":7}"#).id, Some(7));
        assert!(
            err(r#"{"op":"join","id":7}"#)
                .message
                .contains("missing field `team`")
        );
        assert_eq!(err(r#"{"op":"nope","id":3}"#).id, Some(3));
        assert_eq!(err(r#"{"id":4}"#).id, Some(4));
        assert_eq!(err(r#"{"op":"join","team":"a b","id":5}"#).id, Some(5));
    }

    #[test]
    fn unreadable_envelopes_have_no_id() {
        for text in [
            "",
            "nope",
            "[1]",
            "42",
            r#"{"op":"ping","id":-1}"#,
            r#"{"op":"ping","id":"x"}"#,
            r#"{"op":1}"#,
        ] {
            assert_eq!(err(text).id, None, "{text}");
        }
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let f = decode_client_frame(r#"{"op":"ping","id":1,"extra":{"a":[1]}}"#).unwrap();
        assert_eq!(
            f,
            ClientFrame {
                id: Some(1),
                op: ClientOp::Ping
            }
        );
    }

    #[test]
    fn publish_data_is_kept_verbatim() {
        let f = decode_client_frame(
            r#"{"op":"publish","team":"t","type":"x","data":{"b":1,  "a":[true]}}"#,
        )
        .unwrap();
        let ClientOp::Publish(p) = f.op else { panic!() };
        assert_eq!(p.data.get(), r#"{"b":1,  "a":[true]}"#);
        assert!(!p.echo);
    }

    #[test]
    fn meta_is_checked() {
        let join = |meta: &str| -> Join {
            serde_json::from_str(&format!(r#"{{"team":"t","meta":{meta}}}"#)).unwrap()
        };
        assert_eq!(join("null").meta_object(), Ok(None));
        assert!(
            join(r#"{"status":"busy"}"#)
                .meta_object()
                .unwrap()
                .is_some()
        );
        assert_eq!(join("[1]").meta_object(), Err(MetaError::NotObject));
        let big = format!(r#"{{"s":"{}"}}"#, "x".repeat(MAX_META_BYTES));
        assert_eq!(join(&big).meta_object(), Err(MetaError::TooLarge));
    }
}
