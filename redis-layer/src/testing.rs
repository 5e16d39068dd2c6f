//! Real Redis servers for tests, started by the tests themselves: a Redis Cluster of
//! three primaries and three replicas ([`LocalCluster`]), a TLS server with a private CA
//! ([`LocalTlsRedis`]) and a lone server ([`LocalRedis`]).
//!
//! Enabled by the `testing` feature; other crates use it from their tests with
//! `teamhub-redis = { workspace = true, features = ["testing"] }` in `[dev-dependencies]`.
//!
//! Everything here is blocking (`std::process`, the synchronous Redis client), so it works
//! from plain tests and from inside a Tokio runtime alike; from an async test that must
//! not stall its runtime, call it through `tokio::task::spawn_blocking`.
//!
//! Every server listens on 127.0.0.1 on ports the OS reported free, and a server that
//! cannot bind its port (another test binary took it meanwhile) is started again on
//! others; a server counts as started only once the process answering on the port is the
//! one this code spawned (`INFO server` → `process_id`). Each server runs beside a tiny
//! watchdog shell that kills it once the test process is gone, so no server outlives its
//! tests even when they hold it in a `static` (which never drops); owned values kill
//! their servers on drop as well.
//!
//! Every wait is a poll against a deadline; a deadline that passes panics with what was
//! last seen (and the server's log), never hangs.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::fs::{self, File};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use redis::FromRedisValue;

/// How long one server may take to answer after it was spawned.
const SERVER_START: Duration = Duration::from_secs(15);
/// How long `redis-cli --cluster create` may take.
const CLUSTER_CREATE: Duration = Duration::from_secs(60);
/// How long a cluster may take to be healthy again (after creation, a failover, a move).
const SETTLE: Duration = Duration::from_secs(60);
/// One admin connection attempt or answer.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(2);
/// Between two looks at a condition that is being waited for.
const POLL: Duration = Duration::from_millis(50);
/// Servers whose port was taken meanwhile are started again this many times.
const START_ATTEMPTS: usize = 10;
/// Keys moved by one `MIGRATE` of [`LocalCluster::move_slot`].
const MIGRATE_BATCH: usize = 100;

const PRIMARIES: usize = 3;
const NODES: usize = 6;
const SLOTS: u32 = 16384;

/// One spawned `redis-server` and its watchdog; both are killed on drop.
struct Process {
    child: Child,
    watchdog: Child,
    log: PathBuf,
}

impl Process {
    fn spawn(dir: &Path, name: &str, args: &[String]) -> Process {
        let log = dir.join(format!("{name}.log"));
        let out = File::create(&log)
            .unwrap_or_else(|e| panic!("creating the log {}: {e}", log.display()));
        let err = out.try_clone().expect("cloning a log file handle");
        let child = Command::new("redis-server")
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("starting redis-server (is it installed?): {e}"));
        let watchdog = watchdog(child.id());
        Process {
            child,
            watchdog,
            log,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// The last lines of the server's log, for a panic message.
    fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(15)..].join("\n");
        format!("{} (last lines):\n{tail}", self.log.display())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = self.watchdog.kill();
        let _ = self.watchdog.wait();
    }
}

/// A shell that kills `pid` as soon as this test process is gone (it also ends by itself
/// when `pid` is gone): a server in a `static` is never dropped.
fn watchdog(pid: u32) -> Child {
    let me = std::process::id();
    let script = format!(
        "while kill -0 {me} 2>/dev/null && kill -0 {pid} 2>/dev/null; do sleep 1; done; \
         kill {pid} 2>/dev/null"
    );
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("starting the watchdog of redis-server {pid}: {e}"))
}

/// A shell that removes a temporary directory once this test process (and so, a
/// moment later, the servers its watchdogs kill) is gone: a `static` never drops its
/// `TempDir`. Killed on drop, when the `TempDir` beside it removes the directory itself.
struct Cleaner(Child);

impl Cleaner {
    fn of(dir: &Path) -> Cleaner {
        let me = std::process::id();
        let script = format!(
            "while kill -0 {me} 2>/dev/null; do sleep 1; done; sleep 2; rm -rf '{}'",
            dir.display()
        );
        Cleaner(
            Command::new("sh")
                .arg("-c")
                .arg(script)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("starting the cleaner of {}: {e}", dir.display())),
        )
    }
}

