//! `teamhub-relay`: the smallest server that can carry the load generator's traffic.
//!
//! It exists to show what this machine allows, so the hub's figures have a floor to
//! be compared with. It speaks just enough teamhub frames for the generator to drive it
//! unchanged (join, publish, leave and ping replies of the same shape) and does
//! nothing else: no authentication (any token, or none, is accepted), no offsets
//! (always 0), no presence, no history, no persistence. What it keeps from the hub's
//! design is the part that costs or saves the most: a message is encoded once and its
//! bytes are shared by every receiver, each connection has a bounded outbound queue
//! (a full one closes that connection, like the hub's 1013) and writes a batch of
//! frames with one flush.
//!
//! Run: `teamhub-relay --listen 127.0.0.1:8090`, then point the generator at
//! `ws://127.0.0.1:8090/ws` with `--server-kind relay`.

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::{WebSocketStream, accept_hdr_async_with_config};

#[derive(Debug, Parser)]
#[command(
    name = "teamhub-relay",
    about = "Minimal WebSocket relay baseline for teamhub-loadtest"
)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:8090")]
    listen: SocketAddr,
    /// Runtime worker threads (the hub uses Tokio's default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// Outbound frames queued per connection before it is closed.
    #[arg(long, default_value_t = 1024)]
    outbox: usize,
}

type Outbox = mpsc::Sender<Utf8Bytes>;

/// Team -> connection id -> its outbound queue. The lock is a std mutex held only to
/// copy senders out or to `try_send`, never across an `.await`.
#[derive(Default)]
struct Teams {
    teams: Mutex<HashMap<String, HashMap<u64, Outbox>>>,
    next_id: AtomicU64,
}

impl Teams {
    fn join(&self, team: &str, id: u64, tx: &Outbox) {
        let mut teams = self.teams.lock().unwrap();
        teams
            .entry(team.to_owned())
            .or_default()
            .insert(id, tx.clone());
    }

    fn leave(&self, team: &str, id: u64) {
        let mut teams = self.teams.lock().unwrap();
        if let Some(members) = teams.get_mut(team) {
            members.remove(&id);
            if members.is_empty() {
                teams.remove(team);
            }
        }
    }

    /// Queues `frame` for every member but `from`; returns how many queues were full.
    fn broadcast(&self, team: &str, from: u64, frame: &Utf8Bytes) -> usize {
        let teams = self.teams.lock().unwrap();
        let Some(members) = teams.get(team) else {
            return 0;
        };
        members
            .iter()
            .filter(|(id, _)| **id != from)
            .filter(|(_, tx)| tx.try_send(frame.clone()).is_err())
            .count()
    }
}

