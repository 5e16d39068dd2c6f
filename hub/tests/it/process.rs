//! The `teamhub` binary as an operator runs it: serve, SIGTERM, token, migrate.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use teamhub_client::ConnectOptions;

use crate::harness::*;

const BIN: &str = env!("CARGO_BIN_EXE_teamhub");

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Proc {
    child: Child,
    port: u16,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `teamhub serve` on `port` with the test secret and its database and spill file in
/// `dir`; stdout discarded, stderr as the caller sets it.
fn serve_command(dir: &std::path::Path, port: u16) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env(
            "TEAMHUB_DATABASE_URL",
            format!("sqlite://{}", dir.join("hub.db").display()),
        )
        .env("TEAMHUB_JWT_SECRET", SECRET)
        .env("TEAMHUB_ACTIVITY_SPILL_PATH", dir.join("activity.spill"))
        .stdout(Stdio::null());
    cmd
}

async fn spawn_serve(dir: &std::path::Path, extra: &[&str]) -> Proc {
    let port = free_port();
    let child = serve_command(dir, port)
        .args(extra)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let proc = Proc { child, port };
    wait_ready(port).await;
    proc
}

/// Waits until `/readyz` on `port` answers 200.
pub async fn wait_ready(port: u16) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Ok(r) = reqwest::get(format!("http://127.0.0.1:{port}/readyz")).await
            && r.status() == 200
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "node did not become ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await; // polling interval, bounded by the deadline
    }
}

/// Waits for the process to exit, at most 20 s.
pub async fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "node did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await; // polling interval, bounded by the deadline
    }
}

pub fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

