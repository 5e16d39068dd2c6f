//! The Socket.IO baseline's wire: Engine.IO v4 over a WebSocket, Socket.IO v5 packets.
//!
//! Just enough of it for the baseline server in `baselines/socketio`:
//! `0{...}` (open) -> `40` (connect the default namespace) -> `40{"sid":..}`;
//! `42<id>["join",TEAM]` answered by the ack `43<id>[...]`;
//! `42["publish",TEAM,TYPE,DATA]` out and `42["message",TEAM,DATA]` in; the server's
//! `2` (ping) is answered with `3` (pong). Everything is text, so
//! `teamhub_client::Connection` carries it unchanged (it hands non-teamhub text back as
//! `Incoming::Text`).

use serde::Deserialize;
use teamhub_client::{ConnectOptions, Connection, Incoming, RawIncoming};

use super::{Dial, Inbound, TransportError};
use crate::payload::Payload;

/// The Engine.IO endpoint for a server URL given as `ws://host:port` (or already
/// pointing at `/socket.io/`).
pub(super) fn endpoint(url: &str) -> String {
    if url.contains("/socket.io/") {
        return url.to_owned();
    }
    let base = url.trim_end_matches('/');
    // A teamhub-style path (`/ws`) means the same host; Socket.IO has its own path.
    let base = base.strip_suffix("/ws").unwrap_or(base);
    format!("{base}/socket.io/?EIO=4&transport=websocket")
}

pub(super) async fn connect(dial: Dial<'_>) -> Result<Connection, TransportError> {
    // The baseline does no authentication; the token is not sent.
    let mut opts = ConnectOptions::new(endpoint(dial.url)).subprotocol(false);
    if let Some(bind) = dial.bind {
        opts = opts.bind_addr(bind);
    }
    let mut conn = Connection::connect(opts).await?;
    expect_text(&mut conn, "engine.io open", |t| t.starts_with('0')).await?;
    conn.send_text("40").await?;
    expect_text(&mut conn, "namespace connect", |t| t.starts_with("40")).await?;
    Ok(conn)
}

async fn expect_text(
    conn: &mut Connection,
    during: &'static str,
    wanted: impl Fn(&str) -> bool,
) -> Result<(), TransportError> {
    loop {
        match conn.recv().await? {
            Incoming::Text(t) if wanted(&t) => return Ok(()),
            Incoming::Text(t) if t == "2" => conn.send_text("3").await?,
            Incoming::Text(t) if t.starts_with("44") => {
                return Err(TransportError::Refused {
                    what: during,
                    detail: t,
                });
            }
            Incoming::Closed { code, reason } => {
                return Err(TransportError::Closed {
                    during,
                    code,
                    reason,
                });
            }
            other => {
                return Err(TransportError::Unexpected {
                    during,
                    frame: format!("{other:?}"),
                });
            }
        }
    }
}

pub(super) async fn join(
    conn: &mut Connection,
    id: u64,
    team: &str,
) -> Result<u64, TransportError> {
    let team_json = serde_json::to_string(team).map_err(teamhub_client::ClientError::from)?;
    conn.send_text(&format!("42{id}[\"join\",{team_json}]"))
        .await?;
    loop {
        match recv(conn).await? {
            Inbound::Ack { id: got, .. } if got == id => return Ok(0),
            Inbound::Closed { code, reason } => {
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
    team: &str,
    ty: &str,
    data: String,
) -> Result<(), TransportError> {
    let team_json = serde_json::to_string(team).map_err(teamhub_client::ClientError::from)?;
    let ty_json = serde_json::to_string(ty).map_err(teamhub_client::ClientError::from)?;
    conn.send_text(&format!("42[\"publish\",{team_json},{ty_json},{data}]"))
        .await?;
    Ok(())
}

/// The ack id of `43<id>[...]`.
fn ack_id(text: &str) -> Option<u64> {
    let digits = text.strip_prefix("43")?;
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    digits[..end].parse().ok()
}

#[derive(Deserialize)]
struct MessageEvent(String, serde::de::IgnoredAny, Payload);

pub(super) async fn recv(conn: &mut Connection) -> Result<Inbound, TransportError> {
    // Undecoded, as the teamhub wire does: every packet here is text that is not a
    // teamhub frame, so `Connection::recv` would try two JSON decodes first.
    Ok(match conn.recv_raw().await? {
        RawIncoming::Text(t) => {
            let t = t.as_str();
            if let Some(body) = t.strip_prefix("42") {
                match serde_json::from_str::<MessageEvent>(body) {
                    Ok(MessageEvent(event, _, payload)) if event == "message" => Inbound::Message {
                        offset: 0,
                        payload: Some(payload),
                    },
                    _ => Inbound::Other,
                }
            } else if t == "2" {
                conn.send_text("3").await?;
                Inbound::Other
            } else if let Some(id) = ack_id(t) {
                Inbound::Ack { id, offset: 0 }
            } else if t == "41" || t.starts_with('1') {
                Inbound::Closed {
                    code: None,
                    reason: format!("socket.io disconnect packet {t:?}"),
                }
            } else {
                Inbound::Other
            }
        }
        RawIncoming::Closed { code, reason } => Inbound::Closed { code, reason },
        RawIncoming::Binary(_) => Inbound::Other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(
            endpoint("ws://127.0.0.1:3000"),
            "ws://127.0.0.1:3000/socket.io/?EIO=4&transport=websocket"
        );
        assert_eq!(
            endpoint("ws://127.0.0.1:3000/ws"),
            "ws://127.0.0.1:3000/socket.io/?EIO=4&transport=websocket"
        );
        let full = "ws://h:1/socket.io/?EIO=4&transport=websocket";
        assert_eq!(endpoint(full), full);
    }

    #[test]
    fn acks_carry_their_id() {
        assert_eq!(ack_id("4312[]"), Some(12));
        assert_eq!(ack_id("437"), Some(7));
        assert_eq!(ack_id("42[\"x\"]"), None);
    }

    #[test]
    fn message_events_decode() {
        let body = r#"["message","t1",{"t":5,"p":1,"s":2,"x":"xx"}]"#;
        let MessageEvent(ev, _, p) = serde_json::from_str(body).unwrap();
        assert_eq!((ev.as_str(), p.seq), ("message", 2));
    }
}
