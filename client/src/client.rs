//! The high-level client: requests that return their reply, and a stream of events.
//!
//! One task owns the [`Connection`]. Callers talk to it through a command channel; it
//! writes their frames, routes each reply back by `id` through a oneshot, turns every
//! other frame into an [`Event`], and records per team the last position seen, so the
//! caller (or, later, a reconnect loop) can `join` again with `since`.
//!
//! Architecture note: the socket and the request bookkeeping live in the task; the
//! [`Client`] handle only holds channels and the shared positions. One client is one
//! connection: [`Client::reconnect`] does not revive it but opens a new client (attempts
//! paced by [`crate::Backoff`]), hands it the old positions and re-joins every team with
//! its `since`. Keeping connections and clients one to one means an event stream never
//! spans two sockets, so a caller always sees where one connection's events end
//! ([`Event::Closed`]) and which teams the next one recovered ([`Rejoined`]).

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use teamhub_protocol::{
    ClientFrame, ClientOp, ErrorFrame, Join, JoinReply, Kicked, Leave, MessageFrame, MessageType,
    PresenceDiff, PresenceEntry, PresenceRequest, Publish, Refresh, ReplyBody, ServerFrame, Since,
    TeamId,
};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::{ClientError, ConnectOptions, Connection, Delays, Incoming};

/// Tuning of a [`Client`].
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// How long a request waits for its reply (default 10 s).
    pub request_timeout: Duration,
    /// Events buffered for [`Client::events`] (default 1024). When the buffer is full
    /// the client stops reading the socket until the caller catches up: the hub then
    /// sees a slow consumer, as it would from any client that cannot keep up, and
    /// requests wait too. Drain the events, or make this larger.
    pub events_capacity: usize,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            request_timeout: Duration::from_secs(10),
            events_capacity: 1024,
        }
    }
}

/// Optional fields of a `join`.
#[derive(Debug, Clone, Default)]
pub struct JoinOptions {
    /// Where this client left off, to receive what it missed (see [`Client::position`]).
    pub since: Option<Since>,
    /// Shown to others in this user's presence entry. Sent as given: the hub, not the
    /// client, refuses a non-object or one over 1 KiB, so tests can exercise that.
    pub meta: Option<serde_json::Value>,
}

/// Everything the server sends that is not the answer to a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Message(MessageFrame),
    PresenceDiff(PresenceDiff),
    /// This connection left the team; its position there is forgotten.
    Kicked(Kicked),
    /// An `error` frame that answers no pending request (`id` null, or a request that
    /// already timed out).
    Error(ErrorFrame),
    /// A frame that is not a `/ws` server frame (text, seed or binary), as received.
    Unexpected(Incoming),
    /// The connection ended; always the last event. `code` is the server's close code
    /// when it sent one (see [`teamhub_protocol::CloseCode::reconnect`]).
    Closed {
        code: Option<u16>,
        reason: String,
    },
}

/// What [`Client::reconnect`] did.
#[derive(Debug)]
pub struct Reconnected {
    /// The new connection; its event stream starts after its join replies' offsets.
    pub client: Client,
    /// One entry per team the old client was in, sorted by team.
    pub teams: Vec<Rejoined>,
    /// Connection attempts made, the successful one included.
    pub attempts: u32,
}

impl Reconnected {
    /// Every team re-joined and recovered without a gap.
    pub fn all_recovered(&self) -> bool {
        self.teams.iter().all(Rejoined::recovered)
    }
}

/// One team re-joined by [`Client::reconnect`].
#[derive(Debug)]
pub struct Rejoined {
    pub team: TeamId,
    /// The position sent as `since`.
    pub since: Since,
    /// The join's reply, or why it failed.
    pub result: Result<JoinReply, ClientError>,
}