/// The fields of a teamhub client frame the relay looks at.
#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(borrow)]
    op: Cow<'a, str>,
    id: Option<u64>,
    #[serde(borrow)]
    team: Option<Cow<'a, str>>,
    #[serde(rename = "type", borrow)]
    ty: Option<Cow<'a, str>>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
    #[serde(default)]
    echo: bool,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = args.threads {
        builder.worker_threads(n.max(1));
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("teamhub-relay: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("teamhub-relay: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn serve(args: Args) -> std::io::Result<()> {
    let listener = TcpListener::bind(args.listen).await?;
    eprintln!(
        "teamhub-relay listening on ws://{}/ws",
        listener.local_addr()?
    );
    let teams = Arc::new(Teams::default());
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            // Out of files and the like: keep serving the sockets we have.
            Err(e) => {
                eprintln!("accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(connection(stream, teams.clone(), args.outbox));
    }
}

async fn connection(stream: TcpStream, teams: Arc<Teams>, outbox: usize) {
    // tungstenite zero-fills up to `read_buffer_size` on every read; its 128 KiB
    // default would dominate the cost of small frames (the hub uses 4 KiB too). The
    // write buffer only fills between `feed`s and is written out by `flush`.
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .max_message_size(Some(64 << 10));
    let Ok(mut ws) = accept_hdr_async_with_config(stream, select_subprotocol, Some(config)).await
    else {
        return;
    };
    let id = teams.next_id.fetch_add(1, Ordering::Relaxed);
    let (tx, mut rx) = mpsc::channel::<Utf8Bytes>(outbox.max(1));
    let mut joined: Vec<String> = Vec::new();
    let mut batch = Vec::with_capacity(256);
    loop {
        tokio::select! {
            n = rx.recv_many(&mut batch, 256) => {
                if n == 0 {
                    break;
                }
                if write_batch(&mut ws, &mut batch).await.is_err() {
                    break;
                }
            }
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(text))) => {
                    let reply = handle(&teams, id, &tx, &mut joined, text.as_str());
                    if let Some(reply) = reply
                        && ws.send(Message::Text(reply)).await.is_err()
                    {
                        break;
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                // tungstenite answers pings itself on the next write or flush.
                Some(Ok(_)) => {
                    if ws.flush().await.is_err() {
                        break;
                    }
                }
            },
        }
        if tx.capacity() == 0 {
            // Our own queue is full: this client cannot keep up (the hub's 1013).
            let frame = CloseFrame {
                code: CloseCode::Again,
                reason: "too slow".into(),
            };
            let _ = ws.close(Some(frame)).await;
            break;
        }
    }
    for team in &joined {
        teams.leave(team, id);
    }
}

/// Selects `teamhub.v1` when the client offers it, as the hub does.
// The signature is tungstenite's `Callback`; its large error type is not ours to box.
#[allow(clippy::result_large_err)]
fn select_subprotocol(req: &Request, mut resp: Response) -> Result<Response, ErrorResponse> {
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
}

async fn write_batch(
    ws: &mut WebSocketStream<TcpStream>,
    batch: &mut Vec<Utf8Bytes>,
) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    for frame in batch.drain(..) {
        ws.feed(Message::Text(frame)).await?;
    }
    ws.flush().await
}

/// Acts on one client frame; returns the reply to send, if any.
fn handle(
    teams: &Teams,
    id: u64,
    tx: &Outbox,
    joined: &mut Vec<String>,
    text: &str,
) -> Option<Utf8Bytes> {
    let Ok(frame) = serde_json::from_str::<Frame<'_>>(text) else {
        return Some(error(None, "invalid frame"));
    };
    let rid = frame.id.map_or("null".to_owned(), |i| i.to_string());
    match (&*frame.op, frame.team.as_deref()) {
        ("join", Some(team)) => {
            if !joined.iter().any(|t| t == team) {
                teams.join(team, id, tx);
                joined.push(team.to_owned());
            }
            let team_json = serde_json::to_string(team).unwrap_or_default();
            Some(Utf8Bytes::from(format!(
                r#"{{"op":"reply","id":{rid},"ok":true,"team":{team_json},"epoch":"relay","offset":0,"presence":[],"recovered":false,"missed":[]}}"#
            )))
        }
        ("leave", Some(team)) => {
            teams.leave(team, id);
            joined.retain(|t| t != team);
            Some(Utf8Bytes::from(format!(
                r#"{{"op":"reply","id":{rid},"ok":true}}"#
            )))
        }
        ("publish", Some(team)) => {
            let (Some(ty), Some(data)) = (frame.ty.as_deref(), frame.data) else {
                return Some(error(frame.id, "publish needs type and data"));
            };
            // Encoded once; every receiver gets a clone of the same bytes.
            let message = Utf8Bytes::from(format!(
                r#"{{"op":"message","team":{},"offset":0,"type":{},"user":"relay","data":{},"ts":"1970-01-01T00:00:00.000Z"}}"#,
                serde_json::to_string(team).unwrap_or_default(),
                serde_json::to_string(ty).unwrap_or_default(),
                data.get()
            ));
            teams.broadcast(team, if frame.echo { u64::MAX } else { id }, &message);
            Some(Utf8Bytes::from(format!(
                r#"{{"op":"reply","id":{rid},"ok":true,"offset":0}}"#
            )))
        }
        ("ping", _) => Some(Utf8Bytes::from(format!(r#"{{"op":"pong","id":{rid}}}"#))),
        _ => Some(error(frame.id, "unsupported frame")),
    }
}

fn error(id: Option<u64>, message: &str) -> Utf8Bytes {
    let id = id.map_or("null".to_owned(), |i| i.to_string());
    Utf8Bytes::from(format!(
        r#"{{"op":"error","id":{id},"code":"bad_request","message":"{message}"}}"#
    ))
}
