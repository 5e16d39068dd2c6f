//! One WebSocket connection: its task, its state and its timers.
//!
//! A session is a single task that `select!`s over four things: the shutdown signal,
//! its outbox (events fanned out to it), the socket (client frames) and one timer
//! (pings, idle timeout, token expiry). One task per connection and no extra channel
//! keep an idle connection small. Inbound frames are handled one at a time, in order;
//! `dispatch` has one function per op.
//!
//! Publishes are the exception to "one at a time": a publish is checked and enqueued
//! on the broker (which fixes its order) and its reply is sent when it comes back,
//! while the session reads the next frames. Through Redis that is the difference
//! between one round trip per message and one per batch. Up to [`MAX_IN_FLIGHT`] are
//! outstanding; their replies go out in the order the publishes came in; any other op
//! first waits for the publishes before it, so its reply (and its effect) follows
//! theirs exactly as if every frame had been handled to the end before the next.

mod dispatch;
mod join;
mod limits;
mod replies;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::SinkExt;
use teamhub_presence::ConnKey;
use teamhub_protocol::{ClientOp, CloseCode, ErrorCode, SeedPublish, TeamId, decode_client_frame};
use tokio::time::Instant;
use tracing::Instrument;

use crate::auth::{Identity, now_secs};
use crate::error::OpError;
use crate::event::EventKind;
use crate::metrics;
use crate::node::{ClientInfo, Node, PendingPublish};
use crate::outbox::{Drained, Outbound, Outbox};
use crate::registry::Framing;
use crate::user_cap::UserSlot;

use self::dispatch::Answer;
use self::join::JoinState;
use self::limits::InboundLimiter;

/// Most publishes of one connection awaiting their reply; the socket is not read
/// while this many are outstanding (the client feels the back-pressure).
const MAX_IN_FLIGHT: usize = 64;

/// A publish whose reply is still to be sent: the frame's `id` and the outcome.
struct InFlight {
    id: Option<u64>,
    pending: PendingPublish,
}

/// What the loop does after handling something.
enum Flow {
    Continue,
    /// Close with this code and reason.
    Close(CloseCode, &'static str),
    /// The socket is gone; just clean up.
    Gone,
}

pub struct Session {
    node: Arc<Node>,
    key: ConnKey,
    identity: Identity,
    client: ClientInfo,
    framing: Framing,
    outbox: Arc<Outbox>,
    joined: HashMap<TeamId, JoinState>,
    /// Publishes enqueued and not yet answered, oldest first.
    in_flight: VecDeque<InFlight>,
    limiter: InboundLimiter,
    /// When the token (plus leeway) runs out: close 4001 unless refreshed.
    expires_at: Instant,
    last_seen: Instant,
    /// The connection's `conn` span (set by `run`), whose `teams` field follows joins.
    span: tracing::Span,
    /// Its place under the user's connection cap, freed when the session is dropped.
    _slot: UserSlot,
}

impl Session {
    pub fn new(
        node: Arc<Node>,
        identity: Identity,
        slot: UserSlot,
        client: ClientInfo,
        framing: Framing,
    ) -> Session {
        let key = node.conn_key();
        let outbox = Arc::new(Outbox::new(node.limits.outbox_size));
        let limiter = InboundLimiter::new(&node.limits);
        let expires_at = expiry_instant(identity.exp, node.limits.jwt_leeway);
        Session {
            node,
            key,
            identity,
            client,
            framing,
            outbox,
            joined: HashMap::new(),
            in_flight: VecDeque::new(),
            limiter,
            expires_at,
            last_seen: Instant::now(),
            span: tracing::Span::none(),
            _slot: slot,
        }
    }

    /// Runs the connection to its end. `seed_team`: the team of `/ws/{team}`, joined at once.
    ///
    /// Everything it logs is inside one `conn` span with the node, the connection's
    /// number, the user and the teams it is in (`teams`, comma-separated, updated on
    /// every join and leave), so logs can be filtered by any of them across nodes.
    ///
    /// Not an `async fn`: that would keep `self` and the socket a second time in its
    /// own state beside the inner future's, and every idle connection pays for its
    /// task's whole size.
    pub fn run(
        mut self,
        socket: WebSocket,
        seed_team: Option<TeamId>,
    ) -> impl Future<Output = ()> + Send {
        let span = tracing::info_span!(
            "conn",
            node = %self.node.id,
            conn = self.key.conn,
            user = %self.identity.user,
            teams = seed_team.as_ref().map(|t| t.as_str()),
        );
        self.span = span.clone();
        self.run_inner(socket, seed_team).instrument(span)
    }

