//! Test harness: a real node on a loopback port and real clients talking to it.
//!
//! Every `expect_*` waits for the event with a timeout and fails loudly; nothing here
//! sleeps in place of synchronisation.

#![allow(dead_code)]

use std::ffi::OsString;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use teamhub::config::{Cli, Command, ServeArgs};
use teamhub::node::Node;
use teamhub::{DrainReport, Running};
use teamhub_client::{ConnectOptions, Connection, Incoming, TokenPlacement};
use teamhub_protocol::{
    Claims, ClientFrame, ClientOp, ErrorCode, JoinReply, MessageFrame, PresenceDiff, Publish,
    ReplyBody, ServerFrame, TeamId,
};

pub const SECRET: &str = "integration-test-secret-0123456789";
pub const WAIT: Duration = Duration::from_secs(10);

pub struct TestHub {
    pub addr: std::net::SocketAddr,
    pub node: Arc<Node>,
    running: Option<Running>,
    pub db_path: std::path::PathBuf,
    _dir: tempfile::TempDir,
    /// The Postgres schema of a node started with [`TestHub::start_on`] `Postgres`
    /// (shared by the nodes of a cluster started with [`TestHub::start_shared`]).
    pub pg: Option<Arc<teamhub_persistence::testing::PostgresSchema>>,
}

/// Runs an `async fn(Db)` test once per database, as `sqlite::NAME` and
/// `postgres::NAME`, so a failure names its backend.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name($crate::harness::Db::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name($crate::harness::Db::Postgres).await
                }
            )*
        }
    };
}

/// Which database a test node runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    /// Its own SQLite file (the default).
    Sqlite,
    /// Its own schema on the test Postgres server (`TEAMHUB_TEST_DATABASE_URL`).
    Postgres,
}

/// `serve` arguments for a test node: HS256 secret, its own SQLite file, port 0.
pub fn serve_args(extra: &[&str], db: &std::path::Path) -> ServeArgs {
    let mut with_secret = vec!["--jwt-secret", SECRET];
    with_secret.extend_from_slice(extra);
    serve_args_exact(&with_secret, db)
}

/// `serve` arguments without the default secret.
pub fn serve_args_exact(extra: &[&str], db: &std::path::Path) -> ServeArgs {
    serve_args_db(extra, db, &format!("sqlite://{}", db.display()))
}

/// `serve` arguments with this database URL (`db` places the spill file).
pub fn serve_args_db(extra: &[&str], db: &std::path::Path, db_url: &str) -> ServeArgs {
    // Each node spills its activity log next to its own database.
    let spill = db.with_extension("spill").display().to_string();
    let mut argv: Vec<OsString> = [
        "teamhub",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--database-url",
        db_url,
        "--activity-spill-path",
        &spill,
    ]
    .iter()
    .map(OsString::from)
    .collect();
    argv.extend(extra.iter().map(OsString::from));
    match Cli::load_from(argv).expect("valid test arguments").command {
        Command::Serve(args) => *args,
        _ => unreachable!(),
    }
}

impl TestHub {
    pub async fn start() -> TestHub {
        Self::start_with(&[]).await
    }

    /// Starts a node with extra `serve` flags, e.g. `&["--rate-limit", "5"]`.
    pub async fn start_with(extra: &[&str]) -> TestHub {
        let mut with_secret = vec!["--jwt-secret", SECRET];
        with_secret.extend_from_slice(extra);
        Self::start_exact(&with_secret).await
    }

    /// Starts a node with exactly these flags (plus listen address and database).
    pub async fn start_exact(extra: &[&str]) -> TestHub {
        Self::start_exact_on(Db::Sqlite, extra).await
    }

    /// Starts a node (with the test secret and `extra` flags) on `db`.
    pub async fn start_on(db: Db, extra: &[&str]) -> TestHub {
        let mut with_secret = vec!["--jwt-secret", SECRET];
        with_secret.extend_from_slice(extra);
        Self::start_exact_on(db, &with_secret).await
    }

    /// A fresh Postgres schema for nodes that share one database (a cluster).
    pub async fn postgres_schema() -> Arc<teamhub_persistence::testing::PostgresSchema> {
        let base = teamhub_persistence::testing::test_database_url();
        Arc::new(
            teamhub_persistence::testing::PostgresSchema::create(&base)
                .await
                .unwrap_or_else(|e| panic!("Postgres for the test is unreachable: {e}")),
        )
    }

