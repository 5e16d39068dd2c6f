//! `teamhub listen`: the reference client for IDE plugins and scripts.
//!
//! It joins the given teams and prints every server frame as one JSON line on stdout;
//! its own notices go to stderr, so stdout stays machine-readable. After any
//! disconnect it reconnects (at once after a drain's 1012, otherwise with
//! `teamhub_client::Backoff`: exponential, full jitter) and joins every team again with `since` = the last position it
//! saw there, so a node restart loses nothing that history still holds. When recovery
//! is impossible (`recovered: false` after a `since`) it says so on stderr and carries
//! on from the team's current offset. What a retry cannot fix (a refused token, a team
//! the token has no role in, a join error that is not retryable, an expired token, a
//! close the contract says not to retry)
//! ends it with a clear message and a non-zero exit.
//!
//! Output: frames are printed as decoded by `teamhub-protocol`, one per line. A join
//! reply is printed with `missed: []`, followed by each missed message as its own
//! `message` line, so a consumer sees every message exactly once, in offset order,
//! whether it arrived live or through recovery.

use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use teamhub_client::{
    Backoff, ClientError, ConnectOptions, Connection, Delays, Incoming, TlsConfig,
};
use teamhub_protocol::{
    ClientFrame, ClientOp, CloseCode, ErrorCode, Join, MessageFrame, Reconnect, ReplyBody,
    ServerFrame, Since, TeamId,
};

/// What `listen` needs, already validated.
#[derive(Debug, Clone)]
pub struct ListenConfig {
    /// `ws://host:port/ws`.
    pub ws_url: String,
    pub token: String,
    pub teams: Vec<TeamId>,
    /// Message type prefixes to print; empty prints every message.
    pub types: Vec<String>,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// What a `wss://` URL trusts; `None` trusts the system's roots.
    pub tls: Option<TlsConfig>,
}

/// Why `listen` stopped for good.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("the node refused the token (HTTP {status}): {body}; not retrying")]
    Refused { status: u16, body: String },
    #[error("joining team {team} failed: {code}: {message}; not retrying")]
    JoinRefused {
        team: TeamId,
        code: ErrorCode,
        message: String,
    },
    #[error("the token expired (close 4001); start again with a fresh token")]
    TokenExpired,
    #[error("the node closed the connection with {code} ({reason}); not retrying")]
    Closed { code: u16, reason: String },
    #[error("no team left to listen to (kicked from the last one)")]
    NoTeamLeft,
    #[error("invalid url {0:?}: expected ws://HOST:PORT or wss://HOST:PORT")]
    InvalidUrl(String),
    #[error("{0}; not retrying")]
    Tls(String),
}

/// Turns the node's base URL (`ws://host:port`, `wss://`, `http://`, `https://`,
/// optionally already ending in `/ws`) into the socket URL.
pub fn socket_url(base: &str) -> Result<String, ListenError> {
    let trimmed = base.trim_end_matches('/');
    let (scheme, rest) = match trimmed.split_once("://") {
        Some(("ws" | "http", rest)) => ("ws", rest),
        Some(("wss" | "https", rest)) => ("wss", rest),
        _ => return Err(ListenError::InvalidUrl(base.to_owned())),
    };
    if rest.is_empty() {
        return Err(ListenError::InvalidUrl(base.to_owned()));
    }
    let ws = format!("{scheme}://{rest}");
    Ok(if ws.ends_with("/ws") {
        ws
    } else {
        format!("{ws}/ws")
    })
}

/// How one connection ended, when it is worth another.
#[derive(Debug)]
struct Retry {
    immediately: bool,
    why: String,
}

/// Per-team bookkeeping that survives reconnects.
#[derive(Debug, Default)]
struct Positions {
    teams: Vec<TeamId>,
    since: HashMap<TeamId, Since>,
}

fn notice(text: impl std::fmt::Display) {
    eprintln!("teamhub listen: {text}");
}