fn output(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env_remove("TEAMHUB_JWT_SECRET");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

#[tokio::test]
async fn sigterm_drains_closes_1012_flushes_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let mut proc = spawn_serve(dir.path(), &[]).await;
    // A token minted by the CLI works against the node.
    let out = output(
        &[
            "token", "--user", "ann", "--team", "t=editor", "--ttl", "10m",
        ],
        &[("TEAMHUB_JWT_SECRET", SECRET)],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let mut c = TestClient::connect(
        ConnectOptions::new(format!("ws://127.0.0.1:{}/ws", proc.port)).token(token),
    )
    .await;
    c.join("t").await;
    for i in 0..10 {
        c.publish("t", "n", serde_json::json!(i), false).await;
    }
    let status = Command::new("kill")
        .args(["-TERM", &proc.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(c.expect_close().await.0, Some(1012));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let exit = loop {
        if let Some(s) = proc.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "node did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(exit.code(), Some(0));
    let db =
        teamhub_persistence::connect(&format!("sqlite://{}", dir.path().join("hub.db").display()))
            .await
            .unwrap();
    let rows = db
        .activity_reader()
        .recent(&"t".try_into().unwrap(), 100)
        .await
        .unwrap();
    assert_eq!(
        rows.iter().filter(|r| r.action == "n").count(),
        10,
        "flushed before exit"
    );
}

#[test]
fn token_command_validates_its_input() {
    let out = output(&["token", "--user", "ann", "--team", "t=editor"], &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("TEAMHUB_JWT_SECRET"));
    let env = [("TEAMHUB_JWT_SECRET", SECRET)];
    for (team, why) in [
        ("t=wizard", "unknown role"),
        ("t", "TEAM=ROLE"),
        ("b d=editor", "team id"),
    ] {
        let out = output(&["token", "--user", "ann", "--team", team], &env);
        assert!(!out.status.success(), "{team}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(why),
            "{team}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn migrate_creates_the_schema() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("m.db").display());
    let out = output(&["migrate", "--database-url", &url], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.path().join("m.db").exists());
    let again = output(&["migrate", "--database-url", &url], &[]);
    assert!(again.status.success(), "migrate is idempotent");
    let bad = output(&["migrate", "--database-url", "mysql://x"], &[]);
    assert!(!bad.status.success());
}

#[test]
fn bad_configuration_fails_fast_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("c.db").display());
    let cases: &[(&[&str], &str)] = &[
        (
            &["serve", "--listen", "0.0.0.0:0", "--database-url", &db],
            "development mode",
        ),
        (
            &["serve", "--jwt-secret", "short", "--database-url", &db],
            "too short",
        ),
        (
            &[
                "serve",
                "--jwks-url",
                "http://idp.example/jwks",
                "--database-url",
                &db,
            ],
            "must be an https URL",
        ),
        (
            &[
                "serve",
                "--jwt-secret",
                SECRET,
                "--rate-limit",
                "x",
                "--database-url",
                &db,
            ],
            "invalid value",
        ),
        (
            &[
                "serve",
                "--jwt-secret",
                SECRET,
                "--ping-interval",
                "0",
                "--database-url",
                &db,
            ],
            "ping-interval",
        ),
        (
            &[
                "serve",
                "--jwt-public-key",
                "/nonexistent.pem",
                "--jwt-alg",
                "RS256",
                "--database-url",
                &db,
            ],
            "nonexistent.pem",
        ),
    ];
    for (args, expect) in cases {
        let out = output(args, &[]);
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expect), "{args:?}: {err}");
    }
    let cfg = dir.path().join("hub.toml");
    std::fs::write(&cfg, "listen = 3\nnot_a_setting = 1\n").unwrap();
    let out = output(&["serve", "--config", cfg.to_str().unwrap()], &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not_a_setting"));
}

#[tokio::test]
async fn sigkill_of_a_cluster_node_takes_its_users_offline_within_two_ttls() {
    let redis =
        std::env::var("TEAMHUB_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let prefix = format!("proc-{}", uuid::Uuid::new_v4().simple());
    let cluster = [
        "--redis-url",
        &redis,
        "--redis-key-prefix",
        &prefix,
        "--presence-ttl",
        "1",
    ];
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = spawn_serve(dir_a.path(), &cluster).await;
    let mut b = spawn_serve(dir_b.path(), &cluster).await;
    let url = |p: &Proc| format!("ws://127.0.0.1:{}/ws", p.port);
    let token = |user: &str| token_with(user, &[("t", "editor")], |_| {});
    let mut watcher = TestClient::connect(ConnectOptions::new(url(&a)).token(token("w"))).await;
    watcher.join("t").await;
    let mut ghost = TestClient::connect(ConnectOptions::new(url(&b)).token(token("ghost"))).await;
    ghost.join("t").await;
    assert_eq!(watcher.expect_diff().await.joins[0].user.as_str(), "ghost");
    // Messages still cross from the surviving node's point of view before the kill.
    ghost.publish("t", "n", serde_json::json!(1), false).await;
    assert_eq!(watcher.expect_message().await.user.as_str(), "ghost");

    let killed = std::time::Instant::now();
    assert!(
        Command::new("kill")
            .args(["-KILL", &b.child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let _ = b.child.wait();
    let d = watcher.expect_diff().await;
    assert_eq!((d.leaves.len(), d.leaves[0].user.as_str()), (1, "ghost"));
    assert!(
        killed.elapsed() < Duration::from_secs(3),
        "leave within two TTLs (+ a sweep period): {:?}",
        killed.elapsed()
    );
    // Exactly one leave: the next frame after a ping is the pong.
    watcher.roundtrip_strict().await;
}

#[tokio::test]
async fn json_logs_put_every_connection_in_a_span_with_node_user_and_teams() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = serve_command(dir.path(), port)
        .args(["--log-format", "json", "--node-id", "node-json"])
        .env("RUST_LOG", "teamhub=debug")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_ready(port).await;
    let token = token_with("ann", &[("alpha", "editor"), ("beta", "viewer")], |_| {});
    let mut c =
        TestClient::connect(ConnectOptions::new(format!("ws://127.0.0.1:{port}/ws")).token(token))
            .await;
    c.join("beta").await;
    c.join("alpha").await;
    c.conn.close().await.unwrap();
    sigterm(&child);
    assert_eq!(wait_exit(&mut child).await.code(), Some(0));
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();

    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        lines
            .iter()
            .all(|l| l["level"].is_string() && l["timestamp"].is_string())
    );
    let conn_span = |l: &serde_json::Value| {
        l["spans"]
            .as_array()
            .and_then(|spans| spans.iter().find(|s| s["name"] == "conn"))
            .cloned()
    };
    let disconnected = lines
        .iter()
        .find(|l| l["message"] == "disconnected")
        .unwrap_or_else(|| panic!("no disconnect logged:\n{stderr}"));
    let span = conn_span(disconnected).expect("logged inside the conn span");
    assert_eq!(span["node"], "node-json");
    assert_eq!(span["user"], "ann");
    assert_eq!(span["teams"], "alpha,beta", "every team joined, sorted");
    // The line logged right after connecting has the span without teams yet.
    let connected = lines.iter().find(|l| l["message"] == "connected").unwrap();
    let span = conn_span(connected).unwrap();
    assert_eq!(
        (span["user"].as_str(), span.get("teams")),
        (Some("ann"), None)
    );
}

/// A node whose stderr is a pipe (a file, `| tee`, a log collector) writes plain text:
/// no ANSI colour escapes, even with `NO_COLOR` unset. And a browser origin that is
/// refused is logged at the default level, once per origin, with the allowed list.
#[tokio::test]
async fn a_piped_text_log_has_no_colour_escapes_and_names_each_refused_origin_once() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let allowed = format!("http://127.0.0.1:{port}");
    let mut child = serve_command(dir.path(), port)
        .args(["--log-format", "text", "--allowed-origins", &allowed])
        .env_remove("NO_COLOR")
        .env_remove("RUST_LOG")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_ready(port).await;
    let token = token_with("ann", &[("t", "viewer")], |_| {});
    let opts = ConnectOptions::new(format!("ws://127.0.0.1:{port}/ws")).token(token);
    let refused = format!("http://localhost:{port}");
    for _ in 0..3 {
        match TestClient::try_connect(opts.clone().origin(&refused)).await {
            Err(teamhub_client::ClientError::Http { status, .. }) => assert_eq!(status, 403),
            Err(other) => panic!("expected a 403, got {other}"),
            Ok(_) => panic!("the origin {refused} was let in"),
        }
    }
    TestClient::connect(opts.origin(&allowed))
        .await
        .roundtrip()
        .await;
    sigterm(&child);
    assert_eq!(wait_exit(&mut child).await.code(), Some(0));
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();

    assert!(
        !stderr.contains("\x1b["),
        "colour escapes in a piped log:\n{stderr:?}"
    );
    assert!(
        stderr.contains(" INFO ") && stderr.contains("stopped"),
        "the text log has its lines:\n{stderr}"
    );
    let refusals: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("refused a browser origin"))
        .collect();
    assert_eq!(refusals.len(), 1, "once per origin:\n{stderr}");
    assert!(
        refusals[0].contains(" INFO ")
            && refusals[0].contains(&format!("origin={refused}"))
            && refusals[0].contains(&format!("allowed={allowed}")),
        "{}",
        refusals[0]
    );
}