impl Drop for Cleaner {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `n` distinct loopback ports the OS reports free right now. A server may still lose
/// one to another process before it binds: [`start_server`] then tries others.
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind(("127.0.0.1", 0)).expect("binding a free loopback port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("a bound port").port())
        .collect()
}

/// Spawns a server with `args(ports)` on fresh ports until `answers(port, pid)` says the
/// process on the first port is this one: a server that exits at once (its port was
/// taken meanwhile) is retried on other ports.
fn start_server(
    dir: &Path,
    name: &str,
    ports: usize,
    args: impl Fn(&[u16]) -> Vec<String>,
    answers: impl Fn(u16, u32) -> Result<(), String>,
) -> (Process, Vec<u16>) {
    let mut last = String::new();
    for _ in 0..START_ATTEMPTS {
        let chosen = free_ports(ports);
        let mut process = Process::spawn(dir, name, &args(&chosen));
        let deadline = Instant::now() + SERVER_START;
        loop {
            match answers(chosen[0], process.pid()) {
                Ok(()) => return (process, chosen),
                Err(e) => last = e,
            }
            if process.exited() {
                // Most likely a port was taken between choosing and binding it.
                last = format!("{last}; it exited: {}", process.log_tail());
                break;
            }
            if Instant::now() > deadline {
                panic!(
                    "redis-server {name} on port {} did not answer within {SERVER_START:?}: \
                     {last}\n{}",
                    chosen[0],
                    process.log_tail()
                );
            }
            thread::sleep(POLL);
        }
    }
    panic!("redis-server {name} could not be started in {START_ATTEMPTS} attempts: {last}");
}

/// A plain connection to a local server for administration.
fn admin(port: u16) -> Result<redis::Connection, String> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .map_err(|e| format!("port {port}: {e}"))?;
    let conn = client
        .get_connection_with_timeout(ADMIN_TIMEOUT)
        .map_err(|e| format!("connecting to port {port}: {e}"))?;
    conn.set_read_timeout(Some(ADMIN_TIMEOUT))
        .and_then(|()| conn.set_write_timeout(Some(ADMIN_TIMEOUT)))
        .map_err(|e| format!("port {port}: {e}"))?;
    Ok(conn)
}

/// One command on a fresh admin connection to `port`.
fn query<T: FromRedisValue>(port: u16, cmd: &redis::Cmd) -> Result<T, String> {
    let mut conn = admin(port)?;
    cmd.query(&mut conn)
        .map_err(|e| format!("port {port}: {e}"))
}

/// `name:value` of an `INFO` or `CLUSTER INFO` answer.
fn field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|l| l.trim().strip_prefix(name)?.strip_prefix(':'))
}

/// Whether the server on `port` is the process `pid` (and answers at all).
fn plain_answers(port: u16, pid: u32) -> Result<(), String> {
    let info: String = query(port, redis::cmd("INFO").arg("server"))?;
    match field(&info, "process_id") {
        Some(p) if p == pid.to_string() => Ok(()),
        other => Err(format!(
            "port {port} is answered by process {other:?}, not by {pid}"
        )),
    }
}

/// Runs `cmd` to its end within `limit`, its output in `log`; its output on success.
fn run_bounded(cmd: &mut Command, limit: Duration, log: &Path) -> Result<String, String> {
    let out = File::create(log).map_err(|e| format!("creating {}: {e}", log.display()))?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("starting {cmd:?}: {e}"))?;
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{cmd:?} did not finish within {limit:?}: {}",
                    fs::read_to_string(log).unwrap_or_default()
                ));
            }
            Ok(None) => thread::sleep(POLL),
            Err(e) => return Err(format!("waiting for {cmd:?}: {e}")),
        }
    };
    let output = fs::read_to_string(log).unwrap_or_default();
    if status.success() {
        Ok(output)
    } else {
        Err(format!("{cmd:?} failed ({status}): {output}"))
    }
}

/// A temporary directory, and its cleaner for when this process dies without dropping it.
fn temp_dir(what: &str) -> (tempfile::TempDir, Cleaner) {
    let dir = tempfile::Builder::new()
        .prefix(&format!("teamhub-{what}-"))
        .tempdir()
        .unwrap_or_else(|e| panic!("creating a temporary directory: {e}"));
    let cleaner = Cleaner::of(dir.path());
    (dir, cleaner)
}

fn url(port: u16) -> String {
    format!("redis://127.0.0.1:{port}")
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| (*s).to_owned()).collect()
}

