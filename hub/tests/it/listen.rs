//! `teamhub listen` as a script runs it: the real binary against a real node.
//!
//! The node runs in-process so a test can drain it and start it again on the same
//! port; `listen` is a child process whose stdout and stderr lines are read with a
//! timeout each.

use std::net::SocketAddr;
use std::process::Stdio;

use serde_json::{Value, json};
use teamhub::Running;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

use crate::harness::*;

const BIN: &str = env!("CARGO_BIN_EXE_teamhub");

/// A node that can be stopped and started again on the same address.
struct Restartable {
    addr: SocketAddr,
    extra: Vec<String>,
    db: std::path::PathBuf,
    running: Option<Running>,
    _dir: tempfile::TempDir,
}

impl Restartable {
    async fn start(extra: &[&str]) -> Restartable {
        let dir = tempfile::tempdir().unwrap();
        let mut node = Restartable {
            addr: "127.0.0.1:0".parse().unwrap(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            db: dir.path().join("hub.db"),
            running: None,
            _dir: dir,
        };
        node.up().await;
        node
    }

    async fn up(&mut self) {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_reuseaddr(true).unwrap();
        socket.bind(self.addr).unwrap();
        let listener = socket.listen(128).unwrap();
        let extra: Vec<&str> = self.extra.iter().map(String::as_str).collect();
        let running = teamhub::start_on(&serve_args(&extra, &self.db), listener)
            .await
            .expect("node starts");
        self.addr = running.addr;
        self.running = Some(running);
    }

    async fn down(&mut self) {
        let running = self.running.take().expect("running");
        running.drain();
        tokio::time::timeout(WAIT, running.wait())
            .await
            .expect("drain finishes")
            .expect("drain succeeds");
    }

    async fn publish(&self, token: &str, ty: &str, data: Value) -> u64 {
        rest_publish(self.addr, token, ty, data).await
    }
}

async fn rest_publish(addr: SocketAddr, token: &str, ty: &str, data: Value) -> u64 {
    let response = reqwest::Client::new()
        .post(format!("http://{addr}/api/v1/teams/t/messages"))
        .bearer_auth(token)
        .json(&json!({"type": ty, "data": data}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json::<Value>().await.unwrap()["offset"]
        .as_u64()
        .unwrap()
}

/// A running `teamhub listen` with its output lines.
struct Listener {
    child: Child,
    stdout: mpsc::UnboundedReceiver<String>,
    stderr: mpsc::UnboundedReceiver<String>,
}

fn lines(
    pipe: impl tokio::io::AsyncRead + Unpin + Send + 'static,
) -> mpsc::UnboundedReceiver<String> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut lines = BufReader::new(pipe).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

impl Listener {
    fn spawn(addr: SocketAddr, token: &str, args: &[&str]) -> Listener {
        Self::spawn_url(&format!("ws://{addr}"), token, args)
    }

    fn spawn_url(url: &str, token: &str, args: &[&str]) -> Listener {
        let mut child = Command::new(BIN)
            .args(["listen", "--url", url, "--backoff-max-ms", "200"])
            .args(args)
            .env("TEAMHUB_TOKEN", token)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdout = lines(child.stdout.take().unwrap());
        let stderr = lines(child.stderr.take().unwrap());
        Listener {
            child,
            stdout,
            stderr,
        }
    }

    /// The next stdout line, parsed.
    async fn frame(&mut self) -> Value {
        let line = tokio::time::timeout(WAIT, self.stdout.recv())
            .await
            .expect("a stdout line in time")
            .expect("listen still running");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    }

    /// Waits for a stderr line containing `needle`; returns it.
    async fn notice(&mut self, needle: &str) -> String {
        let wait = async {
            while let Some(line) = self.stderr.recv().await {
                if line.contains(needle) {
                    return line;
                }
            }
            panic!("stderr ended without {needle:?}");
        };
        tokio::time::timeout(WAIT, wait)
            .await
            .unwrap_or_else(|_| panic!("no stderr line with {needle:?} in time"))
    }

    /// Waits for the join reply of `team`.
    async fn joined(&mut self, team: &str) -> Value {
        let reply = self.frame().await;
        assert_eq!(reply["op"], "reply", "{reply}");
        assert_eq!(reply["team"], team, "{reply}");
        reply
    }

    async fn exit(&mut self) -> (std::process::ExitStatus, Vec<String>) {
        let status = tokio::time::timeout(WAIT, self.child.wait())
            .await
            .expect("listen exits in time")
            .unwrap();
        let mut stderr = Vec::new();
        while let Ok(Some(line)) = tokio::time::timeout(WAIT, self.stderr.recv()).await {
            stderr.push(line);
        }
        (status, stderr)
    }
}

fn message(frame: &Value) -> (u64, &str, &Value) {
    assert_eq!(frame["op"], "message", "{frame}");
    (
        frame["offset"].as_u64().unwrap(),
        frame["type"].as_str().unwrap(),
        &frame["data"],
    )
}

#[tokio::test]
async fn prints_frames_as_json_lines_and_filters_types() {
    let node = Restartable::start(&[]).await;
    let editor = token_with("ed", &[("t", "editor")], |_| {});
    let mut listen = Listener::spawn(
        node.addr,
        &token_with("li", &[("t", "viewer"), ("u", "viewer")], |_| {}),
        &["--team", "t", "--team", "u", "--types", "chat.,deploy."],
    );
    let reply = listen.joined("t").await;
    assert_eq!(reply["ok"], true);
    assert_eq!(reply["presence"][0]["user"], "li");
    listen.joined("u").await;

    // The editor's arrival is a presence diff, printed although it is not a message.
    let mut ed = TestClient::connect(
        teamhub_client::ConnectOptions::new(format!("ws://{}/ws", node.addr)).token(editor.clone()),
    )
    .await;
    ed.join("t").await;
    let diff = listen.frame().await;
    assert_eq!(diff["op"], "presence_diff", "{diff}");
    assert_eq!(diff["joins"][0]["user"], "ed");

    node.publish(&editor, "chat.message", json!({"text": "hi"}))
        .await;
    node.publish(&editor, "cursor.move", json!({"x": 1})).await;
    node.publish(&editor, "deploy.done", json!({"v": 2})).await;
    let first = listen.frame().await;
    assert_eq!(message(&first), (1, "chat.message", &json!({"text": "hi"})));
    assert_eq!(first["user"], "ed");
    assert_eq!(first["team"], "t");
    assert!(first["ts"].as_str().unwrap().ends_with('Z'));
    // cursor.move (offset 2) is filtered out.
    assert_eq!(message(&listen.frame().await).0, 3);
}

#[tokio::test]
async fn recovers_missed_messages_after_the_node_restarts() {
    // Cluster mode keeps epoch and history in Redis, so they survive the restart.
    let prefix = format!("it-listen-{}", uuid::Uuid::new_v4().simple());
    let redis =
        std::env::var("TEAMHUB_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let flags = ["--redis-url", &redis, "--redis-key-prefix", &prefix];
    let mut a = Restartable::start(&flags).await;
    let b = Restartable::start(&flags).await;
    let editor = token_with("ed", &[("t", "editor")], |_| {});
    let mut listen = Listener::spawn(
        a.addr,
        &token_with("li", &[("t", "viewer")], |_| {}),
        &["--team", "t"],
    );
    listen.joined("t").await;
    a.publish(&editor, "n", json!(1)).await;
    assert_eq!(message(&listen.frame().await).0, 1);

    a.down().await;
    listen.notice("closed with 1012").await;
    // Published through the other node while this one is down.
    b.publish(&editor, "n", json!(2)).await;
    b.publish(&editor, "n", json!(3)).await;
    a.up().await;

    let reply = listen.joined("t").await;
    assert_eq!(reply["recovered"], true, "{reply}");
    assert_eq!(
        reply["missed"],
        json!([]),
        "missed messages are printed as lines"
    );
    assert_eq!(message(&listen.frame().await), (2, "n", &json!(2)));
    assert_eq!(message(&listen.frame().await), (3, "n", &json!(3)));
    listen.notice("recovered 2 missed messages").await;
    a.publish(&editor, "n", json!(4)).await;
    assert_eq!(message(&listen.frame().await), (4, "n", &json!(4)));
}

#[tokio::test]
async fn says_so_when_recovery_is_impossible_and_carries_on() {
    // A single in-process node starts a new epoch when it restarts.
    let mut node = Restartable::start(&[]).await;
    let editor = token_with("ed", &[("t", "editor")], |_| {});
    let mut listen = Listener::spawn(
        node.addr,
        &token_with("li", &[("t", "viewer")], |_| {}),
        &["--team", "t"],
    );
    let before = listen.joined("t").await;
    node.publish(&editor, "n", json!(1)).await;
    assert_eq!(message(&listen.frame().await).0, 1);
    node.down().await;
    node.up().await;
    let after = listen.joined("t").await;
    assert_eq!(after["recovered"], false);
    assert_ne!(after["epoch"], before["epoch"]);
    let line = listen.notice("cannot recover").await;
    assert!(line.contains("team t"), "{line}");
    node.publish(&editor, "n", json!("new")).await;
    assert_eq!(message(&listen.frame().await), (1, "n", &json!("new")));
}

#[tokio::test]
async fn a_bad_token_exits_non_zero_without_retrying() {
    let node = Restartable::start(&[]).await;
    let mut listen = Listener::spawn(node.addr, "not-a-token", &["--team", "t"]);
    let (status, stderr) = listen.exit().await;
    assert!(!status.success());
    let text = stderr.join("\n");
    assert!(text.contains("HTTP 401"), "{text}");
    assert!(!text.contains("reconnecting"), "{text}");
}

#[tokio::test]
async fn a_forbidden_team_exits_non_zero() {
    let node = Restartable::start(&[]).await;
    let mut listen = Listener::spawn(
        node.addr,
        &token_with("li", &[("t", "viewer")], |_| {}),
        &["--team", "t", "--team", "secret"],
    );
    listen.joined("t").await;
    let error = listen.frame().await;
    assert_eq!(error["op"], "error");
    assert_eq!(error["code"], "forbidden");
    let (status, stderr) = listen.exit().await;
    assert!(!status.success());
    let text = stderr.join("\n");
    assert!(
        text.contains("joining team secret failed: forbidden"),
        "{text}"
    );
}

#[tokio::test]
async fn an_unreachable_node_is_retried_until_it_comes_up() {
    let mut node = Restartable::start(&[]).await;
    node.down().await;
    let mut listen = Listener::spawn(
        node.addr,
        &token_with("li", &[("t", "viewer")], |_| {}),
        &["--team", "t"],
    );
    listen.notice("reconnecting in").await;
    listen.notice("reconnecting in").await;
    node.up().await;
    listen.joined("t").await;
}

#[tokio::test]
async fn an_expired_token_exits_non_zero() {
    let node = Restartable::start(&["--jwt-leeway", "0"]).await;
    let now = teamhub::auth::now_secs();
    let token = token_with("li", &[("t", "viewer")], |c| c.exp = now + 2);
    let mut listen = Listener::spawn(node.addr, &token, &["--team", "t"]);
    listen.joined("t").await;
    let (status, stderr) = listen.exit().await;
    assert!(!status.success());
    let text = stderr.join("\n");
    assert!(text.contains("token expired (close 4001)"), "{text}");
}

#[tokio::test]
async fn revoked_from_its_last_team_it_exits_non_zero() {
    let node = Restartable::start(&[]).await;
    let admin = token_with("ad", &[("t", "admin")], |_| {});
    let mut listen = Listener::spawn(
        node.addr,
        &token_with("li", &[("t", "viewer")], |_| {}),
        &["--team", "t"],
    );
    listen.joined("t").await;
    let response = reqwest::Client::new()
        .post(format!(
            "http://{}/api/v1/teams/t/members/li/revoke",
            node.addr
        ))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    let kicked = listen.frame().await;
    assert_eq!(kicked["op"], "kicked", "{kicked}");
    assert_eq!(kicked["reason"], "revoked");
    let (status, stderr) = listen.exit().await;
    assert!(!status.success());
    let text = stderr.join("\n");
    assert!(text.contains("no team left"), "{text}");
}

#[tokio::test]
async fn an_api_key_works_as_its_token() {
    let node = Restartable::start(&[]).await;
    let admin = token_with("ad", &[("t", "admin")], |_| {});
    let created: Value = reqwest::Client::new()
        .post(format!("http://{}/api/v1/teams/t/api-keys", node.addr))
        .bearer_auth(&admin)
        .json(&json!({"name": "ide", "role": "viewer"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = created["key"].as_str().expect("a key").to_owned();
    assert!(key.starts_with("thk_"), "{created}");
    let mut listen = Listener::spawn(node.addr, &key, &["--team", "t", "--types", "pattern."]);
    let reply = listen.joined("t").await;
    assert_eq!(
        reply["presence"][0]["user"],
        format!("apikey:{}", created["id"].as_str().unwrap())
    );
    node.publish(&admin, "chat.message", json!({"text": "not printed"}))
        .await;
    let put = reqwest::Client::new()
        .put(format!(
            "http://{}/api/v1/teams/t/patterns/button",
            node.addr
        ))
        .bearer_auth(&admin)
        .header("If-None-Match", "*")
        .json(&json!({"content": {"color": "blue"}}))
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success(), "{}", put.status());
    let frame = listen.frame().await;
    assert_eq!(message(&frame).1, "pattern.updated", "{frame}");
    assert_eq!(frame["data"]["name"], "button");
}

/// Over `wss://` with the CA given by `--ca-cert`, `listen` works as over `ws://`;
/// without it (the system roots do not know the test's CA) it ends at once with a
/// non-zero exit and says why, without retrying.
#[tokio::test]
async fn speaks_wss_and_refuses_a_certificate_it_cannot_verify() {
    let tls = crate::tls::TlsNode::start().await;
    let token = tls.hub.token("ann", &[("t", "editor")]);
    let url = format!("wss://127.0.0.1:{}", tls.hub.addr.port());

    let ca = tls.ca_path.display().to_string();
    let mut listen = Listener::spawn_url(&url, &token, &["--team", "t", "--ca-cert", &ca]);
    listen.joined("t").await;
    let mut publisher = tls.client("bob", &[("t", "editor")]).await;
    publisher.join("t").await;
    let diff = listen.frame().await;
    assert_eq!(diff["op"], "presence_diff", "{diff}");
    publisher
        .publish("t", "chat.msg", json!({"n": 1}), false)
        .await;
    let frame = listen.frame().await;
    assert_eq!(message(&frame).1, "chat.msg", "{frame}");

    let mut refused = Listener::spawn_url(&url, &token, &["--team", "t"]);
    let (status, stderr) = refused.exit().await;
    assert!(!status.success(), "{stderr:?}");
    let said = stderr.join("\n");
    assert!(
        said.contains("TLS") && said.contains("not retrying"),
        "says why: {said}"
    );
    assert!(
        !said.contains("reconnecting"),
        "a certificate that does not verify is not retried: {said}"
    );
}
