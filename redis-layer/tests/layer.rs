//! The Redis layer against real servers: the single server every test machine runs
//! (`TEAMHUB_TEST_REDIS_URL`, by default `redis://127.0.0.1:6379`), Redis
//! Clusters and a TLS server started by the tests themselves (`teamhub_redis::testing`).
//!
//! Every wait is bounded; channel names are unique per test run, so tests share the
//! single server and the shared cluster with each other and with other test binaries.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use teamhub_redis::testing::{LocalCluster, LocalRedis, LocalTlsRedis};
use teamhub_redis::{ChannelKind, Delivery, Inbox, Mode, Redis, RedisConfig, RedisError};

/// The single Redis every test machine runs, as `redis://host:port`.
fn single() -> String {
    std::env::var("TEAMHUB_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// `host:port` of [`single`].
fn single_addr() -> String {
    let url = single();
    let rest = url.split_once("://").map_or(url.as_str(), |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    rest.split('/').next().unwrap().to_owned()
}
/// Longest wait for one delivery that should come.
const DELIVERY: Duration = Duration::from_secs(5);
/// Longest wait for the layer to recover after a connection kill, a failover, a move.
const RECOVERY: Duration = Duration::from_secs(20);

/// A name no other test (or test run) uses.
fn unique(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{prefix}-{}-{nanos}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A team channel as the hub names them: the team is the hash tag.
fn team_channel(team: &str) -> String {
    format!("teamhub:{{{team}}}:msg")
}

async fn within<T>(limit: Duration, what: &str, op: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, op).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: nothing within {limit:?}"),
    }
}

async fn next(inbox: &mut Inbox, limit: Duration) -> Delivery {
    within(limit, "the next delivery", inbox.recv())
        .await
        .expect("the inbox closed")
}

/// The next message, skipping `Resubscribed` (which the cluster client may send after
/// any topology refresh; harmless by design).
async fn next_message(inbox: &mut Inbox) -> (String, String) {
    loop {
        match next(inbox, DELIVERY).await {
            Delivery::Message { channel, payload } => {
                return (
                    channel.to_string(),
                    String::from_utf8(payload.to_vec()).unwrap(),
                );
            }
            Delivery::Resubscribed { .. } => {}
        }
    }
}

/// Publishes `payload` on `channel` with the publish command of `kind`; the number of
/// receivers Redis reports.
async fn publish(redis: &Redis, kind: ChannelKind, channel: &str, payload: &str) -> i64 {
    let mut commands = redis.commands();
    redis
        .bounded(
            redis::cmd(kind.publish_command(redis.mode()))
                .arg(channel)
                .arg(payload)
                .query_async(&mut commands),
        )
        .await
        .unwrap_or_else(|e| panic!("publishing on {channel}: {e}"))
}

async fn connect(mode: Mode, urls: &str) -> Redis {
    let config = RedisConfig::new(mode, urls).unwrap();
    within(
        Duration::from_secs(10),
        "connecting",
        Redis::connect(config),
    )
    .await
    .unwrap_or_else(|e| panic!("connecting to {urls}: {e}"))
}

async fn connect_err(config: RedisConfig) -> (RedisError, Duration) {
    let limit = config.connect_timeout + config.op_timeout;
    let started = Instant::now();
    let result = within(limit * 2, "a failing connect", Redis::connect(config)).await;
    let took = started.elapsed();
    match result {
        Ok(redis) => panic!("connected although it should fail: {redis:?}"),
        Err(e) => {
            eprintln!("failed as expected in {took:?}: {e}");
            assert!(
                took <= limit,
                "failing took {took:?}, more than {limit:?}: {e}"
            );
            (e, took)
        }
    }
}

/// A loopback port where nothing listens.
fn dead_port() -> u16 {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn single_team_and_broadcast_messages_arrive_in_order() {
    let redis = connect(Mode::Single, &single()).await;
    assert_eq!(redis.team_publish(), "PUBLISH");
    let (subscriptions, mut inbox) = redis.listen();
    let team = team_channel(&unique("team"));
    let control = unique("teamhub:control");
    subscriptions
        .subscribe(&team, ChannelKind::Team)
        .await
        .unwrap();
    subscriptions
        .subscribe(&control, ChannelKind::Broadcast)
        .await
        .unwrap();
    let on = |i: usize| {
        if i.is_multiple_of(3) {
            (ChannelKind::Broadcast, control.as_str())
        } else {
            (ChannelKind::Team, team.as_str())
        }
    };
    for i in 0..200 {
        let (kind, channel) = on(i);
        // One receiver: the subscription was confirmed before `subscribe` returned.
        assert_eq!(publish(&redis, kind, channel, &i.to_string()).await, 1);
    }
    for i in 0..200 {
        match next(&mut inbox, DELIVERY).await {
            Delivery::Message { channel, payload } => {
                assert_eq!(&*channel, on(i).1, "message {i}");
                assert_eq!(payload, i.to_string().as_bytes(), "message {i}");
            }
            other => panic!("message {i}: got {other:?}"),
        }
    }
    redis.ping().await.unwrap();
}

/// Unsubscribing stops a channel's deliveries (and its subscription on the server); a
/// channel belongs to one listener; the inbox closes once Redis and the handles are gone.
async fn unsubscribe_and_close(redis: Redis) {
    let (subscriptions, mut inbox) = redis.listen();
    let (others, _other_inbox) = redis.listen();
    let team = team_channel(&unique("team"));
    let stays = team_channel(&unique("team"));
    subscriptions
        .subscribe(&team, ChannelKind::Team)
        .await
        .unwrap();
    subscriptions
        .subscribe(&stays, ChannelKind::Team)
        .await
        .unwrap();
    match others.subscribe(&team, ChannelKind::Team).await {
        Err(RedisError::Config(m)) => assert!(m.contains("another listener"), "{m}"),
        other => panic!("a second listener of {team}: {other:?}"),
    }
    // The refused second listener did not disturb the first.
    assert_eq!(publish(&redis, ChannelKind::Team, &team, "1").await, 1);
    assert_eq!(next_message(&mut inbox).await, (team.clone(), "1".into()));

    subscriptions
        .unsubscribe(&team, ChannelKind::Team)
        .await
        .unwrap();
    assert_eq!(publish(&redis, ChannelKind::Team, &team, "2").await, 0);
    assert_eq!(publish(&redis, ChannelKind::Team, &stays, "3").await, 1);
    // In order per connection: had "2" been delivered, it would come before "3".
    assert_eq!(next_message(&mut inbox).await, (stays.clone(), "3".into()));

    // Now the other listener may take the channel.
    others.subscribe(&team, ChannelKind::Team).await.unwrap();
    drop((subscriptions, others, redis));
    loop {
        match within(DELIVERY, "the inbox to close", inbox.recv()).await {
            None => break,
            Some(Delivery::Resubscribed { .. }) => {}
            Some(other) => panic!("after the unsubscribe: {other:?}"),
        }
    }
}

#[tokio::test]
async fn single_unsubscribe_one_listener_per_channel_and_the_inbox_closes() {
    unsubscribe_and_close(connect(Mode::Single, &single()).await).await;
}

#[tokio::test]
async fn cluster_unsubscribe_one_listener_per_channel_and_the_inbox_closes() {
    let cluster = tokio::task::spawn_blocking(LocalCluster::shared)
        .await
        .unwrap();
    unsubscribe_and_close(connect(Mode::Cluster, &cluster.seeds()).await).await;
}

/// An ACL user of the test's own on the single server, so the test finds its own
/// connections in `CLIENT LIST` (the shared server has other tests' clients). Deleted on
/// drop.
struct TestUser {
    name: String,
}

impl TestUser {
    fn create() -> TestUser {
        let name = unique("teamhub-test");
        let mut admin = plain_admin();
        let _: () = redis::cmd("ACL")
            .arg("SETUSER")
            .arg(&name)
            .arg("on")
            .arg("nopass")
            .arg("~*")
            .arg("&*")
            .arg("+@all")
            .query(&mut admin)
            .unwrap();
        TestUser { name }
    }

    fn url(&self) -> String {
        format!("redis://{}:unused@{}", self.name, single_addr())
    }

    /// `CLIENT LIST TYPE pubsub` lines of this user's clients.
    fn pubsub_clients(&self) -> Vec<String> {
        let list: String = redis::cmd("CLIENT")
            .arg("LIST")
            .arg("TYPE")
            .arg("pubsub")
            .query(&mut plain_admin())
            .unwrap();
        let me = format!("user={}", self.name);
        list.lines()
            .filter(|l| l.split_whitespace().any(|f| f == me))
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        if let Ok(mut admin) = std::panic::catch_unwind(plain_admin) {
            let _: redis::RedisResult<()> = redis::cmd("ACL")
                .arg("DELUSER")
                .arg(&self.name)
                .query(&mut admin);
        }
    }
}

fn plain_admin() -> redis::Connection {
    let conn = redis::Client::open(single())
        .unwrap()
        .get_connection_with_timeout(Duration::from_secs(2))
        .unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    conn
}

fn client_field<'a>(line: &'a str, name: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|f| f.strip_prefix(name)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {name}= in {line}"))
}

#[tokio::test]
async fn single_resubscribes_after_the_server_kills_the_pubsub_connection() {
    let user = TestUser::create();
    let redis = connect(Mode::Single, &user.url()).await;
    let (subscriptions, mut inbox) = redis.listen();
    let team = team_channel(&unique("team"));
    let control = unique("teamhub:control");
    subscriptions
        .subscribe(&team, ChannelKind::Team)
        .await
        .unwrap();
    subscriptions
        .subscribe(&control, ChannelKind::Broadcast)
        .await
        .unwrap();
    publish(&redis, ChannelKind::Team, &team, "before").await;
    assert_eq!(
        next_message(&mut inbox).await,
        (team.clone(), "before".into())
    );

    let clients = user.pubsub_clients();
    assert_eq!(
        clients.len(),
        1,
        "the layer's one pub/sub connection: {clients:?}"
    );
    let killed = client_field(&clients[0], "id").to_owned();
    assert_eq!(client_field(&clients[0], "sub"), "2", "{}", clients[0]);
    let n: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(&killed)
        .query(&mut plain_admin())
        .unwrap();
    assert_eq!(n, 1);

    let mut resubscribed = BTreeSet::new();
    let deadline = Instant::now() + RECOVERY;
    while resubscribed.len() < 2 {
        let left = deadline.saturating_duration_since(Instant::now());
        match next(&mut inbox, left).await {
            Delivery::Resubscribed { channel } => {
                resubscribed.insert(channel.to_string());
            }
            other => panic!("before the resubscriptions: {other:?}"),
        }
    }
    assert_eq!(
        resubscribed,
        BTreeSet::from([team.clone(), control.clone()])
    );
    let now = user.pubsub_clients();
    assert_eq!(now.len(), 1, "{now:?}");
    assert_ne!(client_field(&now[0], "id"), killed, "a new connection");

    assert_eq!(publish(&redis, ChannelKind::Team, &team, "after").await, 1);
    assert_eq!(
        publish(&redis, ChannelKind::Broadcast, &control, "after too").await,
        1
    );
    assert_eq!(next_message(&mut inbox).await, (team, "after".into()));
    assert_eq!(
        next_message(&mut inbox).await,
        (control, "after too".into())
    );
}

#[test]
fn a_malformed_url_is_a_config_error() {
    for url in [
        "127.0.0.1:6379",
        "http://127.0.0.1:6379",
        "redis://127.0.0.1:port",
    ] {
        match RedisConfig::new(Mode::Single, url) {
            Err(RedisError::Config(m)) => assert!(m.contains("redis"), "{url}: {m}"),
            other => panic!("{url}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_port_where_nothing_listens_is_unavailable_fast() {
    for mode in [Mode::Single, Mode::Cluster] {
        let port = dead_port();
        let config = RedisConfig::new(mode, &format!("redis://127.0.0.1:{port}")).unwrap();
        let (err, took) = connect_err(config).await;
        let RedisError::Unavailable(m) = &err else {
            panic!("{mode}: {err:?}")
        };
        assert!(m.contains(&format!("127.0.0.1:{port}")), "{mode}: {m}");
        // Refused at once, not after the timeouts.
        assert!(took < Duration::from_secs(2), "{mode}: took {took:?}");
    }
}

#[tokio::test]
async fn a_server_that_never_answers_fails_within_the_timeouts() {
    // Accepts connections (the kernel completes the handshake) and never answers.
    let silent = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let port = silent.local_addr().unwrap().port();
    for mode in [Mode::Single, Mode::Cluster] {
        let mut config = RedisConfig::new(mode, &format!("redis://127.0.0.1:{port}")).unwrap();
        config.connect_timeout = Duration::from_millis(500);
        config.op_timeout = Duration::from_millis(500);
        let (err, _) = connect_err(config).await;
        assert!(
            matches!(&err, RedisError::Unavailable(m) if m.contains(&format!("127.0.0.1:{port}"))),
            "{mode}: {err:?}"
        );
    }
    drop(silent);
}

#[tokio::test]
async fn tls_against_a_plain_server_fails_within_the_timeouts() {
    let mut config = RedisConfig::single(&format!("rediss://{}", single_addr())).unwrap();
    config.connect_timeout = Duration::from_secs(1);
    config.op_timeout = Duration::from_secs(1);
    let (err, _) = connect_err(config).await;
    assert!(matches!(&err, RedisError::Unavailable(_)), "{err:?}");
}

#[tokio::test]
async fn cluster_mode_against_a_single_server_says_it_is_not_a_cluster_node() {
    let (err, _) = connect_err(RedisConfig::new(Mode::Cluster, &single()).unwrap()).await;
    assert!(
        matches!(&err, RedisError::Unavailable(m) if m.contains("not a cluster node")),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_ca_cert_with_a_plain_url_is_a_config_error() {
    let config = RedisConfig::single(&single())
        .unwrap()
        .with_ca_cert(Some("/nonexistent/ca.pem".into()));
    let (err, _) = connect_err(config).await;
    assert!(
        matches!(&err, RedisError::Config(m) if m.contains("--redis-ca-cert") && m.contains("rediss://")),
        "{err:?}"
    );
}

#[tokio::test]
async fn an_unreadable_or_non_pem_ca_file_is_a_config_error() {
    let server = tokio::task::spawn_blocking(LocalTlsRedis::start)
        .await
        .unwrap();
    let not_pem = server.ca_path().with_file_name("not-a-certificate.txt");
    std::fs::write(&not_pem, "hello").unwrap();
    for (ca, says) in [
        ("/nonexistent/ca.pem".into(), "reading the redis CA"),
        (not_pem, "no PEM certificate"),
    ] {
        let config = RedisConfig::single(&server.url())
            .unwrap()
            .with_ca_cert(Some(ca));
        let (err, _) = connect_err(config).await;
        assert!(
            matches!(&err, RedisError::Config(m) if m.contains(says)),
            "{err:?}"
        );
    }
}

#[tokio::test]
async fn cluster_team_channels_of_every_shard_and_a_broadcast_arrive() {
    let cluster = tokio::task::spawn_blocking(LocalCluster::shared)
        .await
        .unwrap();
    let redis = connect(Mode::Cluster, &cluster.seeds()).await;
    assert_eq!(redis.team_publish(), "SPUBLISH");
    redis.ping().await.unwrap();
    let (subscriptions, mut inbox) = redis.listen();
    let run = unique("team");
    let teams: Vec<String> = (0..50)
        .map(|i| team_channel(&format!("{run}-{i}")))
        .collect();
    let shards: BTreeSet<String> = teams.iter().map(|t| cluster.owner_of(t)).collect();
    assert_eq!(
        shards.len(),
        3,
        "50 teams spread over every shard: {shards:?}"
    );
    for team in &teams {
        subscriptions
            .subscribe(team, ChannelKind::Team)
            .await
            .unwrap();
    }
    let control = unique("teamhub:control");
    subscriptions
        .subscribe(&control, ChannelKind::Broadcast)
        .await
        .unwrap();

    for (i, team) in teams.iter().enumerate() {
        // SPUBLISH reaches the subscribers of the team's shard: this one.
        assert_eq!(
            publish(&redis, ChannelKind::Team, team, &i.to_string()).await,
            1,
            "{team}"
        );
    }
    publish(&redis, ChannelKind::Broadcast, &control, "everyone").await;

    let mut want: BTreeSet<(String, String)> = teams
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i.to_string()))
        .collect();
    want.insert((control.clone(), "everyone".into()));
    let mut got = BTreeSet::new();
    while got.len() < want.len() {
        let m = next_message(&mut inbox).await;
        assert!(want.contains(&m), "unexpected {m:?}");
        assert!(got.insert(m.clone()), "twice: {m:?}");
    }
    redis.ping().await.unwrap();
}

#[tokio::test]
async fn a_cluster_seed_whose_state_is_not_ok_is_refused() {
    let cluster = tokio::task::spawn_blocking(LocalCluster::shared)
        .await
        .unwrap();
    let lone = tokio::task::spawn_blocking(LocalRedis::cluster_node_without_slots)
        .await
        .unwrap();
    for seeds in [lone.url(), format!("{},{}", cluster.seeds(), lone.url())] {
        let (err, _) = connect_err(RedisConfig::new(Mode::Cluster, &seeds).unwrap()).await;
        let RedisError::Unavailable(m) = &err else {
            panic!("{err:?}")
        };
        assert!(
            m.contains("cluster_state:fail") && m.contains(&lone.url()),
            "{m}"
        );
    }
}

/// What a listener saw of a numbered sequence published across a topology change.
struct Sequence {
    deliveries: Vec<Delivery>,
    /// Numbers whose publish Redis acknowledged.
    acknowledged: BTreeSet<u64>,
    /// The first number published after the change was complete.
    first_after: u64,
}

/// Subscribes a team channel, publishes 1, 2, 3, .. on it while `change` runs on the
/// cluster, and keeps listening until numbers published after the change arrive.
async fn publish_across(
    cluster: Arc<LocalCluster>,
    channel: &str,
    change: fn(&LocalCluster, &str) -> String,
) -> Sequence {
    let redis = connect(Mode::Cluster, &cluster.seeds()).await;
    let (subscriptions, mut inbox) = redis.listen();
    subscriptions
        .subscribe(channel, ChannelKind::Team)
        .await
        .unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let attempted = Arc::new(AtomicU64::new(0));
    let acknowledged = Arc::new(Mutex::new(BTreeSet::new()));
    let publisher = tokio::spawn({
        let (redis, channel) = (redis.clone(), channel.to_owned());
        let (stop, attempted, acknowledged) =
            (stop.clone(), attempted.clone(), acknowledged.clone());
        async move {
            let mut commands = redis.commands();
            let mut pace = tokio::time::interval(Duration::from_millis(5));
            for n in 1u64.. {
                pace.tick().await;
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                attempted.store(n, Ordering::Relaxed);
                // During the change a publish may fail or time out: only acknowledged
                // ones must arrive (or be covered by a Resubscribed).
                let sent: Result<i64, _> = redis
                    .bounded(
                        redis::cmd(redis.team_publish())
                            .arg(&channel)
                            .arg(n)
                            .query_async(&mut commands),
                    )
                    .await;
                if sent.is_ok() {
                    acknowledged.lock().unwrap().insert(n);
                }
            }
        }
    });

    let mut deliveries = Vec::new();
    let number = |d: &Delivery| match d {
        Delivery::Message { payload, .. } => std::str::from_utf8(payload).ok()?.parse::<u64>().ok(),
        Delivery::Resubscribed { .. } => None,
    };
    // The sequence flows before the change.
    while deliveries.iter().filter_map(number).count() < 20 {
        deliveries.push(next(&mut inbox, DELIVERY).await);
    }

    let mut changing = tokio::task::spawn_blocking({
        let (cluster, channel) = (cluster.clone(), channel.to_owned());
        move || change(&cluster, &channel)
    });
    let deadline = tokio::time::Instant::now() + RECOVERY * 3;
    let changed_to = loop {
        tokio::select! {
            done = &mut changing => break done.expect("the topology change panicked"),
            d = inbox.recv() => deliveries.push(d.expect("the inbox closed")),
            _ = tokio::time::sleep_until(deadline) => panic!("the topology change took too long"),
        }
    };
    let first_after = attempted.load(Ordering::Relaxed) + 1;
    assert_eq!(cluster.owner_of(channel), changed_to);

    // Numbers published after the change arrive.
    let deadline = Instant::now() + RECOVERY;
    while !deliveries
        .iter()
        .filter_map(number)
        .any(|n| n >= first_after + 20)
    {
        let left = deadline.saturating_duration_since(Instant::now());
        deliveries.push(next(&mut inbox, left).await);
    }
    stop.store(true, Ordering::Relaxed);
    within(DELIVERY, "the publisher to stop", publisher)
        .await
        .unwrap();
    let acknowledged = std::mem::take(&mut *acknowledged.lock().unwrap());
    // Everything acknowledged after the change arrives, up to the last one.
    let last = *acknowledged.last().unwrap();
    while !deliveries.iter().filter_map(number).any(|n| n >= last) {
        deliveries.push(next(&mut inbox, DELIVERY).await);
    }
    Sequence {
        deliveries,
        acknowledged,
        first_after,
    }
}

/// Every acknowledged number arrived, in order and once, or a `Resubscribed` of the
/// channel came before the next number that did: the owner then fills the gap from
/// history. Returns how many resubscriptions were seen.
fn check_sequence(channel: &str, s: &Sequence) -> usize {
    let mut last = 0u64;
    let mut resubscribed_since = false;
    let mut resubscriptions = 0;
    let mut lost = 0;
    for d in &s.deliveries {
        match d {
            Delivery::Resubscribed { channel: c } => {
                assert_eq!(&**c, channel);
                resubscribed_since = true;
                resubscriptions += 1;
            }
            Delivery::Message {
                channel: c,
                payload,
            } => {
                assert_eq!(&**c, channel);
                let n: u64 = std::str::from_utf8(payload).unwrap().parse().unwrap();
                assert!(n > last, "{n} after {last}: out of order or twice");
                let missing: Vec<u64> = s.acknowledged.range(last + 1..n).copied().collect();
                assert!(
                    missing.is_empty() || resubscribed_since,
                    "{missing:?} missing before {n} without a Resubscribed"
                );
                lost += missing.len();
                last = n;
                resubscribed_since = false;
            }
        }
    }
    assert!(
        s.acknowledged.range(s.first_after..).all(|&n| n <= last),
        "numbers after the change are missing"
    );
    eprintln!(
        "{channel}: {} deliveries, {} acknowledged, {lost} lost and covered, \
         {resubscriptions} Resubscribed",
        s.deliveries.len(),
        s.acknowledged.len()
    );
    resubscriptions
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_failover_resubscribes_and_later_messages_arrive() {
    let cluster = Arc::new(
        tokio::task::spawn_blocking(LocalCluster::start)
            .await
            .unwrap(),
    );
    let channel = team_channel(&unique("failover"));
    let before = cluster.owner_of(&channel);
    let sequence = publish_across(cluster.clone(), &channel, LocalCluster::failover).await;
    assert_ne!(cluster.owner_of(&channel), before);
    assert!(
        check_sequence(&channel, &sequence) > 0,
        "no Resubscribed after the failover"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_slot_move_resubscribes_and_later_messages_arrive() {
    let cluster = Arc::new(
        tokio::task::spawn_blocking(LocalCluster::start)
            .await
            .unwrap(),
    );
    let team = unique("moving");
    let channel = team_channel(&team);
    let before = cluster.owner_of(&channel);
    // Keys of the team's slot, more than one MIGRATE batch, must move with it.
    let keys: Vec<String> = (0..250).map(|i| format!("{{{team}}}:key:{i}")).collect();
    {
        let redis = connect(Mode::Cluster, &cluster.seeds()).await;
        let mut commands = redis.commands();
        for chunk in keys.chunks(50) {
            let mut set = redis::pipe();
            for k in chunk {
                set.set(k, k).ignore();
            }
            redis
                .bounded(set.query_async::<()>(&mut commands))
                .await
                .unwrap();
        }
    }
    let sequence = publish_across(cluster.clone(), &channel, LocalCluster::move_slot).await;
    assert_ne!(cluster.owner_of(&channel), before);
    assert!(
        check_sequence(&channel, &sequence) > 0,
        "no Resubscribed after the slot move"
    );
    let redis = connect(Mode::Cluster, &cluster.seeds()).await;
    let mut commands = redis.commands();
    let values: Vec<Option<String>> = redis
        .bounded(redis::cmd("MGET").arg(&keys).query_async(&mut commands))
        .await
        .unwrap();
    assert!(
        values
            .iter()
            .zip(&keys)
            .all(|(v, k)| v.as_deref() == Some(k.as_str())),
        "keys lost in the move"
    );
}

#[tokio::test]
async fn tls_with_the_right_ca_pings_and_delivers() {
    let server = tokio::task::spawn_blocking(LocalTlsRedis::start)
        .await
        .unwrap();
    let config = RedisConfig::single(&server.url())
        .unwrap()
        .with_ca_cert(Some(server.ca_path().to_owned()));
    assert!(config.tls());
    let redis = within(
        Duration::from_secs(10),
        "connecting",
        Redis::connect(config),
    )
    .await
    .unwrap();
    redis.ping().await.unwrap();
    let (subscriptions, mut inbox) = redis.listen();
    let team = team_channel(&unique("tls"));
    subscriptions
        .subscribe(&team, ChannelKind::Team)
        .await
        .unwrap();
    for i in 0..10 {
        assert_eq!(
            publish(&redis, ChannelKind::Team, &team, &i.to_string()).await,
            1
        );
    }
    for i in 0..10 {
        assert_eq!(
            next_message(&mut inbox).await,
            (team.clone(), i.to_string())
        );
    }
}

#[tokio::test]
async fn tls_with_the_wrong_ca_fails_fast_naming_the_certificate() {
    let server = tokio::task::spawn_blocking(LocalTlsRedis::start)
        .await
        .unwrap();
    for ca in [Some(server.wrong_ca_path().to_owned()), None] {
        let config = RedisConfig::single(&server.url())
            .unwrap()
            .with_ca_cert(ca.clone());
        let (err, _) = connect_err(config).await;
        let RedisError::Unavailable(m) = &err else {
            panic!("{ca:?}: {err:?}")
        };
        assert!(
            m.to_lowercase().contains("certificate"),
            "{ca:?}: the message names the certificate problem: {m}"
        );
    }
}
