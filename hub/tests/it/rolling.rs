//! Rolling restart with zero loss: three `teamhub` processes share one Redis (a key
//! prefix of their own) and one Postgres schema; 240 clients publish and receive while
//! each node in turn is sent SIGTERM, exits 0 and is started again on its port. Every
//! client reconnects with the client library's backoff and re-joins with `since`.
//!
//! Checked: every client saw every offset of its team exactly once and in order, the
//! same message at each offset as every other client of the team, every publish it had
//! acknowledged among them; presence lists every member once, with one connection;
//! and the shared activity log holds every message once.

use std::collections::{HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use teamhub_client::{Backoff, Client, ConnectOptions, Event, JoinOptions};
use teamhub_persistence::testing::{PostgresSchema, test_database_url};
use tokio::sync::{Barrier, mpsc, watch};
use tokio::time::{Instant, MissedTickBehavior};

use crate::harness::*;
use crate::process::{free_port, sigterm, wait_exit, wait_ready};

const BIN: &str = env!("CARGO_BIN_EXE_teamhub");
const NODES: usize = 3;
const CLIENTS: usize = 240;
const TEAMS: usize = 12;
/// Each client publishes at most this many messages, one per `PUBLISH_EVERY`.
const MAX_PUBLISHES: u32 = 60;
const PUBLISH_EVERY: Duration = Duration::from_millis(300);

struct Node {
    port: u16,
    args: Vec<String>,
    env: Vec<(String, String)>,
    child: Option<Child>,
}

impl Node {
    fn spawn(&mut self) {
        let child = Command::new(BIN)
            .arg("serve")
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    async fn start(&mut self) {
        self.spawn();
        wait_ready(self.port).await;
    }

    /// SIGTERM, then the exit status must be 0 (a completed drain).
    async fn stop(&mut self) {
        let mut child = self.child.take().expect("running");
        sigterm(&child);
        let status = wait_exit(&mut child).await;
        assert_eq!(status.code(), Some(0), "node on {} drained", self.port);
    }

    fn url(&self) -> String {
        format!("ws://127.0.0.1:{}/ws", self.port)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What one client saw and did.
struct Report {
    client: usize,
    team: String,
    /// (offset, data) of every message received, live or from a join's `missed`.
    seen: Vec<(u64, Value)>,
    /// (offset, seq) of every publish acknowledged.
    acked: Vec<(u64, u32)>,
    reconnects: u32,
}

struct Shared {
    urls: Vec<String>,
    start: Barrier,
    stop: watch::Receiver<bool>,
    stopped: mpsc::Sender<()>,
    targets: watch::Receiver<Option<HashMap<String, u64>>>,
    /// Publishes acknowledged so far, all clients together.
    acked: watch::Sender<u64>,
}

async fn run_client(idx: usize, shared: Arc<Shared>) -> Report {
    let team = format!("t{}", idx % TEAMS);
    let token = token_with(&format!("u{idx}"), &[(team.as_str(), "editor")], |_| {});
    let opts = |node: usize| ConnectOptions::new(&shared.urls[node]).token(&token);
    let policy =
        Backoff::new(Duration::from_millis(10), Duration::from_millis(500)).max_attempts(400);
    let mut node = idx % NODES;
    let mut client = Client::connect(opts(node)).await.expect("connects");
    let reply = client.join(&team, JoinOptions::default()).await.unwrap();
    assert_eq!(
        reply.offset, 0,
        "nothing published before every client joined"
    );
    let mut events = client.events();
    let mut report = Report {
        client: idx,
        team: team.clone(),
        seen: Vec::new(),
        acked: Vec::new(),
        reconnects: 0,
    };
    let (mut stop, mut targets) = (shared.stop.clone(), shared.targets.clone());
    shared.start.wait().await;

    // Publishers are spread over the interval so the load is even.
    let phase = PUBLISH_EVERY.mul_f64((idx % 30) as f64 / 30.0);
    let mut tick = tokio::time::interval_at(Instant::now() + phase, PUBLISH_EVERY);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut publishing = true;
    let mut seq = 0;
    loop {
        let target = targets.borrow().as_ref().map(|t| t[&team]);
        let last = report.seen.last().map_or(0, |(o, _)| *o);
        if target.is_some_and(|t| last >= t) {
            break;
        }
        tokio::select! {
            event = events.recv() => match event.expect("the stream ends with Closed") {
                Event::Message(m) => report.seen.push((m.offset, m.data)),
                Event::PresenceDiff(_) => {}
                Event::Closed { code, reason } => {
                    assert_eq!(code, Some(1012), "closed only by drains: {reason}");
                    report.reconnects += 1;
                    let mut delays = policy.delays_seeded((idx as u64) << 8 | report.reconnects as u64);
                    loop {
                        // Any node will do: take the next one.
                        node = (node + 1) % NODES;
                        let r = tokio::time::timeout(
                            Duration::from_secs(30),
                            client.reconnect(&opts(node), &mut delays),
                        )
                        .await
                        .expect("reconnects in time")
                        .expect("reconnects");
                        let rejoined = &r.teams[0];
                        match &rejoined.result {
                            Ok(reply) => {
                                assert!(reply.recovered, "client {idx}: history covers the gap");
                                report
                                    .seen
                                    .extend(reply.missed.iter().map(|m| (m.offset, m.data.clone())));
                                client = r.client;
                                break;
                            }
                            // The node it reached began draining during the join.
                            Err(e) if e.is_transient() => client = r.client,
                            Err(e) => panic!("client {idx}: rejoin refused: {e}"),
                        }
                    }
                    events = client.events();
                }
                other => panic!("client {idx}: unexpected {other:?}"),
            },
            _ = tick.tick(), if publishing && seq < MAX_PUBLISHES => {
                seq += 1;
                match client.publish(&team, "n", &json!({"c": idx, "s": seq}), true).await {
                    Ok(offset) => {
                        report.acked.push((offset, seq));
                        shared.acked.send_modify(|n| *n += 1);
                    }
                    // The node drained under the request: it may or may not have been
                    // published, which the offsets will show. Not retried, so it
                    // cannot be published twice.
                    Err(e) => assert!(e.is_transient(), "client {idx}: publish failed: {e}"),
                }
            }
            _ = stop.changed(), if publishing => {
                publishing = false;
                shared.stopped.send(()).await.unwrap();
            }
            _ = targets.changed() => {}
        }
    }
    let _ = client.close().await;
    report
}

#[tokio::test]
async fn rolling_restart_of_three_nodes_loses_and_repeats_nothing() {
    let redis =
        std::env::var("TEAMHUB_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let prefix = format!("roll-{}", uuid::Uuid::new_v4().simple());
    let schema = PostgresSchema::create(&test_database_url())
        .await
        .unwrap_or_else(|e| panic!("Postgres for the test is unreachable: {e}"));
    let dir = tempfile::tempdir().unwrap();
    let mut nodes: Vec<Node> = (0..NODES)
        .map(|i| {
            let port = free_port();
            Node {
                port,
                args: [
                    "--listen",
                    &format!("127.0.0.1:{port}"),
                    "--node-id",
                    &format!("node{i}"),
                    "--redis-url",
                    &redis,
                    "--redis-key-prefix",
                    &prefix,
                    "--rate-limit",
                    "0",
                    "--drain-timeout",
                    "10",
                ]
                .map(String::from)
                .to_vec(),
                env: vec![
                    ("TEAMHUB_JWT_SECRET".into(), SECRET.into()),
                    ("TEAMHUB_DATABASE_URL".into(), schema.url().into()),
                    (
                        "TEAMHUB_ACTIVITY_SPILL_PATH".into(),
                        dir.path()
                            .join(format!("node{i}.spill"))
                            .display()
                            .to_string(),
                    ),
                ],
                child: None,
            }
        })
        .collect();
    for node in &mut nodes {
        node.start().await;
    }

    let (stop_tx, stop) = watch::channel(false);
    let (targets_tx, targets) = watch::channel(None);
    let (stopped, mut stopped_rx) = mpsc::channel(CLIENTS);
    let shared = Arc::new(Shared {
        urls: nodes.iter().map(Node::url).collect(),
        start: Barrier::new(CLIENTS + 1),
        stop,
        stopped,
        targets,
        acked: watch::Sender::new(0),
    });
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|i| tokio::spawn(run_client(i, shared.clone())))
        .collect();
    tokio::time::timeout(Duration::from_secs(60), shared.start.wait())
        .await
        .expect("every client connected and joined");

    // Restart each node in turn while the clients publish. Before the first restart
    // and after each one, wait for another round of acknowledged publishes (about one
    // per client), so traffic flows on every generation of the cluster.
    let mut acked = shared.acked.subscribe();
    let mut wait_for_acks = async |more: u64| {
        let goal = *acked.borrow() + more;
        tokio::time::timeout(Duration::from_secs(30), acked.wait_for(|n| *n >= goal))
            .await
            .expect("publishes keep being acknowledged")
            .unwrap();
    };
    wait_for_acks(2 * CLIENTS as u64).await;
    for node in &mut nodes {
        node.stop().await;
        node.start().await;
        wait_for_acks(CLIENTS as u64).await;
    }

    stop_tx.send(true).unwrap();
    for _ in 0..CLIENTS {
        tokio::time::timeout(Duration::from_secs(60), stopped_rx.recv())
            .await
            .expect("every client stopped publishing")
            .unwrap();
    }
    // Nothing is in flight any more: each team's last offset is final.
    let names: Vec<String> = (0..TEAMS).map(|t| format!("t{t}")).collect();
    let grants: Vec<(&str, &str)> = names.iter().map(|t| (t.as_str(), "viewer")).collect();
    let probe = Client::connect(ConnectOptions::new(&shared.urls[0]).token(token_with(
        "probe",
        &grants,
        |_| {},
    )))
    .await
    .unwrap();
    let mut finals = HashMap::new();
    for (t, team) in names.into_iter().enumerate() {
        let reply = probe.join(&team, JoinOptions::default()).await.unwrap();
        assert!(reply.offset > 0, "team {team} has messages");
        // Every client is connected again (it reported only after reconnecting), and
        // presence shows each once: no entry left behind by a drained node.
        let mut present: Vec<(String, u32)> = reply
            .presence
            .iter()
            .filter(|e| e.user.as_str() != "probe")
            .map(|e| (e.user.as_str().to_owned(), e.conns))
            .collect();
        present.sort();
        let mut expected: Vec<(String, u32)> = (t..CLIENTS)
            .step_by(TEAMS)
            .map(|i| (format!("u{i}"), 1))
            .collect();
        expected.sort();
        assert_eq!(
            present, expected,
            "{team}: presence after the rolling restart"
        );
        finals.insert(team, reply.offset);
    }
    let _ = probe.close().await;
    targets_tx.send(Some(finals.clone())).unwrap();
    let mut reports = Vec::new();
    for task in tasks {
        reports.push(
            tokio::time::timeout(Duration::from_secs(60), task)
                .await
                .expect("every client caught up with its team")
                .unwrap(),
        );
    }

    // Per client: offsets 1..=final exactly once, in order; reconnected at least once
    // (every node restarted, so every client lost its node at least once).
    let mut by_team: HashMap<String, HashMap<u64, Value>> = HashMap::new();
    for r in &reports {
        let offsets: Vec<u64> = r.seen.iter().map(|(o, _)| *o).collect();
        let expected: Vec<u64> = (1..=finals[&r.team]).collect();
        assert!(
            offsets == expected,
            "client {} in {}: offsets not 1..={} exactly once in order (first differences: {:?})",
            r.client,
            r.team,
            finals[&r.team],
            offsets
                .iter()
                .zip(&expected)
                .filter(|(a, b)| a != b)
                .take(5)
                .collect::<Vec<_>>()
        );
        assert!(r.reconnects >= 1, "client {} never reconnected", r.client);
        let team = by_team.entry(r.team.clone()).or_default();
        for (offset, data) in &r.seen {
            let first = team.entry(*offset).or_insert_with(|| data.clone());
            assert_eq!(
                first, data,
                "{} offset {offset}: one message per offset",
                r.team
            );
        }
    }
    for r in &reports {
        let team = &by_team[&r.team];
        for (offset, seq) in &r.acked {
            assert_eq!(
                team[offset],
                json!({"c": r.client, "s": seq}),
                "an acknowledged publish is at its offset"
            );
        }
    }
    for (name, team) in &by_team {
        let distinct: HashSet<String> = team.values().map(Value::to_string).collect();
        assert_eq!(
            distinct.len(),
            team.len(),
            "{name}: no message published twice"
        );
    }

    eprintln!(
        "rolling restart: {} clients, {} messages in {} teams, {} reconnects",
        reports.len(),
        finals.values().sum::<u64>(),
        finals.len(),
        reports.iter().map(|r| r.reconnects).sum::<u32>()
    );

    // Drain every node: the activity log is flushed, then it holds each message once.
    for node in &mut nodes {
        node.stop().await;
    }
    let db = teamhub_persistence::connect(schema.url()).await.unwrap();
    let reader = db.activity_reader();
    for (name, messages) in &by_team {
        let rows = reader
            .recent(&name.as_str().try_into().unwrap(), 100_000)
            .await
            .unwrap();
        let mut logged: Vec<u64> = rows
            .iter()
            .filter(|r| r.action == "n")
            .map(|r| {
                let offset: u64 = r.resource_id.as_deref().unwrap().parse().unwrap();
                assert_eq!(r.metadata, messages[&offset], "{name} offset {offset}");
                offset
            })
            .collect();
        logged.sort_unstable();
        assert_eq!(
            logged,
            (1..=finals[name]).collect::<Vec<_>>(),
            "{name}: every message logged exactly once"
        );
    }
    db.close().await;
}