/// One node of a cluster-enabled server: its ports and a directory of its own (a
/// replica's full sync writes an RDB file there).
fn cluster_node_args(dir: &Path, ports: &[u16]) -> Vec<String> {
    let (port, bus) = (ports[0], ports[1]);
    let node_dir = dir.join(format!("node-{port}"));
    fs::create_dir_all(&node_dir).expect("creating a node directory");
    let mut args = strings(&["--cluster-enabled", "yes", "--port"]);
    args.push(port.to_string());
    // The bus port is chosen free like the client port: the default (port + 10000) may
    // be taken, or beyond 65535.
    args.push("--cluster-port".into());
    args.push(bus.to_string());
    args.push("--cluster-config-file".into());
    args.push(dir.join(format!("nodes-{port}.conf")).display().to_string());
    args.push("--dir".into());
    args.push(node_dir.display().to_string());
    args.extend(strings(&[
        "--save",
        "",
        "--appendonly",
        "no",
        "--bind",
        "127.0.0.1",
        "--daemonize",
        "no",
        "--cluster-node-timeout",
        "2000",
        // A replica's first sync starts at once instead of waiting for more replicas.
        "--repl-diskless-sync-delay",
        "0",
    ]));
    args
}

/// A local Redis Cluster of three primaries with one replica each, on 127.0.0.1.
///
/// [`LocalCluster::shared`] is one cluster for the whole test process, started at first
/// use; [`LocalCluster::start`] is a cluster of the caller's own, killed on drop, for a
/// test that changes the topology ([`LocalCluster::failover`], [`LocalCluster::move_slot`])
/// and must not surprise others. A test on the shared cluster should connect through
/// [`LocalCluster::seeds`] only, as a hub does, so a topology change stays harmless.
pub struct LocalCluster {
    nodes: Vec<Process>,
    ports: Vec<u16>,
    /// Topology changes run one at a time.
    admin: Mutex<()>,
    _cleaner: Cleaner,
    /// Removed after the servers are killed (fields drop in order).
    _dir: tempfile::TempDir,
}

impl std::fmt::Debug for LocalCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCluster")
            .field("ports", &self.ports)
            .finish_non_exhaustive()
    }
}

/// One node as `CLUSTER NODES` shows it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct NodeView {
    id: String,
    port: u16,
    primary: bool,
    primary_id: Option<String>,
    slots: Vec<(u16, u16)>,
}

/// The topology every node agrees on.
#[derive(Debug, Clone)]
struct Topology {
    nodes: Vec<NodeView>,
}

impl Topology {
    fn owner(&self, slot: u16) -> Option<&NodeView> {
        self.nodes.iter().find(|n| {
            n.primary
                && n.slots
                    .iter()
                    .any(|&(from, to)| (from..=to).contains(&slot))
        })
    }

    fn primaries(&self) -> impl Iterator<Item = &NodeView> {
        self.nodes.iter().filter(|n| n.primary)
    }

    fn replicas(&self) -> impl Iterator<Item = &NodeView> {
        self.nodes.iter().filter(|n| !n.primary)
    }
}

/// A `CLUSTER NODES` answer, and the flags of its `myself` line.
fn parse_nodes(text: &str) -> Result<(Vec<NodeView>, String), String> {
    let mut nodes = Vec::new();
    let mut mine = String::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 8 {
            return Err(format!("unreadable CLUSTER NODES line {line:?}"));
        }
        let flags = f[2];
        for bad in ["fail", "fail?", "handshake", "noaddr"] {
            if flags.split(',').any(|x| x == bad) {
                return Err(format!("node {} is {bad}: {line}", f[1]));
            }
        }
        if f[7] != "connected" {
            return Err(format!("node {} is {}: {line}", f[1], f[7]));
        }
        let port = f[1]
            .split(['@', ','])
            .next()
            .and_then(|a| a.rsplit(':').next())
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| format!("unreadable address in {line:?}"))?;
        let mut slots = Vec::new();
        // Migrating and importing slots (`[slot->-id]`) are shown by their own node only.
        for s in f[8..].iter().filter(|s| !s.starts_with('[')) {
            let (from, to) = s.split_once('-').unwrap_or((s, s));
            let parse = |x: &str| {
                x.parse::<u16>()
                    .map_err(|_| format!("unreadable slot {s:?} in {line:?}"))
            };
            slots.push((parse(from)?, parse(to)?));
        }
        let primary = flags.split(',').any(|x| x == "master");
        if flags.split(',').any(|x| x == "myself") {
            mine = flags.to_owned();
        }
        nodes.push(NodeView {
            id: f[0].to_owned(),
            port,
            primary,
            primary_id: (f[3] != "-").then(|| f[3].to_owned()),
            slots,
        });
    }
    nodes.sort();
    Ok((nodes, mine))
}