impl Rejoined {
    /// The team is joined again and its reply's `missed` holds exactly what came after
    /// `since`. False when the join failed, or when the hub could not recover (history
    /// trimmed past `since`, or a new epoch): then the caller has a gap to fill from
    /// the REST history or a fresh snapshot.
    pub fn recovered(&self) -> bool {
        matches!(&self.result, Ok(reply) if reply.recovered)
    }
}

type ReplyTx = oneshot::Sender<Result<ServerFrame, ClientError>>;

enum Command {
    Request { frame: ClientFrame, reply: ReplyTx },
    Close { done: oneshot::Sender<()> },
}

/// State read by the handle and written by the task. Its mutexes are std ones, held for
/// a map operation and never across an `.await`.
#[derive(Default)]
struct Shared {
    positions: Mutex<HashMap<TeamId, Since>>,
    /// The presence `meta` of each team's last successful join, for a reconnect to
    /// send again.
    metas: Mutex<HashMap<TeamId, serde_json::Value>>,
    closed: Mutex<Option<(Option<u16>, String)>>,
}

impl Shared {
    fn record_join(&self, reply: &JoinReply) {
        let last_missed = reply.missed.last().map_or(0, |m| m.offset);
        let since = Since {
            epoch: reply.epoch.clone(),
            offset: reply.offset.max(last_missed),
        };
        self.positions
            .lock()
            .unwrap()
            .insert(reply.team.clone(), since);
    }

    /// Only teams already joined move: a late message cannot resurrect a team that was
    /// left or kicked.
    fn record_message(&self, team: &TeamId, offset: u64) {
        if let Some(since) = self.positions.lock().unwrap().get_mut(team) {
            since.offset = since.offset.max(offset);
        }
    }

    fn forget(&self, team: &TeamId) {
        self.positions.lock().unwrap().remove(team);
        self.metas.lock().unwrap().remove(team);
    }

    fn record_meta(&self, team: &TeamId, meta: Option<serde_json::Value>) {
        let mut metas = self.metas.lock().unwrap();
        match meta {
            Some(meta) => metas.insert(team.clone(), meta),
            None => metas.remove(team),
        };
    }

    fn closed_error(&self) -> ClientError {
        let (code, reason) = self
            .closed
            .lock()
            .unwrap()
            .clone()
            .unwrap_or((None, "client task ended".into()));
        ClientError::Closed { code, reason }
    }
}