    /// Brings the span's `teams` field up to date after a join or leave.
    fn record_teams(&self) {
        let mut teams: Vec<&str> = self.joined.keys().map(|t| t.as_str()).collect();
        teams.sort_unstable();
        self.span.record("teams", teams.join(",").as_str());
    }

    /// The connection's whole life. A plain function returning an `async move` block,
    /// not an `async fn`: an `async fn` keeps its by-value arguments twice in its state
    /// (as arguments, and again once moved into its body), and the session and socket
    /// are most of an idle connection's task.
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn would store the session and socket twice"
    )]
    fn run_inner(
        mut self,
        mut socket: WebSocket,
        seed_team: Option<TeamId>,
    ) -> impl Future<Output = ()> + Send {
        async move {
            metrics::counter_inc(metrics::CONNECTIONS_TOTAL);
            ::metrics::gauge!(metrics::CONNECTIONS).increment(1.0);
            tracing::debug!("connected");
            self.node
                .registry
                .connect(&self.identity.user, self.key.conn, self.outbox.clone());
            let mut flow = Flow::Continue;
            if let Some(team) = seed_team
                && let Err(e) = Box::pin(self.join_team(&team, None, None)).await
            {
                flow = if e.code == ErrorCode::QuotaExceeded {
                    // No error frames on this endpoint: 1013 tells the client to come
                    // back later, with backoff, as a place may free up.
                    tracing::debug!(error = %e, "seed join over the team's quota");
                    Flow::Close(CloseCode::Overloaded, "team quota exceeded")
                } else {
                    tracing::warn!(error = %e, "seed join failed");
                    Flow::Close(CloseCode::Internal, "join failed")
                };
            }
            if matches!(flow, Flow::Continue) {
                flow = self.event_loop(&mut socket).await;
            }
            // Publishes still under way are published whatever happens to the socket;
            // they finish on their own, so their activity rows are still written.
            for f in self.in_flight.drain(..) {
                tokio::spawn(f.pending);
            }
            if let Flow::Close(code, reason) = flow {
                metrics::closed(code.as_u16());
                tracing::debug!(code = code.as_u16(), reason, "closing");
                let frame = CloseFrame {
                    code: code.as_u16(),
                    reason: Utf8Bytes::from_static(reason),
                };
                // The closing handshake: send our close frame, then read (and drop)
                // whatever the peer still sends until its close frame. Closing the
                // TCP socket with unread input would make the kernel answer with a
                // reset, and a reset can overtake our close frame, so the client
                // would never learn the code. Best effort and bounded: the peer may
                // already be gone. Boxed, like the other once-per-connection steps, to
                // keep it out of the task's size.
                let close = tokio::time::timeout(Duration::from_secs(2), async {
                    if socket.send(Message::Close(Some(frame))).await.is_ok() {
                        while let Some(Ok(_)) = socket.recv().await {}
                    }
                });
                let _ = Box::pin(close).await;
            }
            Box::pin(self.leave_all()).await;
            self.node
                .registry
                .disconnect(&self.identity.user, self.key.conn);
            ::metrics::gauge!(metrics::CONNECTIONS).decrement(1.0);
            tracing::debug!("disconnected");
        }
    }

    async fn event_loop(&mut self, socket: &mut WebSocket) -> Flow {
        let node = self.node.clone();
        let outbox = self.outbox.clone();
        let mut batch = Vec::new();
        let mut next_ping = Instant::now() + node.limits.ping_interval;
        loop {
            let wake = next_ping.min(self.expires_at);
            let flow = tokio::select! {
                biased;
                _ = node.shutdown.cancelled() => Flow::Close(CloseCode::Draining, "node draining: reconnect and recover with since"),
                _ = outbox.ready() => match outbox.drain_into(&mut batch) {
                    Drained::Overflowed => Flow::Close(CloseCode::Overloaded, "too slow: outbound queue overflowed"),
                    Drained::Items => {
                        let flow = self.deliver(socket, &mut batch).await;
                        if batch.capacity() > 64 {
                            // As the outbox does: a burst's memory goes back once it is out.
                            batch.shrink_to(8);
                        }
                        flow
                    }
                },
                done = front_done(&mut self.in_flight), if !self.in_flight.is_empty() => {
                    self.in_flight.pop_front();
                    let (id, result) = done;
                    self.publish_reply(socket, id, result).await
                }
                msg = socket.recv(), if self.in_flight.len() < MAX_IN_FLIGHT => {
                    self.last_seen = Instant::now();
                    // Boxed: handling a frame (join, publish...) needs far more state
                    // than waiting does, and an unboxed future would make every idle
                    // connection's task as large as its largest op. One allocation per
                    // inbound frame is cheap next to decoding it.
                    Box::pin(self.on_socket_message(socket, msg)).await
                }
                _ = tokio::time::sleep_until(wake) => {
                    let now = Instant::now();
                    if now >= self.expires_at {
                        Flow::Close(CloseCode::TokenExpired, "token expired")
                    } else if now.duration_since(self.last_seen) >= node.limits.idle_timeout {
                        Flow::Close(CloseCode::IdleTimeout, "idle timeout")
                    } else {
                        if now >= next_ping {
                            next_ping = now + node.limits.ping_interval;
                        }
                        send(socket, Message::Ping(Default::default())).await
                    }
                }
            };
            if !matches!(flow, Flow::Continue) {
                return flow;
            }
        }
    }

    async fn on_socket_message(
        &mut self,
        socket: &mut WebSocket,
        msg: Option<Result<Message, axum::Error>>,
    ) -> Flow {
        match msg {
            None => Flow::Gone,
            Some(Ok(Message::Close(_))) => {
                // The library queued its answer to the client's close (an echo, or 1002
                // for a close with a reserved code); send it before the socket goes.
                let flushed = futures_util::SinkExt::flush(socket);
                let _ = tokio::time::timeout(std::time::Duration::from_secs(1), flushed).await;
                Flow::Gone
            }
            Some(Err(e)) => match violation(&e) {
                // RFC 6455 7.1.7: say why before failing the connection.
                Some((code, reason)) => {
                    tracing::debug!(error = %e, code = code.as_u16(), "client broke the framing");
                    Flow::Close(code, reason)
                }
                None => {
                    tracing::debug!(error = %e, "socket error");
                    Flow::Gone
                }
            },
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => Flow::Continue,
            Some(Ok(Message::Binary(_))) => {
                self.frame_in(socket, None, |_| {
                    Err(OpError::bad_request("frames must be JSON text, not binary"))
                })
                .await
            }
            Some(Ok(Message::Text(text))) => match self.framing {
                Framing::Full => self.on_frame(socket, text.as_str()).await,
                Framing::Seed => self.on_seed_frame(socket, text.as_str()).await,
            },
        }
    }

    /// Applies the rate limit to one inbound frame; runs `refused` to build the error
    /// when the frame is refused for another reason before dispatch.
    async fn frame_in(
        &mut self,
        socket: &mut WebSocket,
        id: Option<u64>,
        refused: impl FnOnce(&mut Self) -> Result<(), OpError>,
    ) -> Flow {
        metrics::counter_inc(metrics::FRAMES_IN);
        if let Some(flow) = self.check_rate(socket, id).await {
            return flow;
        }
        match refused(self) {
            Ok(()) => Flow::Continue,
            Err(e) => self.send_error(socket, id, &e).await,
        }
    }

    /// `Some(flow)` when the frame must not be acted on.
    async fn check_rate(&mut self, socket: &mut WebSocket, id: Option<u64>) -> Option<Flow> {
        match self.limiter.check(Instant::now()) {
            limits::Verdict::Allow => None,
            limits::Verdict::Refuse => {
                metrics::counter_inc(metrics::RATE_LIMITED);
                let e = OpError::new(ErrorCode::RateLimited, "too many frames: slow down");
                Some(self.send_error(socket, id, &e).await)
            }
            limits::Verdict::Close => {
                metrics::counter_inc(metrics::RATE_LIMITED);
                Some(Flow::Close(
                    CloseCode::RateLimited,
                    "sustained rate-limit violations",
                ))
            }
        }
    }

    async fn on_frame(&mut self, socket: &mut WebSocket, text: &str) -> Flow {
        metrics::counter_inc(metrics::FRAMES_IN);
        let frame = decode_client_frame(text);
        let id = match &frame {
            Ok(f) => f.id,
            Err(e) => e.id,
        };
        if let Some(flow) = self.check_rate(socket, id).await {
            return flow;
        }
        match frame {
            Err(e) => {
                self.send_error(socket, e.id, &OpError::bad_request(e.message))
                    .await
            }
            Ok(frame) => {
                // Any op but a publish waits for the publishes before it.
                if !matches!(frame.op, ClientOp::Publish(_)) {
                    match self.settle(socket).await {
                        Flow::Continue => {}
                        flow => return flow,
                    }
                }
                match self.dispatch(frame.op, frame.id).await {
                    Ok(Answer::Now(reply)) => send(socket, Message::Text(reply)).await,
                    Ok(Answer::Later(pending)) => {
                        self.in_flight_push(socket, id, Ok(pending)).await
                    }
                    Err(e) => self.in_flight_push(socket, id, Err(e)).await,
                }
            }
        }
    }

    /// Queues an enqueued publish for its reply; a refusal is answered at once, after
    /// the replies of the publishes before it.
    async fn in_flight_push(
        &mut self,
        socket: &mut WebSocket,
        id: Option<u64>,
        pending: Result<PendingPublish, OpError>,
    ) -> Flow {
        match pending {
            Ok(pending) => {
                self.in_flight.push_back(InFlight { id, pending });
                Flow::Continue
            }
            Err(e) => match self.settle(socket).await {
                Flow::Continue => self.send_error(socket, id, &e).await,
                flow => flow,
            },
        }
    }

    /// Waits for every publish in flight and sends their replies, oldest first.
    async fn settle(&mut self, socket: &mut WebSocket) -> Flow {
        while let Some(f) = self.in_flight.pop_front() {
            let result = f.pending.await;
            if let flow @ (Flow::Close(..) | Flow::Gone) =
                self.publish_reply(socket, f.id, result).await
            {
                return flow;
            }
        }
        Flow::Continue
    }

    /// The answer to one publish: its offset (`/ws`), nothing (seed endpoint, which
    /// answers only errors), or the error.
    async fn publish_reply(
        &mut self,
        socket: &mut WebSocket,
        id: Option<u64>,
        result: Result<crate::broker::Published, OpError>,
    ) -> Flow {
        match (result, self.framing) {
            (Ok(p), Framing::Full) => {
                let reply = replies::reply(id, replies::OffsetBody { offset: p.offset });
                send(socket, Message::Text(reply)).await
            }
            (Ok(_), Framing::Seed) => Flow::Continue,
            (Err(e), _) => self.send_error(socket, id, &e).await,
        }
    }

    async fn on_seed_frame(&mut self, socket: &mut WebSocket, text: &str) -> Flow {
        metrics::counter_inc(metrics::FRAMES_IN);
        if let Some(flow) = self.check_rate(socket, None).await {
            return flow;
        }
        let pending = match serde_json::from_str::<SeedPublish>(text) {
            Err(e) => Err(OpError::bad_request(format!(
                "expected {{\"type\": T, \"data\": D}}: {e}"
            ))),
            // A seed connection is joined to exactly one team.
            Ok(p) => match self.joined.keys().next().cloned() {
                Some(team) => self.op_publish(&team, &p.ty, &p.data, false),
                None => Err(OpError::internal("not joined")),
            },
        };
        self.in_flight_push(socket, None, pending).await
    }

    async fn send_error(&mut self, socket: &mut WebSocket, id: Option<u64>, e: &OpError) -> Flow {
        let frame = match self.framing {
            Framing::Full => replies::error(id, e),
            Framing::Seed => replies::seed_error(e),
        };
        send(socket, Message::Text(frame)).await
    }

    /// Writes a batch of fanned-out events: every frame fed, one flush.
    async fn deliver(&mut self, socket: &mut WebSocket, batch: &mut Vec<Outbound>) -> Flow {
        let mut written = 0u64;
        for item in batch.drain(..) {
            match item {
                Outbound::Event(ev) => {
                    let Some(state) = self.joined.get_mut(&ev.team) else {
                        continue;
                    };
                    if !state.admit(ev.kind) {
                        continue;
                    }
                    let result = match self.framing {
                        Framing::Full => socket.feed(Message::Text(ev.wire().clone())).await,
                        Framing::Seed => {
                            // Seed clients never get their own messages, echo or not.
                            if matches!(ev.kind, EventKind::Message { .. })
                                && ev.origin.as_ref() == Some(&self.key)
                            {
                                continue;
                            }
                            let mut r = Ok(());
                            for f in ev.seed_frames() {
                                r = socket.feed(Message::Text(f.clone())).await;
                                if r.is_err() {
                                    break;
                                }
                            }
                            r
                        }
                    };
                    if result.is_err() {
                        return Flow::Gone;
                    }
                    written += 1;
                }
                Outbound::Close { code, reason } => {
                    let _ = socket.flush().await;
                    return Flow::Close(code, reason);
                }
                Outbound::Kick { team, reason } => {
                    if self.leave_team(&team).await {
                        if let Framing::Seed = self.framing {
                            return Flow::Close(CloseCode::NotMember, "not a team member");
                        }
                        if socket
                            .feed(Message::Text(replies::kicked(&team, reason)))
                            .await
                            .is_err()
                        {
                            return Flow::Gone;
                        }
                        written += 1;
                    }
                }
            }
        }
        metrics::frames_out(written);
        match socket.flush().await {
            Ok(()) => Flow::Continue,
            Err(_) => Flow::Gone,
        }
    }

    /// Leaves every team at the end of the connection. The span keeps its last `teams`,
    /// so the closing log lines still say which teams the connection was in.
    async fn leave_all(&mut self) {
        let teams: Vec<TeamId> = self.joined.keys().cloned().collect();
        for team in teams {
            if self.joined.remove(&team).is_some() {
                self.forget(&team).await;
            }
        }
    }
}