impl LocalCluster {
    /// The test process's one shared cluster, started at the first call (any thread,
    /// inside or outside a runtime; concurrent first calls wait for the same start).
    pub fn shared() -> &'static LocalCluster {
        static SHARED: OnceLock<LocalCluster> = OnceLock::new();
        SHARED.get_or_init(LocalCluster::start)
    }

    /// A cluster of the caller's own: six servers on free ports, joined by
    /// `redis-cli --cluster create`, returned once every node reports `cluster_state:ok`,
    /// agrees on the topology and every replica is in sync. Killed on drop.
    pub fn start() -> LocalCluster {
        let (dir, cleaner) = temp_dir("cluster");
        let mut nodes = Vec::with_capacity(NODES);
        let mut ports = Vec::with_capacity(NODES);
        for i in 0..NODES {
            let (process, chosen) = start_server(
                dir.path(),
                &format!("node-{i}"),
                2,
                |p| cluster_node_args(dir.path(), p),
                plain_answers,
            );
            nodes.push(process);
            ports.push(chosen[0]);
        }
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for port in &ports {
            create.arg(format!("127.0.0.1:{port}"));
        }
        create.args(["--cluster-replicas", "1", "--cluster-yes"]);
        if let Err(e) = run_bounded(
            &mut create,
            CLUSTER_CREATE,
            &dir.path().join("cluster-create.log"),
        ) {
            panic!("creating the cluster on ports {ports:?}: {e}");
        }
        let cluster = LocalCluster {
            nodes,
            ports,
            admin: Mutex::new(()),
            _cleaner: cleaner,
            _dir: dir,
        };
        cluster.wait_healthy();
        cluster
    }

    /// Every node's URL (`redis://127.0.0.1:P`), comma-separated: the seed list of
    /// `RedisConfig::new(Mode::Cluster, ..)`.
    pub fn seeds(&self) -> String {
        self.urls().join(",")
    }

    /// Every node's URL, primaries and replicas.
    pub fn urls(&self) -> Vec<String> {
        self.ports.iter().map(|&p| url(p)).collect()
    }

    /// The URLs of the current primaries.
    pub fn primaries(&self) -> Vec<String> {
        self.settled().primaries().map(|n| url(n.port)).collect()
    }

    /// The URLs of the current replicas.
    pub fn replicas(&self) -> Vec<String> {
        self.settled().replicas().map(|n| url(n.port)).collect()
    }

    /// The hash slot of `key` (`CLUSTER KEYSLOT`; hash tags count).
    pub fn slot_of(&self, key: &str) -> u16 {
        let mut last = String::new();
        for &port in &self.ports {
            match query::<u16>(port, redis::cmd("CLUSTER").arg("KEYSLOT").arg(key)) {
                Ok(slot) => return slot,
                Err(e) => last = e,
            }
        }
        panic!("CLUSTER KEYSLOT {key:?}: no node answered: {last}");
    }

    /// The URL of the primary that serves `key`'s slot now.
    pub fn owner_of(&self, key: &str) -> String {
        let slot = self.slot_of(key);
        let topology = self.settled();
        let owner = topology
            .owner(slot)
            .unwrap_or_else(|| panic!("no primary serves slot {slot}: {topology:?}"));
        url(owner.port)
    }

    /// Fails over the shard that serves `key`: `CLUSTER FAILOVER` on a replica of the
    /// slot's primary, then waits until that replica is the slot's primary and the
    /// cluster is healthy again. Returns the new primary's URL.
    pub fn failover(&self, key: &str) -> String {
        let _one_at_a_time = self.lock();
        let slot = self.slot_of(key);
        let before = self.settled();
        let primary = before
            .owner(slot)
            .unwrap_or_else(|| panic!("no primary serves slot {slot}: {before:?}"));
        let replica = before
            .replicas()
            .find(|r| r.primary_id.as_deref() == Some(primary.id.as_str()))
            .unwrap_or_else(|| panic!("primary {} has no replica: {before:?}", primary.port))
            .clone();
        let answer: String = query(replica.port, redis::cmd("CLUSTER").arg("FAILOVER"))
            .unwrap_or_else(|e| panic!("CLUSTER FAILOVER: {e}"));
        assert_eq!(answer, "OK", "CLUSTER FAILOVER on port {}", replica.port);
        self.wait_until(
            &format!("port {} to serve slot {slot}", replica.port),
            |t| t.owner(slot).is_some_and(|o| o.id == replica.id),
        );
        url(replica.port)
    }

    /// Moves `key`'s slot, with its keys, to another primary the way `redis-cli
    /// --cluster reshard` does: `CLUSTER SETSLOT .. IMPORTING` on the target, `MIGRATING`
    /// on the source, `MIGRATE` of the slot's keys in batches, then `CLUSTER SETSLOT ..
    /// NODE` on every primary. Waits until every node agrees on the new owner and the
    /// cluster is healthy. Returns the new owner's URL.
    pub fn move_slot(&self, key: &str) -> String {
        let _one_at_a_time = self.lock();
        let slot = self.slot_of(key);
        let before = self.settled();
        let source = before
            .owner(slot)
            .unwrap_or_else(|| panic!("no primary serves slot {slot}: {before:?}"))
            .clone();
        let target = before
            .primaries()
            .find(|p| p.id != source.id)
            .unwrap_or_else(|| panic!("no other primary: {before:?}"))
            .clone();
        let setslot = |port: u16, how: &str, id: &str| {
            let answer: String = query(
                port,
                redis::cmd("CLUSTER")
                    .arg("SETSLOT")
                    .arg(slot)
                    .arg(how)
                    .arg(id),
            )
            .unwrap_or_else(|e| panic!("CLUSTER SETSLOT {slot} {how} {id}: {e}"));
            assert_eq!(answer, "OK", "CLUSTER SETSLOT {slot} {how} on port {port}");
        };
        setslot(target.port, "IMPORTING", &source.id);
        setslot(source.port, "MIGRATING", &target.id);
        let deadline = Instant::now() + SETTLE;
        loop {
            let keys: Vec<Vec<u8>> = query(
                source.port,
                redis::cmd("CLUSTER")
                    .arg("GETKEYSINSLOT")
                    .arg(slot)
                    .arg(MIGRATE_BATCH),
            )
            .unwrap_or_else(|e| panic!("CLUSTER GETKEYSINSLOT {slot}: {e}"));
            if keys.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "slot {slot}'s keys were not migrated within {SETTLE:?}"
            );
            let _: redis::Value = query(
                source.port,
                redis::cmd("MIGRATE")
                    .arg("127.0.0.1")
                    .arg(target.port)
                    .arg("")
                    .arg(0)
                    .arg(ADMIN_TIMEOUT.as_millis() as u64)
                    .arg("KEYS")
                    .arg(&keys),
            )
            .unwrap_or_else(|e| panic!("MIGRATE of slot {slot}'s keys: {e}"));
        }
        // The target first, so it serves the slot before the source lets go of it.
        setslot(target.port, "NODE", &target.id);
        setslot(source.port, "NODE", &target.id);
        for other in before
            .primaries()
            .filter(|p| p.id != source.id && p.id != target.id)
        {
            setslot(other.port, "NODE", &target.id);
        }
        self.wait_until(&format!("port {} to serve slot {slot}", target.port), |t| {
            t.owner(slot).is_some_and(|o| o.id == target.id)
        });
        url(target.port)
    }

    /// Waits until the cluster is healthy: every node says `cluster_state:ok` with every
    /// slot served, knows all six nodes and none failing, all agree on the topology (three
    /// primaries, three replicas), and every replica's link to its primary is up and
    /// synced.
    pub fn wait_healthy(&self) {
        self.settled();
    }

    fn settled(&self) -> Topology {
        self.wait_until("the cluster to be healthy", |_| true)
    }

    fn lock(&self) -> MutexGuard<'_, ()> {
        self.admin.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Polls until the cluster is healthy and `done` holds of its topology.
    fn wait_until(&self, what: &str, done: impl Fn(&Topology) -> bool) -> Topology {
        let deadline = Instant::now() + SETTLE;
        loop {
            let last = match self.healthy() {
                Ok(t) if done(&t) => return t,
                Ok(t) => format!("healthy but not yet: {t:?}"),
                Err(e) => e,
            };
            if Instant::now() > deadline {
                let mut logs = String::new();
                for node in &self.nodes {
                    let _ = writeln!(logs, "{}", node.log_tail());
                }
                panic!("waited {SETTLE:?} for {what}; last seen: {last}\n{logs}");
            }
            thread::sleep(POLL);
        }
    }

    /// The topology if the cluster is healthy, else what is not.
    fn healthy(&self) -> Result<Topology, String> {
        let mut agreed: Option<Vec<NodeView>> = None;
        for &port in &self.ports {
            let mut conn = admin(port)?;
            let info: String = redis::cmd("CLUSTER")
                .arg("INFO")
                .query(&mut conn)
                .map_err(|e| format!("CLUSTER INFO on port {port}: {e}"))?;
            for (name, want) in [
                ("cluster_state", "ok".to_owned()),
                ("cluster_slots_assigned", SLOTS.to_string()),
                ("cluster_slots_ok", SLOTS.to_string()),
                ("cluster_known_nodes", NODES.to_string()),
            ] {
                let got = field(&info, name);
                if got != Some(want.as_str()) {
                    return Err(format!("port {port}: {name}:{got:?}, want {want}"));
                }
            }
            let text: String = redis::cmd("CLUSTER")
                .arg("NODES")
                .query(&mut conn)
                .map_err(|e| format!("CLUSTER NODES on port {port}: {e}"))?;
            let (nodes, mine) = parse_nodes(&text).map_err(|e| format!("port {port}: {e}"))?;
            if mine.split(',').any(|f| f == "slave") {
                let replication: String = redis::cmd("INFO")
                    .arg("replication")
                    .query(&mut conn)
                    .map_err(|e| format!("INFO replication on port {port}: {e}"))?;
                let link = field(&replication, "master_link_status");
                let syncing = field(&replication, "master_sync_in_progress");
                if link != Some("up") || syncing != Some("0") {
                    return Err(format!(
                        "replica on port {port}: master_link_status:{link:?}, \
                         master_sync_in_progress:{syncing:?}"
                    ));
                }
            }
            match &agreed {
                None => agreed = Some(nodes),
                Some(a) if *a == nodes => {}
                Some(a) => {
                    return Err(format!(
                        "nodes disagree on the topology: {a:?} vs port {port}: {nodes:?}"
                    ));
                }
            }
        }
        let topology = Topology {
            nodes: agreed.unwrap_or_default(),
        };
        let primaries: BTreeSet<&str> = topology.primaries().map(|p| p.id.as_str()).collect();
        let served: BTreeSet<&str> = topology
            .replicas()
            .filter_map(|r| r.primary_id.as_deref())
            .collect();
        if primaries.len() != PRIMARIES
            || topology.replicas().count() != NODES - PRIMARIES
            || served != primaries
            || topology.primaries().any(|p| p.slots.is_empty())
        {
            return Err(format!(
                "want {PRIMARIES} primaries with slots, each with a replica: {topology:?}"
            ));
        }
        Ok(topology)
    }
}