    /// Starts a node with the test secret on the Postgres schema `pg`, which other
    /// nodes (of a cluster, or after a restart) may share.
    pub async fn start_shared(
        pg: Arc<teamhub_persistence::testing::PostgresSchema>,
        extra: &[&str],
    ) -> TestHub {
        let mut hub = Self::start_db_url(extra, pg.url()).await;
        hub.pg = Some(pg);
        hub
    }

    /// Starts a node with the test secret on the database at `url` (e.g. another
    /// node's SQLite file, as after a restart).
    pub async fn start_db_url(extra: &[&str], url: &str) -> TestHub {
        let mut with_secret = vec!["--jwt-secret", SECRET];
        with_secret.extend_from_slice(extra);
        let dir = tempfile::tempdir().unwrap();
        let db_path = dir.path().join("hub.db");
        let args = serve_args_db(&with_secret, &db_path, url);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let running = teamhub::start_on(&args, listener)
            .await
            .expect("node starts");
        TestHub {
            addr: running.addr,
            node: running.node.clone(),
            running: Some(running),
            db_path,
            _dir: dir,
            pg: None,
        }
    }

    async fn start_exact_on(db: Db, extra: &[&str]) -> TestHub {
        let dir = tempfile::tempdir().unwrap();
        let db_path = dir.path().join("hub.db");
        let (args, schema) = match db {
            Db::Sqlite => (serve_args_exact(extra, &db_path), None),
            Db::Postgres => {
                let base = teamhub_persistence::testing::test_database_url();
                let schema = teamhub_persistence::testing::PostgresSchema::create(&base)
                    .await
                    .unwrap_or_else(|e| panic!("Postgres for the test is unreachable: {e}"));
                (serve_args_db(extra, &db_path, schema.url()), Some(schema))
            }
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let running = teamhub::start_on(&args, listener)
            .await
            .expect("node starts");
        TestHub {
            addr: running.addr,
            node: running.node.clone(),
            running: Some(running),
            db_path,
            _dir: dir,
            pg: schema.map(Arc::new),
        }
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    pub fn http(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// A token for `user` with `(team, role name)` grants (role names may be unknown ones).
    pub fn token(&self, user: &str, teams: &[(&str, &str)]) -> String {
        token_with(user, teams, |_| {})
    }

    pub async fn connect(&self, user: &str, teams: &[(&str, &str)]) -> TestClient {
        TestClient::connect(ConnectOptions::new(self.ws_url()).token(self.token(user, teams))).await
    }

    /// Drains the node and waits for it to finish.
    pub async fn drain(&mut self) -> DrainReport {
        let running = self.running.take().expect("not drained yet");
        running.drain();
        tokio::time::timeout(Duration::from_secs(30), running.wait())
            .await
            .expect("drain finishes")
            .expect("drain succeeds")
    }

    /// Stops this node's Redis presence refresh without leaving, as if it was killed.
    pub fn stop_presence_refresh(&self) {
        self.running
            .as_ref()
            .expect("running")
            .stop_presence_refresh();
    }

    pub async fn metric(&self, name: &str) -> f64 {
        let text = reqwest::get(self.http("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        metric_sum(&text, name, "")
    }
}

/// The sum of the series of metric `name` in a Prometheus text page whose labels
/// contain `labels` (`""` for every series).
pub fn metric_sum(text: &str, name: &str, labels: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .filter(|l| {
            l.split(' ')
                .next()
                .is_some_and(|series| series.contains(labels))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

pub fn token_with(user: &str, teams: &[(&str, &str)], edit: impl FnOnce(&mut Claims)) -> String {
    let now = teamhub::auth::now_secs();
    let mut claims = Claims {
        sub: user.try_into().unwrap(),
        name: Some(format!("{user} name")),
        teams: teams
            .iter()
            .map(|(t, r)| (TeamId::new(t).unwrap(), r.to_string()))
            .collect(),
        exp: now + 3600,
        iat: Some(now),
        nbf: None,
        iss: None,
        aud: None,
    };
    edit(&mut claims);
    teamhub_client::mint_hs256(&claims, SECRET.as_bytes()).unwrap()
}

/// A client on the low-level connection, with helpers that wait for frames.
pub struct TestClient {
    pub conn: Connection,
    next_id: u64,
}

impl TestClient {
    pub async fn connect(opts: ConnectOptions) -> TestClient {
        let conn = tokio::time::timeout(WAIT, Connection::connect(opts))
            .await
            .expect("connect in time")
            .expect("connects");
        TestClient { conn, next_id: 0 }
    }

    pub async fn try_connect(
        opts: ConnectOptions,
    ) -> Result<TestClient, teamhub_client::ClientError> {
        Connection::connect(opts)
            .await
            .map(|conn| TestClient { conn, next_id: 0 })
    }

    pub async fn send(&mut self, op: ClientOp) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        self.conn
            .send(&ClientFrame { id: Some(id), op })
            .await
            .expect("send");
        id
    }

    pub async fn send_text(&mut self, text: &str) {
        self.conn.send_text(text).await.expect("send");
    }

    pub async fn next(&mut self) -> Incoming {
        tokio::time::timeout(WAIT, self.conn.recv())
            .await
            .expect("a frame in time")
            .expect("recv")
    }

    pub async fn next_frame(&mut self) -> ServerFrame {
        match self.next().await {
            Incoming::Frame(f) => f,
            other => panic!("expected a server frame, got {other:?}"),
        }
    }

    /// The reply to request `id`, skipping presence diffs that may interleave.
    pub async fn expect_reply(&mut self, id: u64) -> ReplyBody {
        loop {
            match self.next_frame().await {
                ServerFrame::Reply(r) if r.id == Some(id) => {
                    assert!(r.ok);
                    return r.body;
                }
                ServerFrame::PresenceDiff(_) => continue,
                other => panic!("expected reply {id}, got {other:?}"),
            }
        }
    }

    pub async fn expect_error(&mut self, id: Option<u64>, code: ErrorCode) -> String {
        loop {
            match self.next_frame().await {
                ServerFrame::Error(e) => {
                    assert_eq!((e.id, e.code), (id, code), "error frame: {}", e.message);
                    return e.message;
                }
                ServerFrame::PresenceDiff(_) => continue,
                other => panic!("expected error {code:?}, got {other:?}"),
            }
        }
    }

    pub async fn join(&mut self, team: &str) -> JoinReply {
        let id = self
            .send(ClientOp::Join(
                serde_json::from_value(serde_json::json!({"team": team})).unwrap(),
            ))
            .await;
        match self.expect_reply(id).await {
            ReplyBody::Join(j) => j,
            other => panic!("expected a join reply, got {other:?}"),
        }
    }

    pub async fn join_with(&mut self, body: Value) -> JoinReply {
        let id = self
            .send(ClientOp::Join(serde_json::from_value(body).unwrap()))
            .await;
        match self.expect_reply(id).await {
            ReplyBody::Join(j) => j,
            other => panic!("expected a join reply, got {other:?}"),
        }
    }

    pub fn publish_op(team: &str, ty: &str, data: Value, echo: bool) -> ClientOp {
        ClientOp::Publish(Publish {
            team: TeamId::new(team).unwrap(),
            ty: ty.try_into().unwrap(),
            data: serde_json::value::to_raw_value(&data).unwrap(),
            echo,
        })
    }

    pub async fn publish(&mut self, team: &str, ty: &str, data: Value, echo: bool) -> u64 {
        let id = self.send(Self::publish_op(team, ty, data, echo)).await;
        loop {
            match self.next_frame().await {
                ServerFrame::Reply(r) if r.id == Some(id) => match r.body {
                    ReplyBody::Publish(p) => return p.offset,
                    other => panic!("expected a publish reply, got {other:?}"),
                },
                // Our own echo may arrive before the reply.
                ServerFrame::Message(_) | ServerFrame::PresenceDiff(_) => continue,
                other => panic!("expected publish reply, got {other:?}"),
            }
        }
    }

    /// The next `message` frame, skipping presence diffs.
    pub async fn expect_message(&mut self) -> MessageFrame {
        loop {
            match self.next_frame().await {
                ServerFrame::Message(m) => return m,
                ServerFrame::PresenceDiff(_) => continue,
                other => panic!("expected a message, got {other:?}"),
            }
        }
    }

    pub async fn expect_diff(&mut self) -> PresenceDiff {
        match self.next_frame().await {
            ServerFrame::PresenceDiff(d) => d,
            other => panic!("expected a presence diff, got {other:?}"),
        }
    }

    /// Reads until the server closes; returns the close code.
    pub async fn expect_close(&mut self) -> (Option<u16>, String) {
        loop {
            match self.next().await {
                Incoming::Closed { code, reason } => return (code, reason),
                _ => continue,
            }
        }
    }

    /// A ping whose pong must be the very next frame: nothing else was queued.
    pub async fn roundtrip_strict(&mut self) {
        let id = self.send(ClientOp::Ping).await;
        assert_eq!(self.next_frame().await, ServerFrame::Pong { id: Some(id) });
    }

    /// A ping/pong round trip: the connection is alive and every frame sent before it
    /// was handled.
    pub async fn roundtrip(&mut self) {
        let id = self.send(ClientOp::Ping).await;
        loop {
            match self.next_frame().await {
                ServerFrame::Pong { id: got } if got == Some(id) => return,
                ServerFrame::PresenceDiff(_) | ServerFrame::Message(_) => continue,
                other => panic!("expected pong {id}, got {other:?}"),
            }
        }
    }
}

pub fn header_client(url: String, token: String) -> ConnectOptions {
    ConnectOptions::new(url)
        .token(token)
        .token_in(TokenPlacement::Header)
}

/// A REST answer: status, headers and the JSON body (`Null` when there is none).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Answer {
    pub fn code(&self) -> &str {
        self.body["error"]["code"]
            .as_str()
            .unwrap_or("<no error body>")
    }

    pub fn etag(&self) -> Option<&str> {
        self.headers.get("etag").and_then(|v| v.to_str().ok())
    }
}

/// One REST request: JSON body (when given) with `Content-Type: application/json`,
/// bearer token and extra headers.
pub async fn call(
    hub: &TestHub,
    method: &str,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> Answer {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = reqwest::Client::new().request(method, hub.http(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    let resp = tokio::time::timeout(WAIT, req.send())
        .await
        .expect("answer in time")
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Answer {
        status,
        headers,
        body,
    }
}

/// Ten writers PUT the same pattern at once, each with `If-Match: "1"`, writer `i`
/// through `urls[i % urls.len()]` (one node, or several sharing a database): exactly
/// one must win (200) and the other nine see the conflict (409).
pub async fn racing_puts_one_wins(urls: &[String], token: &str) {
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let (url, token) = (urls[i % urls.len()].clone(), token.to_owned());
            tokio::spawn(async move {
                reqwest::Client::new()
                    .put(url)
                    .bearer_auth(token)
                    .header("if-match", "\"1\"")
                    .json(&serde_json::json!({"content": i}))
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    statuses.sort();
    let mut expected = vec![200];
    expected.extend([409; 9]);
    assert_eq!(statuses, expected);
}

impl TestHub {
    /// The URL of this node's database.
    pub fn database_url(&self) -> String {
        match &self.pg {
            Some(pg) => pg.url().to_owned(),
            None => format!("sqlite://{}", self.db_path.display()),
        }
    }

    /// Drains the node (so its activity log is flushed) and reads `team`'s activity.
    pub async fn activity_after_drain(
        &mut self,
        team: &str,
    ) -> Vec<teamhub_persistence::ActivityRow> {
        self.drain().await;
        let db = teamhub_persistence::connect(&self.database_url())
            .await
            .unwrap();
        let rows = db
            .activity_reader()
            .recent(&TeamId::new(team).unwrap(), 1000)
            .await
            .unwrap();
        db.close().await;
        rows
    }
}

impl TestClient {
    /// The next `kicked` frame, skipping presence diffs and messages.
    pub async fn expect_kicked(&mut self) -> teamhub_protocol::Kicked {
        loop {
            match self.next_frame().await {
                ServerFrame::Kicked(k) => return k,
                ServerFrame::PresenceDiff(_) | ServerFrame::Message(_) => continue,
                other => panic!("expected kicked, got {other:?}"),
            }
        }
    }
}