/// A connection to the hub with request/reply correlation and an event stream.
///
/// Methods take `&self`, so one client can be shared (in an `Arc`) by tasks that
/// publish concurrently. Dropping the client aborts its task without a close
/// handshake; call [`Client::close`] for a clean close.
pub struct Client {
    commands: mpsc::Sender<Command>,
    next_id: AtomicU64,
    shared: Arc<Shared>,
    events: Mutex<Option<mpsc::Receiver<Event>>>,
    options: ClientOptions,
    subprotocol: Option<String>,
    local_addr: SocketAddr,
    task: JoinHandle<()>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("local_addr", &self.local_addr)
            .field("options", &self.options)
            .field("closed", &*self.shared.closed.lock().unwrap())
            .finish_non_exhaustive()
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Client {
    /// Connects with default [`ClientOptions`].
    pub async fn connect(opts: ConnectOptions) -> Result<Client, ClientError> {
        Client::connect_with(opts, ClientOptions::default()).await
    }

    pub async fn connect_with(
        opts: ConnectOptions,
        options: ClientOptions,
    ) -> Result<Client, ClientError> {
        Ok(Client::from_connection(
            Connection::connect(opts).await?,
            options,
        ))
    }

    /// Connects, retrying transient failures ([`ClientError::is_transient`]) after the
    /// waits of `delays`; each attempt is bounded by the request timeout. Returns the
    /// first failure that is not transient at once, and the last failure when `delays`
    /// runs out. `delays.attempts()` afterwards says how many attempts were made.
    pub async fn connect_retrying(
        opts: &ConnectOptions,
        options: ClientOptions,
        delays: &mut Delays,
    ) -> Result<Client, ClientError> {
        let mut last = None;
        for wait in delays.by_ref() {
            tokio::time::sleep(wait).await;
            let after = options.request_timeout;
            let attempt = tokio::time::timeout(after, Connection::connect(opts.clone()))
                .await
                .unwrap_or(Err(ClientError::Timeout { after }));
            match attempt {
                Ok(conn) => return Ok(Client::from_connection(conn, options)),
                Err(e) if e.is_transient() => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        // `Delays` always yields at least once, so `last` is set; the fallback is
        // for a caller that hands in an exhausted run.
        Err(last.unwrap_or(ClientError::Timeout {
            after: Duration::ZERO,
        }))
    }

    /// Opens a new connection with `opts` (usually the same as this client's, or with
    /// a fresh token), attempts paced by `delays`, and joins every team this client was
    /// in again, with `since` from its position there, so each team's reply carries
    /// what was missed (in [`JoinReply::missed`] when [`JoinReply::recovered`]).
    ///
    /// Call it after [`Event::Closed`], having handled every event before it: positions
    /// count each message once it is queued for the caller, so a message left unread in
    /// the old stream is not fetched again. A client that is still open is closed first.
    ///
    /// The new client starts with all of the old positions. A team whose join fails on
    /// a transient error (the new connection died too) keeps its old position, so the
    /// next `reconnect` tries it again; a team the server refused (its grant is gone) is
    /// forgotten. Each team is joined with the presence `meta` of its last successful
    /// join.
    ///
    /// Errors: the connection's failure, when no attempt succeeded (see
    /// [`Client::connect_retrying`]).
    pub async fn reconnect(
        &self,
        opts: &ConnectOptions,
        delays: &mut Delays,
    ) -> Result<Reconnected, ClientError> {
        if !self.is_closed() {
            self.close().await?;
        }
        let mut positions = self.positions();
        positions.sort_by(|a, b| a.0.cmp(&b.0));
        let metas = self.shared.metas.lock().unwrap().clone();
        let client = Client::connect_retrying(opts, self.options.clone(), delays).await?;
        client
            .shared
            .positions
            .lock()
            .unwrap()
            .extend(positions.iter().cloned());
        client.shared.metas.lock().unwrap().extend(metas.clone());
        let mut teams = Vec::with_capacity(positions.len());
        for (team, since) in positions {
            let result = client
                .join(
                    &team,
                    JoinOptions {
                        since: Some(since.clone()),
                        meta: metas.get(&team).cloned(),
                    },
                )
                .await;
            if let Err(e) = &result
                && !e.is_transient()
            {
                client.shared.forget(&team);
            }
            teams.push(Rejoined {
                team,
                since,
                result,
            });
        }
        Ok(Reconnected {
            client,
            teams,
            attempts: delays.attempts(),
        })
    }

    /// Wraps an open connection and spawns its task (so: inside a Tokio runtime).
    pub fn from_connection(conn: Connection, options: ClientOptions) -> Client {
        let (commands, command_rx) = mpsc::channel(64);
        let (event_tx, events) = mpsc::channel(options.events_capacity.max(1));
        let shared = Arc::new(Shared::default());
        let subprotocol = conn.selected_subprotocol().map(str::to_owned);
        let local_addr = conn.local_addr();
        let task = tokio::spawn(run(conn, command_rx, event_tx, Arc::clone(&shared)));
        Client {
            commands,
            next_id: AtomicU64::new(1),
            shared,
            events: Mutex::new(Some(events)),
            options,
            subprotocol,
            local_addr,
            task,
        }
    }

    /// The event stream. Events are buffered from the start, so none are lost between
    /// connecting and taking it.
    ///
    /// # Panics
    /// When called a second time: there is one stream per client.
    pub fn events(&self) -> mpsc::Receiver<Event> {
        self.events
            .lock()
            .unwrap()
            .take()
            .expect("Client::events() may be called only once")
    }

    /// Joins `team` (again: a second join answers with a fresh snapshot). The reply's
    /// `missed` holds the messages after `opts.since` when `recovered` is true. The
    /// `meta` is remembered for [`Client::reconnect`].
    pub async fn join(
        &self,
        team: impl AsRef<str>,
        opts: JoinOptions,
    ) -> Result<JoinReply, ClientError> {
        let meta = opts
            .meta
            .as_ref()
            .map(serde_json::value::to_raw_value)
            .transpose()?;
        let op = ClientOp::Join(Join {
            team: TeamId::new(team.as_ref())?,
            since: opts.since,
            meta,
        });
        match self.reply_body("join", op).await? {
            ReplyBody::Join(reply) => {
                self.shared.record_meta(&reply.team, opts.meta);
                Ok(reply)
            }
            other => Err(unexpected("join", &other)),
        }
    }

    /// Leaves `team` and forgets the position there.
    pub async fn leave(&self, team: impl AsRef<str>) -> Result<(), ClientError> {
        let team = TeamId::new(team.as_ref())?;
        let op = ClientOp::Leave(Leave { team: team.clone() });
        match self.reply_body("leave", op).await? {
            ReplyBody::Empty {} => {
                self.shared.forget(&team);
                Ok(())
            }
            other => Err(unexpected("leave", &other)),
        }
    }

    /// Publishes `data` as a message of type `ty`; returns its offset. With `echo` the
    /// message also comes back to this connection as an [`Event::Message`].
    pub async fn publish(
        &self,
        team: impl AsRef<str>,
        ty: impl AsRef<str>,
        data: &impl Serialize,
        echo: bool,
    ) -> Result<u64, ClientError> {
        let op = ClientOp::Publish(Publish {
            team: TeamId::new(team.as_ref())?,
            ty: MessageType::new(ty.as_ref())?,
            data: serde_json::value::to_raw_value(data)?,
            echo,
        });
        match self.reply_body("publish", op).await? {
            ReplyBody::Publish(reply) => Ok(reply.offset),
            other => Err(unexpected("publish", &other)),
        }
    }

    /// Who is in `team` now.
    pub async fn presence(&self, team: impl AsRef<str>) -> Result<Vec<PresenceEntry>, ClientError> {
        let op = ClientOp::Presence(PresenceRequest {
            team: TeamId::new(team.as_ref())?,
        });
        match self.reply_body("presence", op).await? {
            ReplyBody::Presence(reply) => Ok(reply.presence),
            other => Err(unexpected("presence", &other)),
        }
    }

    /// Replaces this connection's token; returns the new expiry (Unix seconds). Teams
    /// the new token no longer grants arrive as [`Event::Kicked`].
    pub async fn refresh(&self, token: impl Into<String>) -> Result<u64, ClientError> {
        let op = ClientOp::Refresh(Refresh {
            token: token.into(),
        });
        match self.reply_body("refresh", op).await? {
            ReplyBody::Refresh(reply) => Ok(reply.exp),
            other => Err(unexpected("refresh", &other)),
        }
    }

    /// Round-trip time of a `ping` (including this client's own queueing).
    pub async fn ping(&self) -> Result<Duration, ClientError> {
        let start = Instant::now();
        match self.request(ClientOp::Ping).await? {
            ServerFrame::Pong { .. } => Ok(start.elapsed()),
            other => Err(unexpected("ping", &other)),
        }
    }

    /// Sends `op` with a fresh `id` and waits for the frame that answers it: a `reply`
    /// or a `pong`. An `error` frame with that `id` is [`ClientError::Server`].
    ///
    /// The typed methods above are built on this; it is public for ops they do not
    /// cover yet.
    pub async fn request(&self, op: ClientOp) -> Result<ServerFrame, ClientError> {
        let frame = ClientFrame {
            id: Some(self.next_id.fetch_add(1, Ordering::Relaxed)),
            op,
        };
        let (reply, answer) = oneshot::channel();
        let exchange = async {
            self.commands
                .send(Command::Request { frame, reply })
                .await
                .map_err(|_| self.shared.closed_error())?;
            answer.await.map_err(|_| self.shared.closed_error())?
        };
        let after = self.options.request_timeout;
        tokio::time::timeout(after, exchange)
            .await
            .map_err(|_| ClientError::Timeout { after })?
    }

    async fn reply_body(
        &self,
        request: &'static str,
        op: ClientOp,
    ) -> Result<ReplyBody, ClientError> {
        match self.request(op).await? {
            ServerFrame::Reply(reply) => Ok(reply.body),
            other => Err(unexpected(request, &other)),
        }
    }

    /// The last position seen in `team` (from the join reply, its `missed` and every
    /// message since), while joined. Survives the connection's close, so it can be
    /// handed to `join` on a new connection.
    pub fn position(&self, team: impl AsRef<str>) -> Option<Since> {
        self.shared
            .positions
            .lock()
            .unwrap()
            .get(team.as_ref())
            .cloned()
    }

    /// Every joined team with its position: what a reconnect re-joins.
    pub fn positions(&self) -> Vec<(TeamId, Since)> {
        let positions = self.shared.positions.lock().unwrap();
        positions
            .iter()
            .map(|(team, since)| (team.clone(), since.clone()))
            .collect()
    }

    pub fn selected_subprotocol(&self) -> Option<&str> {
        self.subprotocol.as_deref()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Whether the connection has ended (and [`Event::Closed`] is, or will be, sent).
    pub fn is_closed(&self) -> bool {
        self.shared.closed.lock().unwrap().is_some()
    }

    /// Closes with 1000 and waits for the server's close frame. Pending requests fail
    /// with [`ClientError::Closed`]; [`Event::Closed`] follows.
    ///
    /// If the task cannot get to the close within the request timeout (it is waiting
    /// for room in a full event buffer), it is aborted instead: the socket is dropped
    /// without a closing handshake.
    pub async fn close(&self) -> Result<(), ClientError> {
        let (done, closed) = oneshot::channel();
        let exchange = async {
            if self.commands.send(Command::Close { done }).await.is_ok() {
                // An error here means the task ended some other way: closed all the same.
                let _ = closed.await;
            }
        };
        if tokio::time::timeout(self.options.request_timeout, exchange)
            .await
            .is_err()
        {
            self.task.abort();
            self.shared
                .closed
                .lock()
                .unwrap()
                .get_or_insert((None, "close timed out; socket dropped".into()));
        }
        Ok(())
    }
}

fn unexpected(request: &'static str, answer: &impl fmt::Debug) -> ClientError {
    ClientError::UnexpectedReply {
        request,
        answer: format!("{answer:?}"),
    }
}

/// Requests waiting for an answer, by id.
struct Pending {
    waiting: HashMap<u64, ReplyTx>,
    /// Size at which to sweep out requests that timed out (their receiver is gone).
    /// Doubles with the live size, so heavy pipelining costs amortised O(1) per request.
    sweep_at: usize,
}

impl Default for Pending {
    fn default() -> Self {
        Pending {
            waiting: HashMap::new(),
            sweep_at: 256,
        }
    }
}

impl Pending {
    fn insert(&mut self, id: u64, reply: ReplyTx) {
        if self.waiting.len() >= self.sweep_at {
            self.waiting.retain(|_, tx| !tx.is_closed());
            self.sweep_at = (self.waiting.len() * 2).max(256);
        }
        self.waiting.insert(id, reply);
    }

    /// Hands `answer` to the request with `id`; false when none waits for it.
    fn answer(&mut self, id: Option<u64>, answer: Result<ServerFrame, ClientError>) -> bool {
        match id.and_then(|id| self.waiting.remove(&id)) {
            Some(tx) => {
                let _ = tx.send(answer);
                true
            }
            None => false,
        }
    }
}

/// The task that owns the socket. See the module docs for where a reconnect loop goes.
async fn run(
    mut conn: Connection,
    mut commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<Event>,
    shared: Arc<Shared>,
) {
    let mut pending = Pending::default();
    let mut close_done = None;
    let (code, reason) = loop {
        tokio::select! {
            // `Connection::recv` is cancel safe, so losing this race drops nothing.
            incoming = conn.recv() => {
                let event = match incoming {
                    Ok(Incoming::Frame(frame)) => route(frame, &mut pending, &shared),
                    Ok(Incoming::Closed { code, reason }) => break (code, reason),
                    Ok(other) => Some(Event::Unexpected(other)),
                    Err(e) => break (None, e.to_string()),
                };
                if let Some(event) = event {
                    // Waiting here is the backpressure described on `events_capacity`.
                    // A dropped receiver just means nobody listens. A message counts
                    // towards the team's position only once it is in the caller's
                    // queue, so a rejoin with `since` never skips one the caller lost.
                    let position = match &event {
                        Event::Message(m) => Some((m.team.clone(), m.offset)),
                        _ => None,
                    };
                    if events.send(event).await.is_ok()
                        && let Some((team, offset)) = position
                    {
                        shared.record_message(&team, offset);
                    }
                }
            }
            command = commands.recv() => match command {
                Some(Command::Request { frame, reply }) => match conn.send(&frame).await {
                    Ok(()) => pending.insert(frame.id.unwrap_or_default(), reply),
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                },
                Some(Command::Close { done }) => {
                    close_done = Some(done);
                    break close(&mut conn).await;
                }
                // Every handle is gone (normally `Drop` aborts us first).
                None => break close(&mut conn).await,
            },
        }
    };
    // Order matters: a request that sees its channel closed reads `closed`, so set it
    // before the pending senders and the command receiver are dropped.
    *shared.closed.lock().unwrap() = Some((code, reason.clone()));
    for (_, tx) in pending.waiting.drain() {
        let _ = tx.send(Err(ClientError::Closed {
            code,
            reason: reason.clone(),
        }));
    }
    drop(commands);
    if let Some(done) = close_done {
        let _ = done.send(());
    }
    let _ = events.send(Event::Closed { code, reason }).await;
}

async fn close(conn: &mut Connection) -> (Option<u16>, String) {
    let result = conn.close().await;
    match (conn.close_info(), result) {
        (Some((code, reason)), _) => (code, reason.to_owned()),
        (None, Err(e)) => (None, e.to_string()),
        (None, Ok(())) => (None, String::new()),
    }
}

/// Answers a pending request, or turns the frame into an event. Positions are
/// recorded here, in arrival order, before anyone sees the frame.
fn route(frame: ServerFrame, pending: &mut Pending, shared: &Shared) -> Option<Event> {
    match frame {
        ServerFrame::Reply(reply) => {
            if let ReplyBody::Join(join) = &reply.body {
                shared.record_join(join);
            }
            // A reply nobody waits for (its request timed out) is dropped.
            pending.answer(reply.id, Ok(ServerFrame::Reply(reply)));
            None
        }
        ServerFrame::Pong { id } => {
            pending.answer(id, Ok(ServerFrame::Pong { id }));
            None
        }
        ServerFrame::Error(error) => {
            let answer = Err(ClientError::Server {
                code: error.code,
                message: error.message.clone(),
            });
            (!pending.answer(error.id, answer)).then_some(Event::Error(error))
        }
        // The position moves only once the caller has the message (see `run`).
        ServerFrame::Message(message) => Some(Event::Message(message)),
        ServerFrame::PresenceDiff(diff) => Some(Event::PresenceDiff(diff)),
        ServerFrame::Kicked(kicked) => {
            shared.forget(&kicked.team);
            Some(Event::Kicked(kicked))
        }
    }
}