/// A lone local `redis-server` on 127.0.0.1, killed on drop.
pub struct LocalRedis {
    process: Process,
    port: u16,
    _cleaner: Cleaner,
    _dir: tempfile::TempDir,
}

impl std::fmt::Debug for LocalRedis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalRedis")
            .field("port", &self.port)
            .field("pid", &self.process.pid())
            .finish_non_exhaustive()
    }
}

impl LocalRedis {
    /// A plain server of the caller's own.
    pub fn start() -> LocalRedis {
        let (dir, cleaner) = temp_dir("redis");
        let (process, ports) = start_server(
            dir.path(),
            "redis",
            1,
            |p| {
                let mut args = strings(&["--port"]);
                args.push(p[0].to_string());
                args.push("--dir".into());
                args.push(dir.path().display().to_string());
                args.extend(strings(&[
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--bind",
                    "127.0.0.1",
                ]));
                args
            },
            plain_answers,
        );
        LocalRedis {
            process,
            port: ports[0],
            _cleaner: cleaner,
            _dir: dir,
        }
    }

    /// A cluster-enabled server that belongs to no cluster and serves no slot, so it
    /// reports `cluster_state:fail`: what a seed of a broken cluster looks like.
    pub fn cluster_node_without_slots() -> LocalRedis {
        let (dir, cleaner) = temp_dir("lone-node");
        let (process, ports) = start_server(
            dir.path(),
            "node",
            2,
            |p| cluster_node_args(dir.path(), p),
            plain_answers,
        );
        LocalRedis {
            process,
            port: ports[0],
            _cleaner: cleaner,
            _dir: dir,
        }
    }

