//! Events on their way to sockets, encoded once.
//!
//! An [`Event`] is built once per node for each message or presence change and shared
//! by every receiver through an `Arc`; its wire bytes are a reference-counted buffer,
//! so delivering to a thousand sockets copies no payload. The seed endpoint's
//! different framing is encoded lazily, once, the first time a seed client needs it:
//! for a message it is read back from the wire frame then, so a node with no seed
//! client never decodes a message (a pub/sub payload from another node is only split
//! at its header and its frame bytes shared as they arrived).

use std::sync::OnceLock;

use axum::extract::ws::Utf8Bytes;
use serde::Serialize;
use serde_json::value::RawValue;
use teamhub_presence::{ConnKey, PresenceEvent};
use teamhub_protocol::{MessageType, PresenceEntry, TeamId, UserId};
use time::OffsetDateTime;

/// What kind of event, with the number a session uses to drop what its join reply
/// already covered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A published message with its team offset. `echo`: also deliver to `origin`.
    Message { offset: u64, echo: bool },
    /// A presence change with the team's presence version.
    Presence { version: u64 },
}

/// What the seed endpoint's frames are built from.
#[derive(Debug)]
enum SeedSource {
    /// The `type`, `user` and `data` of the wire frame itself.
    Message,
    Presence {
        joins: Vec<PresenceEntry>,
        leaves: Vec<PresenceEntry>,
    },
}

#[derive(Debug)]
pub struct Event {
    pub team: TeamId,
    pub kind: EventKind,
    /// The connection that caused it, if any: spared its own messages (unless echo)
    /// and diffs about itself.
    pub origin: Option<ConnKey>,
    wire: Utf8Bytes,
    seed_source: SeedSource,
    seed: OnceLock<Vec<Utf8Bytes>>,
}

impl Event {
    /// The `/ws` frame.
    pub fn wire(&self) -> &Utf8Bytes {
        &self.wire
    }

    /// The frames for a seed-endpoint client (a presence diff may be several).
    pub fn seed_frames(&self) -> &[Utf8Bytes] {
        self.seed.get_or_init(|| match &self.seed_source {
            SeedSource::Message => match serde_json::from_str::<WireFields<'_>>(&self.wire) {
                Ok(f) => vec![encode(&SeedOut {
                    ty: &f.ty,
                    user_id: &f.user,
                    data: f.data,
                })],
                Err(e) => {
                    // Unreachable: the frame was encoded by `encode_message`.
                    tracing::error!(error = %e, "message frame without type, user or data");
                    Vec::new()
                }
            },
            SeedSource::Presence { joins, leaves } => {
                let frame = |ty: &str, e: &PresenceEntry| {
                    let data = SeedPresenceData {
                        user: e.user.as_str(),
                        name: e.name.as_deref(),
                    };
                    encode(&SeedOut {
                        ty,
                        user_id: e.user.as_str(),
                        data: &data,
                    })
                };
                joins
                    .iter()
                    .map(|e| frame("presence.join", e))
                    .chain(leaves.iter().map(|e| frame("presence.leave", e)))
                    .collect()
            }
        })
    }

    /// Builds a message event; `wire` must be the team's message frame (see
    /// [`encode_message`]): nothing else is copied or decoded.
    pub fn message(
        team: &TeamId,
        offset: u64,
        echo: bool,
        origin: Option<ConnKey>,
        wire: Utf8Bytes,
    ) -> Event {
        Event {
            team: team.clone(),
            kind: EventKind::Message { offset, echo },
            origin,
            wire,
            seed_source: SeedSource::Message,
            seed: OnceLock::new(),
        }
    }

    /// Builds a presence event, encoding the `presence_diff` frame.
    pub fn presence(ev: PresenceEvent) -> Event {
        let wire = encode(&PresenceDiffOut {
            op: "presence_diff",
            team: &ev.team,
            joins: &ev.joins,
            leaves: &ev.leaves,
        });
        Event {
            team: ev.team,
            kind: EventKind::Presence {
                version: ev.version,
            },
            origin: Some(ev.origin),
            wire,
            seed_source: SeedSource::Presence {
                joins: ev.joins,
                leaves: ev.leaves,
            },
            seed: OnceLock::new(),
        }
    }
}

/// The fields of a message before it has an offset.
#[derive(Debug)]
pub struct MessageParts<'a> {
    pub team: &'a TeamId,
    pub ty: &'a MessageType,
    pub user: &'a UserId,
    pub data: &'a RawValue,
}

#[derive(Serialize)]
struct MessageOut<'a> {
    op: &'static str,
    team: &'a str,
    offset: u64,
    #[serde(rename = "type")]
    ty: &'a str,
    user: &'a str,
    data: &'a RawValue,
    ts: &'a str,
}