async fn send(socket: &mut WebSocket, msg: Message) -> Flow {
    match socket.send(msg).await {
        Ok(()) => Flow::Continue,
        Err(_) => Flow::Gone,
    }
}

/// Resolves when the oldest publish in flight has its outcome (it stays queued: the
/// caller pops it). Only the oldest is polled: replies go out in order, and the broker
/// drives the others meanwhile.
async fn front_done(
    in_flight: &mut VecDeque<InFlight>,
) -> (Option<u64>, Result<crate::broker::Published, OpError>) {
    std::future::poll_fn(|cx| match in_flight.front_mut() {
        Some(f) => f.pending.as_mut().poll(cx).map(|r| (f.id, r)),
        None => std::task::Poll::Pending,
    })
    .await
}

fn expiry_instant(exp: u64, leeway: u64) -> Instant {
    let left = exp.saturating_add(leeway).saturating_sub(now_secs());
    // Far-future tokens: cap so the addition cannot overflow.
    Instant::now() + Duration::from_secs(left.min(10 * 365 * 86400))
}

/// The close code and reason for a read error that is the client's fault: a frame
/// over the size limit (1009), invalid UTF-8 (1007) or any other break of RFC 6455
/// (1002). `None` for I/O errors and a peer that simply went away.
fn violation(e: &axum::Error) -> Option<(CloseCode, &'static str)> {
    use std::error::Error as _;
    use tungstenite::error::ProtocolError as P;
    let mut source: Option<&(dyn std::error::Error + 'static)> = e.source();
    while let Some(err) = source {
        if let Some(t) = err.downcast_ref::<tungstenite::Error>() {
            return match t {
                tungstenite::Error::Capacity(_) => {
                    Some((CloseCode::FrameTooLarge, "frame too large"))
                }
                tungstenite::Error::Utf8(_) => {
                    Some((CloseCode::InvalidPayload, "text is not valid UTF-8"))
                }
                // The peer went away or closed: nothing to tell it.
                tungstenite::Error::Protocol(
                    P::ResetWithoutClosingHandshake | P::SendAfterClosing | P::ReceivedAfterClosing,
                ) => None,
                tungstenite::Error::Protocol(_) => {
                    Some((CloseCode::ProtocolError, "protocol violation (RFC 6455)"))
                }
                _ => None,
            };
        }
        source = err.source();
    }
    None
}

use tokio_tungstenite::tungstenite;