    /// `redis://127.0.0.1:P`.
    pub fn url(&self) -> String {
        url(self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

/// A local `redis-server` that speaks only TLS, with a certificate for 127.0.0.1 and
/// localhost signed by a private CA made for it; killed on drop.
pub struct LocalTlsRedis {
    process: Process,
    port: u16,
    ca: PathBuf,
    wrong_ca: PathBuf,
    _cleaner: Cleaner,
    _dir: tempfile::TempDir,
}

impl std::fmt::Debug for LocalTlsRedis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalTlsRedis")
            .field("port", &self.port)
            .field("pid", &self.process.pid())
            .field("ca", &self.ca)
            .finish_non_exhaustive()
    }
}

impl LocalTlsRedis {
    /// Makes a CA, a server certificate signed by it and a second, unrelated CA (with
    /// rcgen), starts `redis-server --port 0 --tls-port P ..` and returns once it
    /// answers over TLS.
    pub fn start() -> LocalTlsRedis {
        let (dir, cleaner) = temp_dir("tls-redis");
        let pki = Pki::write(dir.path()).unwrap_or_else(|e| panic!("making certificates: {e}"));
        let (process, ports) = start_server(
            dir.path(),
            "redis-tls",
            1,
            |p| {
                let path = |p: &Path| p.display().to_string();
                let mut args = strings(&["--port", "0", "--tls-port"]);
                args.push(p[0].to_string());
                for (flag, file) in [
                    ("--tls-cert-file", &pki.cert),
                    ("--tls-key-file", &pki.key),
                    ("--tls-ca-cert-file", &pki.ca),
                    ("--dir", &dir.path().to_path_buf()),
                ] {
                    args.push(flag.into());
                    args.push(path(file));
                }
                args.extend(strings(&[
                    "--tls-auth-clients",
                    "no",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--bind",
                    "127.0.0.1",
                ]));
                args
            },
            |port, pid| tls_answers(dir.path(), &pki.ca, port, pid),
        );
        LocalTlsRedis {
            process,
            port: ports[0],
            ca: pki.ca,
            wrong_ca: pki.wrong_ca,
            _cleaner: cleaner,
            _dir: dir,
        }
    }

