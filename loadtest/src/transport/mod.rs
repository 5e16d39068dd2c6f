//! One load socket, whatever server it talks to.
//!
//! The generator drives three servers with the same scenarios: the hub and the relay
//! baseline speak teamhub frames ([`teamhub`]); the Socket.IO baseline speaks
//! Engine.IO v4 ([`socketio`]). Both ride on `teamhub_client::Connection`, so there
//! is one WebSocket client in the project. A socket is owned by exactly one task and
//! no extra task or channel sits between it and the wire.

mod socketio;
mod teamhub;

use std::net::IpAddr;

use teamhub_client::{ClientError, Connection};

use crate::payload::Payload;

/// Which wire format a server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// teamhub frames on `/ws` (the hub and the relay baseline).
    Teamhub,
    /// Engine.IO v4 / Socket.IO v5 packets (the Socket.IO baseline).
    SocketIo,
}

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("server refused {what}: {detail}")]
    Refused { what: &'static str, detail: String },
    #[error("connection closed during {during} (code {code:?}): {reason}")]
    Closed {
        during: &'static str,
        code: Option<u16>,
        reason: String,
    },
    #[error("unexpected frame during {during}: {frame}")]
    Unexpected { during: &'static str, frame: String },
}

/// What arrived, reduced to what the accounting needs.
#[derive(Debug, Clone, PartialEq)]
pub enum Inbound {
    /// A team message. `offset` is 0 on servers that have none.
    Message {
        offset: u64,
        payload: Option<Payload>,
    },
    /// A request was acknowledged: a publish at `offset` (hub, relay), or a join
    /// (Socket.IO, offset 0).
    Ack { id: u64, offset: u64 },
    /// The server answered a request with an error.
    Refused { id: Option<u64>, code: String },
    /// The connection ended.
    Closed { code: Option<u16>, reason: String },
    /// Presence diffs, pings and anything else the scenario does not count.
    Other,
}

/// Everything needed to open one socket.
#[derive(Debug, Clone)]
pub struct Dial<'a> {
    pub url: &'a str,
    pub token: Option<String>,
    pub bind: Option<IpAddr>,
}

/// An open socket of either wire format.
#[derive(Debug)]
pub struct Socket {
    conn: Connection,
    wire: Wire,
    next_id: u64,
}

impl Socket {
    /// Opens the WebSocket and, for Socket.IO, completes the Engine.IO and namespace
    /// handshakes, so the socket is ready for [`Socket::join`].
    pub async fn connect(wire: Wire, dial: Dial<'_>) -> Result<Socket, TransportError> {
        let conn = match wire {
            Wire::Teamhub => teamhub::connect(dial).await?,
            Wire::SocketIo => socketio::connect(dial).await?,
        };
        Ok(Socket {
            conn,
            wire,
            next_id: 1,
        })
    }

    fn id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Joins `team` and waits for the answer; returns the team's offset at the join
    /// (0 where the server has no offsets). Frames before the answer are skipped: before
    /// the load starts only presence diffs and pings can arrive.
    pub async fn join(&mut self, team: &str) -> Result<u64, TransportError> {
        let id = self.id();
        match self.wire {
            Wire::Teamhub => teamhub::join(&mut self.conn, id, team).await,
            Wire::SocketIo => socketio::join(&mut self.conn, id, team).await,
        }
    }

    /// Sends one message without waiting for its answer; returns the request id
    /// ([`Inbound::Ack`] carries it back where the server acknowledges publishes).
    pub async fn publish(
        &mut self,
        team: &str,
        ty: &str,
        data: String,
        echo: bool,
    ) -> Result<u64, TransportError> {
        let id = self.id();
        match self.wire {
            Wire::Teamhub => teamhub::publish(&mut self.conn, id, team, ty, data, echo).await?,
            Wire::SocketIo => socketio::publish(&mut self.conn, team, ty, data).await?,
        }
        Ok(id)
    }

    /// Whether publishes are acknowledged with an [`Inbound::Ack`].
    pub fn acks_publishes(&self) -> bool {
        self.wire == Wire::Teamhub
    }

    /// The next inbound event. Cancel safe (it only awaits `Connection::recv`, and the
    /// Socket.IO pong it may send is a single short write).
    pub async fn recv(&mut self) -> Result<Inbound, TransportError> {
        match self.wire {
            Wire::Teamhub => teamhub::recv(&mut self.conn).await,
            Wire::SocketIo => socketio::recv(&mut self.conn).await,
        }
    }

    /// Closes cleanly (close frame, waits at most a few seconds for the server's).
    pub async fn close(mut self) {
        let _ = self.conn.close().await;
    }
}
