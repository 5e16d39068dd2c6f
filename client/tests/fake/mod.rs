//! A tiny stand-in for the hub, enough to exercise the client library.
//!
//! Each accepted connection runs a script (`async fn(Peer)`) written by the test, so
//! every test states exactly what the server does. The handshake checks a token the
//! way the hub does (header or query, 401 otherwise) and refuses one origin with 403.
//! [`FakeHub::finish`] re-raises a panic from any script, so a failed server-side
//! assertion fails the test instead of only timing out the client.

#![allow(dead_code)] // each test file uses a different part of this module

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use teamhub_protocol::{
    ClientFrame, ClientOp, JoinReply, MessageFrame, PresenceEntry, PresenceReply, PublishReply,
    RefreshReply, Reply, ReplyBody, ServerFrame, decode_client_frame,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderMap, HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Bytes, Message};

/// How long any wait in a test may take before it counts as a failure.
pub const WAIT: Duration = Duration::from_secs(5);

/// The only token the fake accepts.
pub const GOOD_TOKEN: &str = "good token/+=";
/// The only origin the fake refuses.
pub const BAD_ORIGIN: &str = "https://evil.example";

/// What the server saw of one upgrade request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path_and_query: String,
    pub headers: HeaderMap,
    pub peer: SocketAddr,
}

pub struct FakeHub {
    pub addr: SocketAddr,
    seen: mpsc::UnboundedReceiver<Seen>,
    accept: JoinHandle<()>,
    scripts: mpsc::UnboundedReceiver<JoinHandle<()>>,
}

impl FakeHub {
    /// Listens on 127.0.0.1:0 (so also reachable from 127.0.0.2) and runs `script` for
    /// every connection that passes the handshake.
    pub async fn start<F, Fut>(script: F) -> FakeHub
    where
        F: Fn(Peer) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (seen_tx, seen) = mpsc::unbounded_channel();
        let (scripts_tx, scripts) = mpsc::unbounded_channel();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, peer)) = listener.accept().await else {
                    return;
                };
                let Some((ws, seen)) = handshake(stream, peer).await else {
                    continue;
                };
                let _ = seen_tx.send(seen.clone());
                let _ = scripts_tx.send(tokio::spawn(script(Peer { ws, seen })));
            }
        });
        FakeHub {
            addr,
            seen,
            accept,
            scripts,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    /// The next upgrade request the server accepted.
    pub async fn seen(&mut self) -> Seen {
        tokio::time::timeout(WAIT, self.seen.recv())
            .await
            .expect("no connection reached the fake hub")
            .unwrap()
    }

    /// Waits for every script started so far and re-raises the first panic.
    pub async fn finish(mut self) {
        self.accept.abort();
        while let Ok(script) = self.scripts.try_recv() {
            match tokio::time::timeout(WAIT, script).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Ok(Err(e)) => panic!("server script failed: {e}"),
                Err(_) => panic!("server script did not finish"),
            }
        }
    }
}

async fn handshake(
    stream: TcpStream,
    peer: SocketAddr,
) -> Option<(WebSocketStream<TcpStream>, Seen)> {
    let mut seen = None;
    // The callback's signature is tungstenite's, large error type and all.
    #[allow(clippy::result_large_err)]
    let callback = |req: &Request, mut resp: Response| -> Result<Response, ErrorResponse> {
        seen = Some(Seen {
            path_and_query: req
                .uri()
                .path_and_query()
                .map(|p| p.to_string())
                .unwrap_or_default(),
            headers: req.headers().clone(),
            peer,
        });
        let bearer = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_owned);
        let query = req
            .uri()
            .query()
            .and_then(|q| q.split('&').find_map(|pair| pair.strip_prefix("token=")))
            .map(percent_decode);
        if bearer.or(query).as_deref() != Some(GOOD_TOKEN) {
            return Err(refuse(StatusCode::UNAUTHORIZED, "unauthorized"));
        }
        if req.headers().get("origin").and_then(|v| v.to_str().ok()) == Some(BAD_ORIGIN) {
            return Err(refuse(StatusCode::FORBIDDEN, "forbidden"));
        }
        let offered = req
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').any(|p| p.trim() == "teamhub.v1"));
        if offered {
            resp.headers_mut().insert(
                "sec-websocket-protocol",
                HeaderValue::from_static("teamhub.v1"),
            );
        }
        Ok(resp)
    };
    let ws = tokio_tungstenite::accept_hdr_async(stream, callback)
        .await
        .ok()?;
    Some((ws, seen?))
}