    /// `rediss://127.0.0.1:P`.
    pub fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The PEM of the CA that signed the server's certificate.
    pub fn ca_path(&self) -> &Path {
        &self.ca
    }

    /// The PEM of another CA, which did not sign the server's certificate.
    pub fn wrong_ca_path(&self) -> &Path {
        &self.wrong_ca
    }
}

/// Whether the TLS server on `port` is the process `pid`, asked with `redis-cli --tls`
/// (independent of the client library under test).
fn tls_answers(dir: &Path, ca: &Path, port: u16, pid: u32) -> Result<(), String> {
    let mut cli = Command::new("redis-cli");
    cli.arg("--tls")
        .arg("--cacert")
        .arg(ca)
        .args(["-h", "127.0.0.1", "-p"])
        .arg(port.to_string())
        .args(["INFO", "server"]);
    let info = run_bounded(&mut cli, ADMIN_TIMEOUT, &dir.join("redis-cli-tls.log"))?;
    match field(&info, "process_id") {
        Some(p) if p == pid.to_string() => Ok(()),
        other => Err(format!(
            "TLS port {port} is answered by process {other:?}, not by {pid}: {info}"
        )),
    }
}

/// The certificates of a [`LocalTlsRedis`], as files.
struct Pki {
    ca: PathBuf,
    wrong_ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl Pki {
    fn write(dir: &Path) -> Result<Pki, Box<dyn std::error::Error>> {
        let ca = TestCa::new("teamhub test CA")?;
        let wrong = TestCa::new("teamhub unrelated CA")?;
        let server = ca.issue(&["127.0.0.1", "localhost"])?;
        let pki = Pki {
            ca: dir.join("ca.pem"),
            wrong_ca: dir.join("wrong-ca.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server-key.pem"),
        };
        fs::write(&pki.ca, ca.pem())?;
        fs::write(&pki.wrong_ca, wrong.pem())?;
        fs::write(&pki.cert, &server.cert)?;
        fs::write(&pki.key, &server.key)?;
        Ok(pki)
    }
}

/// A private certificate authority made for a test (rcgen), issuing server
/// certificates: for TLS to Redis, to Postgres and to the node itself.
pub struct TestCa {
    cert: rcgen::Certificate,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TestCa")
    }
}

/// A server certificate and its key, PEM-encoded.
#[derive(Debug, Clone)]
pub struct IssuedPair {
    pub cert: String,
    pub key: String,
}

impl TestCa {
    pub fn new(name: &str) -> Result<TestCa, rcgen::Error> {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
        };

        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(TestCa {
            cert,
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA's certificate, what clients are told to trust.
    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A server certificate for `names` (DNS names or IP addresses; the first is also
    /// the common name), signed by this CA.
    pub fn issue(&self, names: &[&str]) -> Result<IssuedPair, rcgen::Error> {
        use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair};

        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())?;
        if let Some(first) = names.first() {
            params.distinguished_name.push(DnType::CommonName, *first);
        }
        params
            .extended_key_usages
            .push(ExtendedKeyUsagePurpose::ServerAuth);
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(IssuedPair {
            cert: cert.pem(),
            key: key.serialize_pem(),
        })
    }
}

/// A TCP proxy in front of a Redis whose connections a test can cut and refuse, as a
/// network failure would (the Redis behind it keeps its data and other clients).
/// Needs a Tokio runtime; stops on drop.
pub struct CutProxy {
    url: String,
    conns: std::sync::Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    /// While set, new connections are accepted and closed at once.
    down: std::sync::Arc<std::sync::atomic::AtomicBool>,
    accept: tokio::task::JoinHandle<()>,
}

impl CutProxy {
    /// A proxy to `upstream` (`redis://host:port`) on a free loopback port.
    pub async fn start(upstream: &str) -> CutProxy {
        let target = upstream
            .trim_start_matches("redis://")
            .trim_end_matches('/')
            .to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("redis://{}", listener.local_addr().unwrap());
        let conns = std::sync::Arc::new(Mutex::new(Vec::new()));
        let down = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let accept = tokio::spawn({
            let (conns, down) = (conns.clone(), down.clone());
            async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    if down.load(std::sync::atomic::Ordering::SeqCst) {
                        continue; // dropping `inbound` closes it
                    }
                    let target = target.clone();
                    let task = tokio::spawn(async move {
                        if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                    conns.lock().unwrap().push(task);
                }
            }
        });
        CutProxy {
            url,
            conns,
            down,
            accept,
        }
    }