/// Runs until `shutdown` resolves (then returns `Ok`), stdout closes, or a
/// [`ListenError`].
pub async fn run(
    config: ListenConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), ListenError> {
    let mut out = Printer {
        out: std::io::stdout(),
        types: config.types.clone(),
        open: true,
    };
    let mut positions = Positions {
        teams: config.teams.clone(),
        since: HashMap::new(),
    };
    let policy = Backoff::new(config.backoff_initial, config.backoff_max);
    let mut backoff = policy.delays();
    tokio::pin!(shutdown);
    loop {
        let retry = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            ended = connection(&config, &mut positions, &mut backoff, &mut out) => ended?,
        };
        if !out.open {
            return Ok(());
        }
        let delay = if retry.immediately {
            Duration::ZERO
        } else {
            // Unlimited attempts: the iterator never ends.
            backoff.next().unwrap_or(policy.cap())
        };
        notice(format_args!(
            "disconnected ({}); reconnecting in {} ms",
            retry.why,
            delay.as_millis()
        ));
        tokio::select! {
            _ = &mut shutdown => return Ok(()),
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// One connection: connect, join every team, print until it ends.
async fn connection(
    config: &ListenConfig,
    positions: &mut Positions,
    backoff: &mut Delays,
    out: &mut Printer,
) -> Result<Retry, ListenError> {
    let mut opts = ConnectOptions::new(&config.ws_url).token(&config.token);
    opts.tls = config.tls.clone();
    let mut conn = match Connection::connect(opts).await {
        Ok(conn) => conn,
        Err(ClientError::Http { status, body }) if matches!(status, 401 | 403) => {
            return Err(ListenError::Refused { status, body });
        }
        // A certificate that does not verify fails the same way every time.
        Err(e @ ClientError::Tls { .. }) => return Err(ListenError::Tls(e.to_string())),
        Err(e) => {
            return Ok(Retry {
                immediately: false,
                why: e.to_string(),
            });
        }
    };
    notice(format_args!("connected to {}", config.ws_url));

    // id -> (team, the `since` it was joined with)
    let mut joining: HashMap<u64, (TeamId, Option<Since>)> = HashMap::new();
    for (i, team) in positions.teams.iter().enumerate() {
        let id = i as u64 + 1;
        let since = positions.since.get(team).cloned();
        let frame = ClientFrame {
            id: Some(id),
            op: ClientOp::Join(Join {
                team: team.clone(),
                since: since.clone(),
                meta: None,
            }),
        };
        if let Err(e) = conn.send(&frame).await {
            return Ok(Retry {
                immediately: false,
                why: e.to_string(),
            });
        }
        joining.insert(id, (team.clone(), since));
    }

    loop {
        let incoming = match conn.recv().await {
            Ok(incoming) => incoming,
            Err(e) => {
                return Ok(Retry {
                    immediately: false,
                    why: e.to_string(),
                });
            }
        };
        match incoming {
            Incoming::Frame(ServerFrame::Reply(mut reply)) => {
                let joined = reply.id.and_then(|id| joining.remove(&id));
                let ReplyBody::Join(join) = &mut reply.body else {
                    out.frame(&ServerFrame::Reply(reply));
                    continue;
                };
                let missed = std::mem::take(&mut join.missed);
                let (team, epoch, offset, recovered) = (
                    join.team.clone(),
                    join.epoch.clone(),
                    join.offset,
                    join.recovered,
                );
                out.frame(&ServerFrame::Reply(reply));
                if let Some((_, Some(since))) = &joined
                    && !recovered
                {
                    notice(format_args!(
                        "team {team}: cannot recover what was published after offset {} of epoch {} (history no longer holds it); continuing from offset {offset} of epoch {epoch}",
                        since.offset, since.epoch
                    ));
                }
                let mut position = Since { epoch, offset };
                if recovered && !missed.is_empty() {
                    notice(format_args!(
                        "team {team}: recovered {} missed messages",
                        missed.len()
                    ));
                }
                for message in missed {
                    position.offset = position.offset.max(message.offset);
                    out.message(message);
                }
                positions.since.insert(team, position);
                if joining.is_empty() {
                    // Every team answered: this connection works.
                    backoff.reset();
                }
            }
            Incoming::Frame(ServerFrame::Error(error)) => {
                if let Some((team, _)) = error.id.and_then(|id| joining.remove(&id)) {
                    out.frame(&ServerFrame::Error(error.clone()));
                    if error.code.is_retryable() {
                        // The node is overloaded or lost Redis: try again later.
                        let _ = conn.close().await;
                        return Ok(Retry {
                            immediately: false,
                            why: format!("joining team {team}: {}: {}", error.code, error.message),
                        });
                    }
                    return Err(ListenError::JoinRefused {
                        team,
                        code: error.code,
                        message: error.message,
                    });
                }
                out.frame(&ServerFrame::Error(error));
            }
            Incoming::Frame(ServerFrame::Message(message)) => {
                if let Some(since) = positions.since.get_mut(&message.team) {
                    if message.offset <= since.offset {
                        continue; // already printed (recovery overlap)
                    }
                    if message.offset > since.offset + 1 {
                        notice(format_args!(
                            "team {}: offsets {}..{} never arrived",
                            message.team,
                            since.offset + 1,
                            message.offset - 1
                        ));
                    }
                    since.offset = message.offset;
                }
                out.message(message);
            }
            Incoming::Frame(ServerFrame::Kicked(kicked)) => {
                out.frame(&ServerFrame::Kicked(kicked.clone()));
                notice(format_args!(
                    "left team {} ({:?})",
                    kicked.team, kicked.reason
                ));
                positions.teams.retain(|t| *t != kicked.team);
                positions.since.remove(&kicked.team);
                if positions.teams.is_empty() {
                    let _ = conn.close().await;
                    return Err(ListenError::NoTeamLeft);
                }
            }
            Incoming::Frame(frame) => out.frame(&frame),
            Incoming::Seed(seed) => out.json(&seed),
            Incoming::Text(text) => out.line(&text),
            Incoming::Binary(bytes) => notice(format_args!(
                "ignored a binary frame of {} bytes",
                bytes.len()
            )),
            Incoming::Closed { code, reason } => return ended(code, reason),
        }
        if !out.open {
            let _ = conn.close().await;
            return Ok(Retry {
                immediately: false,
                why: "stdout closed".into(),
            });
        }
    }
}

/// What the contract says to do about a close.
fn ended(code: Option<u16>, reason: String) -> Result<Retry, ListenError> {
    let Some(code) = code else {
        return Ok(Retry {
            immediately: false,
            why: format!("connection lost: {reason}"),
        });
    };
    let why = format!("closed with {code} {reason}");
    match CloseCode::from_u16(code).map(CloseCode::reconnect) {
        Some(Reconnect::Immediately) => Ok(Retry {
            immediately: true,
            why,
        }),
        Some(Reconnect::WithBackoff) | None => Ok(Retry {
            immediately: false,
            why,
        }),
        Some(Reconnect::AfterNewToken) => Err(ListenError::TokenExpired),
        Some(Reconnect::Never) => Err(ListenError::Closed { code, reason }),
    }
}

/// Writes one JSON line per frame and flushes it, so a pipe sees each frame at once.
struct Printer {
    out: std::io::Stdout,
    types: Vec<String>,
    /// False once stdout is gone (the reader of a pipe exited): then we stop.
    open: bool,
}

impl Printer {
    fn message(&mut self, message: MessageFrame) {
        let wanted = self.types.is_empty()
            || self
                .types
                .iter()
                .any(|prefix| message.ty.as_str().starts_with(prefix.as_str()));
        if wanted {
            self.frame(&ServerFrame::Message(message));
        }
    }

    fn frame(&mut self, frame: &ServerFrame) {
        self.json(frame);
    }

    fn json(&mut self, value: &impl serde::Serialize) {
        match serde_json::to_string(value) {
            Ok(text) => self.line(&text),
            Err(e) => notice(format_args!("cannot print a frame: {e}")),
        }
    }

    fn line(&mut self, text: &str) {
        let mut out = self.out.lock();
        if writeln!(out, "{text}").and_then(|()| out.flush()).is_err() {
            self.open = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_url_appends_ws_once() {
        assert_eq!(
            socket_url("ws://127.0.0.1:8080").unwrap(),
            "ws://127.0.0.1:8080/ws"
        );
        assert_eq!(
            socket_url("ws://127.0.0.1:8080/").unwrap(),
            "ws://127.0.0.1:8080/ws"
        );
        assert_eq!(socket_url("ws://h:1/ws").unwrap(), "ws://h:1/ws");
        assert_eq!(socket_url("http://h:1").unwrap(), "ws://h:1/ws");
        assert_eq!(socket_url("https://h:1").unwrap(), "wss://h:1/ws");
        assert_eq!(socket_url("wss://h:1/ws").unwrap(), "wss://h:1/ws");
        assert!(socket_url("wss://").is_err());
        assert!(socket_url("ftp://h:1").is_err());
        assert!(socket_url("h:1").is_err());
        assert!(socket_url("ws://").is_err());
    }

    #[test]
    fn closes_map_to_the_contracts_advice() {
        assert!(ended(Some(1012), String::new()).unwrap().immediately);
        assert!(!ended(Some(1013), String::new()).unwrap().immediately);
        assert!(!ended(None, String::new()).unwrap().immediately);
        assert!(matches!(
            ended(Some(4001), String::new()),
            Err(ListenError::TokenExpired)
        ));
        assert!(matches!(
            ended(Some(4008), String::new()),
            Err(ListenError::Closed { code: 4008, .. })
        ));
        assert!(matches!(
            ended(Some(1008), String::new()),
            Err(ListenError::Closed { code: 1008, .. })
        ));
    }
}