fn refuse(status: StatusCode, code: &str) -> ErrorResponse {
    let mut resp = ErrorResponse::new(Some(format!(
        r#"{{"error":{{"code":"{code}","message":"refused by the fake hub"}}}}"#
    )));
    *resp.status_mut() = status;
    resp
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
            out.push(u8::from_str_radix(hex, 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

/// The server side of one connection.
pub struct Peer {
    pub ws: WebSocketStream<TcpStream>,
    pub seen: Seen,
}

impl Peer {
    /// The next data or close message (pings and pongs are answered and skipped by
    /// tungstenite only when asked for, so they are returned too; see `recv_frame`).
    pub async fn recv_raw(&mut self) -> Option<Message> {
        tokio::time::timeout(WAIT, self.ws.next())
            .await
            .expect("the client sent nothing")
            .map(|m| m.expect("websocket error on the server side"))
    }

    /// The next client frame, decoded as the hub would.
    pub async fn recv_frame(&mut self) -> ClientFrame {
        loop {
            match self.recv_raw().await {
                Some(Message::Text(text)) => {
                    return decode_client_frame(text.as_str())
                        .unwrap_or_else(|e| panic!("client sent an invalid frame {text}: {e}"));
                }
                Some(Message::Ping(_) | Message::Pong(_)) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    pub async fn send(&mut self, frame: &ServerFrame) {
        self.send_text(&serde_json::to_string(frame).unwrap()).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.unwrap();
    }

    pub async fn send_raw(&mut self, message: Message) {
        self.ws.send(message).await.unwrap();
    }

    pub async fn reply(&mut self, id: Option<u64>, body: ReplyBody) {
        self.send(&ServerFrame::Reply(Reply { id, ok: true, body }))
            .await;
    }

    /// Closes with `code` and waits for the client's half of the handshake.
    pub async fn close(&mut self, code: u16, reason: &str) {
        self.ws
            .send(Message::Close(Some(CloseFrame {
                code: CloseCode::from(code),
                reason: reason.into(),
            })))
            .await
            .unwrap();
        loop {
            match tokio::time::timeout(WAIT, self.ws.next()).await {
                Ok(Some(Ok(Message::Close(_))) | None | Some(Err(_))) => return,
                Ok(Some(Ok(_))) => continue,
                Err(_) => panic!("the client did not answer the close frame"),
            }
        }
    }

    /// Answers requests like a hub with one team at offset `offset`, until the client
    /// closes. Messages published with type `test.close` close the connection with the
    /// code in their data instead.
    pub async fn serve(mut self, epoch: &str, mut offset: u64) {
        loop {
            let frame = match self.recv_raw().await {
                Some(Message::Text(text)) => decode_client_frame(text.as_str()).unwrap(),
                // Reading on lets tungstenite answer the client's close frame.
                Some(Message::Close(_)) => continue,
                None => return,
                Some(_) => continue,
            };
            let body = match frame.op {
                ClientOp::Join(join) => {
                    let recovered = join.since.as_ref().is_some_and(|s| s.epoch == epoch);
                    let missed = match &join.since {
                        Some(since) if recovered => (since.offset + 1..=offset)
                            .map(|o| message(join.team.as_str(), o))
                            .collect(),
                        _ => Vec::new(),
                    };
                    ReplyBody::Join(JoinReply {
                        team: join.team,
                        epoch: epoch.into(),
                        offset,
                        presence: vec![entry("alice")],
                        recovered,
                        missed,
                    })
                }
                ClientOp::Publish(p) if p.ty.as_str() == "test.close" => {
                    let code: u16 = serde_json::from_str(p.data.get()).unwrap();
                    self.close(code, "closed by test").await;
                    return;
                }
                ClientOp::Publish(_) => {
                    offset += 1;
                    ReplyBody::Publish(PublishReply { offset })
                }
                ClientOp::Presence(_) => ReplyBody::Presence(PresenceReply {
                    presence: vec![entry("alice"), entry("bob")],
                }),
                ClientOp::Refresh(_) => ReplyBody::Refresh(RefreshReply { exp: 4_102_444_800 }),
                ClientOp::Leave(_) => ReplyBody::Empty {},
                ClientOp::Ping => {
                    self.send(&ServerFrame::Pong { id: frame.id }).await;
                    continue;
                }
            };
            self.reply(frame.id, body).await;
        }
    }
}

pub fn message(team: &str, offset: u64) -> MessageFrame {
    MessageFrame {
        team: team.try_into().unwrap(),
        offset,
        ty: "chat.message".try_into().unwrap(),
        user: "bob".try_into().unwrap(),
        data: serde_json::json!({ "n": offset }),
        ts: "2026-11-22T10:00:00.123Z".into(),
    }
}

pub fn entry(user: &str) -> PresenceEntry {
    PresenceEntry {
        user: user.try_into().unwrap(),
        name: None,
        conns: 1,
        meta: None,
    }
}

pub fn bytes(b: &'static [u8]) -> Bytes {
    Bytes::from_static(b)
}