    /// The URL clients connect to.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Refuses new connections (`true`) or lets them in again; open ones stay.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, std::sync::atomic::Ordering::SeqCst);
    }

    /// Drops every proxied connection; new ones are still accepted unless down.
    pub fn cut(&self) {
        for task in self.conns.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_nodes_are_read() {
        let text = "\
a1 127.0.0.1:30001@40001 myself,master - 0 0 1 connected 0-5460 [5461->-b2]
b2 127.0.0.1:30002@40002,host master - 0 1 2 connected 5461-10922 16000
c3 127.0.0.1:30003@40003 slave a1 0 1 1 connected
";
        let (nodes, mine) = parse_nodes(text).unwrap();
        assert_eq!(mine, "myself,master");
        assert_eq!(nodes.len(), 3);
        assert_eq!(nodes[0].slots, [(0, 5460)]);
        assert_eq!(nodes[1].port, 30002);
        assert_eq!(nodes[1].slots, [(5461, 10922), (16000, 16000)]);
        assert_eq!(nodes[2].primary_id.as_deref(), Some("a1"));
        let t = Topology { nodes };
        assert_eq!(t.owner(16000).unwrap().id, "b2");
        assert!(t.owner(12000).is_none());
        let err = parse_nodes("d4 127.0.0.1:1@2 master,fail - 0 0 1 connected").unwrap_err();
        assert!(err.contains("fail"), "{err}");
    }

    #[test]
    fn info_fields_are_read() {
        let info = "# Cluster\r\ncluster_state:ok\r\ncluster_slots_ok:16384\r\n";
        assert_eq!(field(info, "cluster_state"), Some("ok"));
        assert_eq!(field(info, "cluster_slots_ok"), Some("16384"));
        assert_eq!(field(info, "cluster_slots"), None);
    }
}
