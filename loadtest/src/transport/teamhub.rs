//! teamhub frames, as the hub and the relay baseline speak them.

use serde_json::value::RawValue;
use teamhub_client::protocol::{
    ClientFrame, ClientOp, Join, MessageType, Publish, ReplyBody, ServerFrame, TeamId,
};
use teamhub_client::{ConnectOptions, Connection, Incoming, RawIncoming};

use super::{Dial, Inbound, TransportError};
use crate::payload::Payload;

pub(super) async fn connect(dial: Dial<'_>) -> Result<Connection, TransportError> {
    let mut opts = ConnectOptions::new(dial.url);
    if let Some(token) = dial.token {
        opts = opts.token(token);
    }
    if let Some(bind) = dial.bind {
        opts = opts.bind_addr(bind);
    }
    Ok(Connection::connect(opts).await?)
}

pub(super) async fn join(
    conn: &mut Connection,
    id: u64,
    team: &str,
) -> Result<u64, TransportError> {
    let frame = ClientFrame {
        id: Some(id),
        op: ClientOp::Join(Join {
            team: TeamId::new(team).map_err(teamhub_client::ClientError::from)?,
            since: None,
            meta: None,
        }),
    };
    conn.send(&frame).await?;
    loop {
        match conn.recv().await? {
            Incoming::Frame(ServerFrame::Reply(reply)) if reply.id == Some(id) => {
                return match reply.body {
                    ReplyBody::Join(join) => Ok(join.offset),
                    other => Err(TransportError::Unexpected {
                        during: "join",
                        frame: format!("{other:?}"),
                    }),
                };
            }
            Incoming::Frame(ServerFrame::Error(e)) if e.id == Some(id) => {
                return Err(TransportError::Refused {
                    what: "join",
                    detail: format!("{}: {}", e.code, e.message),
                });
            }
            Incoming::Closed { code, reason } => {
                return Err(TransportError::Closed {
                    during: "join",
                    code,
                    reason,
                });
            }
            _ => {}
        }
    }
}

pub(super) async fn publish(
    conn: &mut Connection,
    id: u64,
    team: &str,
    ty: &str,
    data: String,
    echo: bool,
) -> Result<(), TransportError> {
    let invalid = |what: &str, e: &dyn std::fmt::Display| TransportError::Refused {
        what: "publish",
        detail: format!("invalid {what}: {e}"),
    };
    let frame = ClientFrame {
        id: Some(id),
        op: ClientOp::Publish(Publish {
            team: TeamId::new(team).map_err(|e| invalid("team", &e))?,
            ty: MessageType::new(ty).map_err(|e| invalid("type", &e))?,
            data: RawValue::from_string(data).map_err(|e| invalid("data", &e))?,
            echo,
        }),
    };
    conn.send(&frame).await?;
    Ok(())
}

/// The fields of a server frame the accounting reads, borrowed from the frame's text.
///
/// The generator receives every delivery of a run on one thread; decoding each frame
/// into a full `ServerFrame` (a `serde_json::Value` for `data`) cost more than the
/// socket read itself, so the hot path reads only these fields. Frames the generator
/// does not count (presence diffs, pongs, join replies) are still recognised by `op`.
#[derive(serde::Deserialize)]
struct Fields<'a> {
    #[serde(borrow)]
    op: &'a str,
    id: Option<u64>,
    offset: Option<u64>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
    #[serde(borrow)]
    code: Option<std::borrow::Cow<'a, str>>,
}

/// Reduces one text frame to what the accounting needs.
fn inbound(text: &str) -> Inbound {
    let Ok(f) = serde_json::from_str::<Fields<'_>>(text) else {
        return Inbound::Other;
    };
    match (f.op, f.offset) {
        ("message", Some(offset)) => Inbound::Message {
            offset,
            payload: f
                .data
                .and_then(|d| serde_json::from_str::<Payload>(d.get()).ok()),
        },
        // A publish reply is the only reply with an offset outside a join.
        ("reply", Some(offset)) => Inbound::Ack {
            id: f.id.unwrap_or_default(),
            offset,
        },
        ("error", _) => Inbound::Refused {
            id: f.id,
            code: f.code.map(|c| c.into_owned()).unwrap_or_default(),
        },
        _ => Inbound::Other,
    }
}

pub(super) async fn recv(conn: &mut Connection) -> Result<Inbound, TransportError> {
    Ok(match conn.recv_raw().await? {
        RawIncoming::Text(text) => inbound(text.as_str()),
        RawIncoming::Closed { code, reason } => Inbound::Closed { code, reason },
        RawIncoming::Binary(_) => Inbound::Other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_reduce_to_what_is_counted() {
        let msg = r#"{"op":"message","team":"t","offset":7,"type":"bench.tick","user":"u","data":{"t":5,"p":1,"s":2,"x":"xx"},"ts":"2026-01-01T00:00:00.000Z"}"#;
        assert_eq!(
            inbound(msg),
            Inbound::Message {
                offset: 7,
                payload: Some(Payload {
                    sent_us: 5,
                    publisher: 1,
                    seq: 2
                })
            }
        );
        let foreign =
            r#"{"op":"message","team":"t","offset":8,"type":"x","user":"u","data":[1],"ts":"x"}"#;
        assert_eq!(
            inbound(foreign),
            Inbound::Message {
                offset: 8,
                payload: None
            }
        );
        assert_eq!(
            inbound(r#"{"op":"reply","id":3,"ok":true,"offset":9}"#),
            Inbound::Ack { id: 3, offset: 9 }
        );
        assert_eq!(
            inbound(r#"{"op":"error","id":4,"code":"rate_limited","message":"slow down"}"#),
            Inbound::Refused {
                id: Some(4),
                code: "rate_limited".into()
            }
        );
        assert_eq!(
            inbound(r#"{"op":"presence_diff","team":"t","joins":[],"leaves":[]}"#),
            Inbound::Other
        );
        assert_eq!(inbound("not json"), Inbound::Other);
    }
}