/// The fields of a message frame the seed framing needs, borrowed from it.
#[derive(serde::Deserialize)]
struct WireFields<'a> {
    #[serde(rename = "type", borrow)]
    ty: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    user: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    data: &'a RawValue,
}

#[derive(Serialize)]
struct PresenceDiffOut<'a> {
    op: &'static str,
    team: &'a TeamId,
    joins: &'a [PresenceEntry],
    leaves: &'a [PresenceEntry],
}

#[derive(Serialize)]
struct SeedOut<'a, D: Serialize + ?Sized> {
    #[serde(rename = "type")]
    ty: &'a str,
    user_id: &'a str,
    data: &'a D,
}

#[derive(Serialize)]
struct SeedPresenceData<'a> {
    user: &'a str,
    name: Option<&'a str>,
}

/// Encodes the `message` frame: the bytes every receiver, history and recovery share.
pub fn encode_message(msg: &MessageParts<'_>, offset: u64, ts: OffsetDateTime) -> Utf8Bytes {
    let ts = format_ts(ts);
    encode(&MessageOut {
        op: "message",
        team: msg.team.as_str(),
        offset,
        ty: msg.ty.as_str(),
        user: msg.user.as_str(),
        data: msg.data,
        ts: &ts,
    })
}

/// Serialises a value that cannot fail to serialise (plain structs of strings, numbers
/// and already-valid JSON) into a text frame.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Utf8Bytes {
    match serde_json::to_string(value) {
        Ok(s) => Utf8Bytes::from(s),
        // Unreachable for the types above; an error frame is better than a panic.
        Err(e) => Utf8Bytes::from(format!(
            r#"{{"op":"error","id":null,"code":"internal","message":"encoding failed: {e}"}}"#
        )),
    }
}

const TS_FORMAT: &[time::format_description::BorrowedFormatItem<'static>] = time::macros::format_description!(
    "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
);

/// RFC 3339, UTC, milliseconds.
pub fn format_ts(ts: OffsetDateTime) -> String {
    ts.to_offset(time::UtcOffset::UTC)
        .format(TS_FORMAT)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use teamhub_protocol::{MessageFrame, SeedFrame, ServerFrame};

    fn parts<'a>(
        team: &'a TeamId,
        ty: &'a MessageType,
        user: &'a UserId,
        data: &'a RawValue,
    ) -> MessageParts<'a> {
        MessageParts {
            team,
            ty,
            user,
            data,
        }
    }

    #[test]
    fn message_frames_decode_as_the_protocol_says() {
        let (team, ty, user) = (
            TeamId::new("t").unwrap(),
            MessageType::new("chat").unwrap(),
            UserId::new("ann").unwrap(),
        );
        let data = RawValue::from_string(r#"{"text":"hi"}"#.into()).unwrap();
        let ts = OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_456_789).unwrap();
        let wire = encode_message(&parts(&team, &ty, &user, &data), 7, ts);
        let frame: ServerFrame = serde_json::from_str(wire.as_str()).unwrap();
        assert_eq!(
            frame,
            ServerFrame::Message(MessageFrame {
                team: team.clone(),
                offset: 7,
                ty: ty.clone(),
                user: user.clone(),
                data: serde_json::json!({"text":"hi"}),
                ts: "2023-11-14T22:13:20.123Z".into(),
            })
        );
        let ev = Event::message(&team, 7, false, None, wire);
        let seed: SeedFrame = serde_json::from_str(ev.seed_frames()[0].as_str()).unwrap();
        assert_eq!(
            seed,
            SeedFrame {
                ty,
                user_id: user,
                data: serde_json::json!({"text":"hi"})
            }
        );
    }

    #[test]
    fn presence_events_become_diffs_and_seed_frames() {
        let entry = PresenceEntry {
            user: UserId::new("ann").unwrap(),
            name: Some("Ann".into()),
            conns: 1,
            meta: None,
        };
        let ev = Event::presence(PresenceEvent {
            team: TeamId::new("t").unwrap(),
            version: 3,
            origin: ConnKey {
                node: "n".into(),
                conn: 1,
            },
            joins: vec![entry.clone()],
            leaves: vec![],
            occupancy: None,
        });
        let frame: ServerFrame = serde_json::from_str(ev.wire().as_str()).unwrap();
        assert!(matches!(frame, ServerFrame::PresenceDiff(d) if d.joins == vec![entry]));
        assert_eq!(
            ev.seed_frames()[0].as_str(),
            r#"{"type":"presence.join","user_id":"ann","data":{"user":"ann","name":"Ann"}}"#
        );
    }
}
