//! teamhub frames, as the hub and the relay baseline speak them.

use serde_json::value::RawValue;
use teamhub_client::protocol::{
    ClientFrame, ClientOp, Join, MessageType, Publish, ReplyBody, ServerFrame, TeamId,
};
use teamhub_client::{ConnectOptions, Connection, Incoming};

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

pub(super) async fn recv(conn: &mut Connection) -> Result<Inbound, TransportError> {
    Ok(match conn.recv().await? {
        Incoming::Frame(ServerFrame::Message(m)) => Inbound::Message {
            offset: m.offset,
            payload: Payload::from_value(&m.data),
        },
        Incoming::Frame(ServerFrame::Reply(r)) => match r.body {
            ReplyBody::Publish(p) => Inbound::Ack {
                id: r.id.unwrap_or_default(),
                offset: p.offset,
            },
            _ => Inbound::Other,
        },
        Incoming::Frame(ServerFrame::Error(e)) => Inbound::Refused {
            id: e.id,
            code: e.code.to_string(),
        },
        Incoming::Closed { code, reason } => Inbound::Closed { code, reason },
        _ => Inbound::Other,
    })
}
