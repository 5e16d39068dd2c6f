//! The Redis broker against a real Redis: the conformance suite, two nodes sharing one
//! Redis, history age, and a Redis restart (on a private `redis-server`).
//!
//! The shared Redis comes from `TEAMHUB_TEST_REDIS_URL` (default
//! `redis://127.0.0.1:6379`); these tests fail, never skip, when it is unreachable. Each
//! test uses its own key prefix, so they run in parallel without seeing each other.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::future::join_all;
use teamhub::broker::conformance::{self, expect_message, publish, team};
use teamhub::broker::memory::HistoryLimits;
use teamhub::broker::redis::RedisBroker;
use teamhub::broker::{Broker, BrokerError, BrokerEvent, History, Resync, ResyncReason};
use teamhub_redis::{Redis, RedisConfig};
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

const WAIT: Duration = Duration::from_secs(15);

fn redis_url() -> String {
    std::env::var("TEAMHUB_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

struct TestBroker {
    broker: RedisBroker,
    events: UnboundedReceiver<BrokerEvent>,
}

fn limits(max_age: Duration) -> HistoryLimits {
    HistoryLimits {
        max_messages: conformance::HISTORY_MAX_MESSAGES,
        max_age,
    }
}

fn unique_prefix() -> String {
    format!("teamhub-test:{}", uuid::Uuid::new_v4().simple())
}

/// A broker on `url` with `prefix`, checked reachable (a clear failure otherwise).
async fn broker_on(url: &str, prefix: &str, max_age: Duration) -> TestBroker {
    let (tx, events) = unbounded_channel();
    let config = RedisConfig::single(url).unwrap();
    let redis = Redis::connect(config).await.unwrap_or_else(|e| {
        panic!(
            "Redis at {url} is unreachable ({e}). These tests need a real Redis: start one \
             (redis-server --port 6379 --save '' --appendonly no) or set TEAMHUB_TEST_REDIS_URL"
        )
    });
    let broker = RedisBroker::new(&redis, prefix, tx, limits(max_age));
    TestBroker { broker, events }
}

async fn shared_broker() -> TestBroker {
    broker_on(&redis_url(), &unique_prefix(), Duration::from_secs(3600)).await
}

#[tokio::test]
async fn conformance_offsets_start_at_one_per_team() {
    let mut t = shared_broker().await;
    conformance::offsets_start_at_one_per_team(&t.broker, &t.broker, &mut t.events).await;
}

#[tokio::test]
async fn conformance_concurrent_publishers_keep_order() {
    let mut t = shared_broker().await;
    conformance::concurrent_publishers_keep_order(&t.broker, &t.broker, &mut t.events).await;
}

#[tokio::test]
async fn conformance_enqueued_publishes_keep_their_order() {
    let mut t = shared_broker().await;
    conformance::enqueued_publishes_keep_their_order(&t.broker, &t.broker, &mut t.events).await;
}

#[tokio::test]
async fn conformance_daily_quota_is_exact_and_spends_nothing() {
    let mut t = shared_broker().await;
    conformance::daily_quota_is_exact_and_spends_nothing(&t.broker, &t.broker, &mut t.events).await;
}

#[tokio::test]
async fn conformance_history_is_bounded() {
    let mut t = shared_broker().await;
    conformance::history_is_bounded(&t.broker, &t.broker, &mut t.events).await;
}

#[tokio::test]
async fn conformance_epochs_are_stable() {
    let mut t = shared_broker().await;
    conformance::epochs_are_stable(&t.broker, &t.broker, &mut t.events).await;
}

#[tokio::test]
async fn conformance_events_carry_origin_and_echo() {
    let mut t = shared_broker().await;
    conformance::events_carry_origin_and_echo(&t.broker, &t.broker, &mut t.events).await;
}

#[tokio::test]
async fn conformance_unsubscribe_stops_delivery() {
    let mut t = shared_broker().await;
    conformance::unsubscribe_stops_delivery(&t.broker, &t.broker, &mut t.events, true).await;
}

#[tokio::test]
async fn two_nodes_see_every_message_in_the_same_order() {
    let (url, prefix) = (redis_url(), unique_prefix());
    let hour = Duration::from_secs(3600);
    let mut n1 = broker_on(&url, &prefix, hour).await;
    let mut n2 = broker_on(&url, &prefix, hour).await;
    let t = team("shared");
    n1.broker.subscribe(&t).await.unwrap();
    n2.broker.subscribe(&t).await.unwrap();
    assert_eq!(
        n1.broker.position(&t).await.unwrap(),
        n2.broker.position(&t).await.unwrap(),
        "one epoch for the cluster"
    );
    const EACH: u64 = 40;
    let (b1, b2, tr) = (&n1.broker, &n2.broker, &t);
    let publishers = [b1, b2, b1, b2].into_iter().map(|b| async move {
        let mut offsets = Vec::new();
        for i in 0..EACH {
            offsets.push(publish(b, tr, i, None, false).await.unwrap().offset);
        }
        offsets
    });
    let mut offsets: Vec<u64> = join_all(publishers).await.concat();
    offsets.sort_unstable();
    let total = 4 * EACH;
    assert_eq!(offsets, (1..=total).collect::<Vec<_>>());
    for node in [&mut n1, &mut n2] {
        let mut wires = Vec::new();
        for offset in 1..=total {
            wires.push(expect_message(&mut node.events, &t, offset).await);
        }
        // Both nodes rebuilt the frame the history holds.
        let held = node.broker.read(&t, total - 1, 10).await.unwrap();
        assert_eq!(
            held.messages[0].as_str(),
            wires[(total - 1) as usize].wire().as_str()
        );
    }
}

#[tokio::test]
async fn history_forgets_messages_older_than_the_age_limit() {
    let mut t = broker_on(&redis_url(), &unique_prefix(), Duration::from_millis(300)).await;
    let team = team("aged");
    t.broker.subscribe(&team).await.unwrap();
    publish(&t.broker, &team, 1, None, false).await.unwrap();
    expect_message(&mut t.events, &team, 1).await;
    assert!(t.broker.read(&team, 0, 10).await.unwrap().complete);
    // Letting time pass is what is under test here, not a stand-in for synchronisation.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let r = t.broker.read(&team, 0, 10).await.unwrap();
    assert!(!r.complete && r.messages.is_empty(), "offset 1 aged out");
    assert_eq!(r.position.offset, 1, "the offset survives its message");
    publish(&t.broker, &team, 2, None, false).await.unwrap();
    expect_message(&mut t.events, &team, 2).await;
    let r = t.broker.read(&team, 1, 10).await.unwrap();
    assert!(r.complete && r.messages.len() == 1);
}

/// A `redis-server` of our own on a free loopback port, stopped on drop.
pub(crate) struct PrivateRedis {
    port: u16,
    child: Option<Child>,
}

impl PrivateRedis {
    pub(crate) fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        let mut redis = PrivateRedis { port, child: None };
        redis.spawn();
        redis
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub(crate) fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed for the restart test");
        self.child = Some(child);
    }

    pub(crate) fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits until the server answers PING.
    pub(crate) async fn wait_ready(&self) {
        let client = redis::Client::open(self.url()).unwrap();
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Ok(Ok(mut conn)) = tokio::time::timeout(
                Duration::from_secs(1),
                client.get_multiplexed_async_connection(),
            )
            .await
                && redis::cmd("PING")
                    .query_async::<String>(&mut conn)
                    .await
                    .is_ok()
            {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "private redis-server on port {} did not start",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The next item of the broker's stream, which must be a resync.
async fn next_resync(rx: &mut UnboundedReceiver<BrokerEvent>) -> Resync {
    match tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("a resync within the timeout")
        .expect("event channel open")
    {
        BrokerEvent::Resync(r) => r,
        BrokerEvent::Message(m) => panic!("a message where a resync was due: {m:?}"),
    }
}

#[tokio::test]
async fn a_dropped_subscriber_fills_the_gap_from_history() {
    let redis = PrivateRedis::start();
    redis.wait_ready().await;
    let mut t = broker_on(&redis.url(), "gap", Duration::from_secs(3600)).await;
    let team = team("gap");
    t.broker.subscribe(&team).await.unwrap();
    publish(&t.broker, &team, 1, None, false).await.unwrap();
    expect_message(&mut t.events, &team, 1).await;

    // Cut the node's pub/sub connection; publish while it reconnects.
    let client = redis::Client::open(redis.url()).unwrap();
    let mut admin = client.get_multiplexed_async_connection().await.unwrap();
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(killed, 1, "one subscriber connection");
    for n in 2..=6 {
        publish(&t.broker, &team, n, None, false).await.unwrap();
    }
    for offset in 2..=6 {
        expect_message(&mut t.events, &team, offset).await;
    }
    // Nothing twice: the next event is the next offset.
    publish(&t.broker, &team, 7, None, false).await.unwrap();
    expect_message(&mut t.events, &team, 7).await;
    assert!(t.events.try_recv().is_err(), "no resync for a filled gap");
}

#[tokio::test]
async fn a_restarted_redis_means_unavailable_then_a_new_epoch() {
    let mut redis = PrivateRedis::start();
    redis.wait_ready().await;
    let mut t = broker_on(&redis.url(), "restart", Duration::from_secs(3600)).await;
    let team = team("restart");
    t.broker.subscribe(&team).await.unwrap();
    for n in 1..=3 {
        publish(&t.broker, &team, n, None, false).await.unwrap();
    }
    for offset in 1..=3 {
        expect_message(&mut t.events, &team, offset).await;
    }
    let old = t.broker.position(&team).await.unwrap();
    assert_eq!(old.offset, 3);

    redis.stop();
    let err = publish(&t.broker, &team, 4, None, false).await;
    assert!(
        matches!(err, Err(BrokerError::Unavailable(_))),
        "publish during the outage: {err:?}"
    );
    assert!(
        t.broker.ping().await.is_err(),
        "ping fails while Redis is down"
    );
    assert!(t.broker.position(&team).await.is_err());

    redis.spawn();
    redis.wait_ready().await;
    // The subscriber reconnects, resubscribes, finds the team's epoch changed and says so.
    let resync = next_resync(&mut t.events).await;
    assert_eq!(
        resync,
        Resync {
            team: team.clone(),
            reason: ResyncReason::EpochChanged
        }
    );
    let new = t.broker.position(&team).await.unwrap();
    assert_ne!(
        new.epoch, old.epoch,
        "history was lost, so the epoch changed"
    );
    let since = teamhub_protocol::Since {
        epoch: old.epoch.clone(),
        offset: old.offset,
    };
    let recovery = teamhub::broker::recover(&since, t.broker.read(&team, 3, 100).await.unwrap());
    assert!(
        !recovery.recovered,
        "a since from before the loss never recovers"
    );

    // The stale team stays silent until the node has let go of it and hosts it afresh.
    assert_eq!(
        publish(&t.broker, &team, 1, None, false)
            .await
            .unwrap()
            .offset,
        1
    );
    t.broker.unsubscribe(&team).await.unwrap();
    t.broker.subscribe(&team).await.unwrap();
    publish(&t.broker, &team, 2, None, false).await.unwrap();
    expect_message(&mut t.events, &team, 2).await;
    assert!(t.broker.ping().await.is_ok());
}

/// A plain connection to the shared Redis, to damage a team's keys behind the broker.
async fn admin() -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_gap_history_no_longer_holds_resyncs_the_team() {
    let prefix = unique_prefix();
    let mut t = broker_on(&redis_url(), &prefix, Duration::from_secs(3600)).await;
    let (lost, fine) = (team("lost"), team("fine"));
    t.broker.subscribe(&lost).await.unwrap();
    t.broker.subscribe(&fine).await.unwrap();
    publish(&t.broker, &lost, 1, None, false).await.unwrap();
    expect_message(&mut t.events, &lost, 1).await;
    // Offsets 2..=11 "happened" and were evicted before this node saw them.
    let mut admin = admin().await;
    let _: () = redis::pipe()
        .del(format!("{prefix}:{{lost}}:history"))
        .ignore()
        .hincr(format!("{prefix}:{{lost}}:meta"), "offset", 10)
        .ignore()
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(
        publish(&t.broker, &lost, 12, None, false)
            .await
            .unwrap()
            .offset,
        12
    );
    let resync = next_resync(&mut t.events).await;
    assert_eq!(
        resync,
        Resync {
            team: lost.clone(),
            reason: ResyncReason::HistoryLost
        }
    );
    // Nothing of the lost team was delivered; other teams are unaffected.
    publish(&t.broker, &fine, 1, None, false).await.unwrap();
    expect_message(&mut t.events, &fine, 1).await;
}

#[tokio::test]
async fn a_live_epoch_change_resyncs_the_team() {
    let prefix = unique_prefix();
    let mut t = broker_on(&redis_url(), &prefix, Duration::from_secs(3600)).await;
    let team = team("flushed");
    t.broker.subscribe(&team).await.unwrap();
    publish(&t.broker, &team, 1, None, false).await.unwrap();
    expect_message(&mut t.events, &team, 1).await;
    // As if Redis lost the team's keys while this node stayed connected.
    let mut admin = admin().await;
    let _: () = redis::cmd("DEL")
        .arg(format!("{prefix}:{{flushed}}:meta"))
        .arg(format!("{prefix}:{{flushed}}:history"))
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(
        publish(&t.broker, &team, 1, None, false)
            .await
            .unwrap()
            .offset,
        1,
        "a new history starts over"
    );
    let resync = next_resync(&mut t.events).await;
    assert_eq!(resync.reason, ResyncReason::EpochChanged);
    // Hosting the team afresh delivers the new history's messages.
    t.broker.unsubscribe(&team).await.unwrap();
    t.broker.subscribe(&team).await.unwrap();
    publish(&t.broker, &team, 2, None, false).await.unwrap();
    expect_message(&mut t.events, &team, 2).await;
}
