//! The Redis broker and control on a real local Redis Cluster (3 primaries, 3
//! replicas, started by `teamhub_redis::testing`): the broker conformance suite, teams
//! spread over every shard, control traffic reaching every node, and a busy team
//! through a failover and a slot move with nothing lost that history holds.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use teamhub::broker::conformance::{self, expect_message, next_broker_event, publish, team};
use teamhub::broker::memory::HistoryLimits;
use teamhub::broker::redis::RedisBroker;
use teamhub::broker::{Broker, BrokerEvent};
use teamhub::control::redis::RedisControl;
use teamhub::control::{Command, Control, ControlEvent};
use teamhub::event::EventKind;
use teamhub_redis::testing::LocalCluster;
use teamhub_redis::{Mode, Redis, RedisConfig};
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

const WAIT: Duration = Duration::from_secs(20);

fn unique_prefix() -> String {
    format!("teamhub-test:{}", uuid::Uuid::new_v4().simple())
}

async fn layer(cluster: &LocalCluster) -> Redis {
    let config = RedisConfig::new(Mode::Cluster, &cluster.seeds()).unwrap();
    Redis::connect(config)
        .await
        .unwrap_or_else(|e| panic!("the local Redis Cluster: {e}"))
}

async fn broker(redis: &Redis, prefix: &str) -> (RedisBroker, UnboundedReceiver<BrokerEvent>) {
    let (tx, rx) = unbounded_channel();
    let limits = HistoryLimits {
        max_messages: conformance::HISTORY_MAX_MESSAGES,
        max_age: Duration::from_secs(3600),
    };
    (RedisBroker::new(redis, prefix, tx, limits), rx)
}

async fn shared() -> (RedisBroker, UnboundedReceiver<BrokerEvent>) {
    let cluster = tokio::task::spawn_blocking(LocalCluster::shared)
        .await
        .unwrap();
    broker(&layer(cluster).await, &unique_prefix()).await
}

#[tokio::test]
async fn cluster_conformance_offsets_start_at_one_per_team() {
    let (b, mut rx) = shared().await;
    conformance::offsets_start_at_one_per_team(&b, &b, &mut rx).await;
}

#[tokio::test]
async fn cluster_conformance_concurrent_publishers_keep_order() {
    let (b, mut rx) = shared().await;
    conformance::concurrent_publishers_keep_order(&b, &b, &mut rx).await;
}

#[tokio::test]
async fn cluster_conformance_enqueued_publishes_keep_their_order() {
    let (b, mut rx) = shared().await;
    conformance::enqueued_publishes_keep_their_order(&b, &b, &mut rx).await;
}

#[tokio::test]
async fn cluster_conformance_history_is_bounded() {
    let (b, mut rx) = shared().await;
    conformance::history_is_bounded(&b, &b, &mut rx).await;
}

#[tokio::test]
async fn cluster_conformance_epochs_are_stable() {
    let (b, mut rx) = shared().await;
    conformance::epochs_are_stable(&b, &b, &mut rx).await;
}

#[tokio::test]
async fn cluster_conformance_events_carry_origin_and_echo() {
    let (b, mut rx) = shared().await;
    conformance::events_carry_origin_and_echo(&b, &b, &mut rx).await;
}

#[tokio::test]
async fn cluster_conformance_unsubscribe_stops_delivery() {
    let (b, mut rx) = shared().await;
    conformance::unsubscribe_stops_delivery(&b, &b, &mut rx, true).await;
}

/// Forty teams land on all three shards; two nodes see every team's messages, each
/// team in order, pipelined publishes included.
#[tokio::test]
async fn teams_on_every_shard_reach_both_nodes_in_order() {
    let cluster = tokio::task::spawn_blocking(LocalCluster::shared)
        .await
        .unwrap();
    let prefix = unique_prefix();
    let (a, mut ea) = broker(&layer(cluster).await, &prefix).await;
    let (b, mut eb) = broker(&layer(cluster).await, &prefix).await;
    let teams: Vec<_> = (0..40).map(|i| team(&format!("spread-{i}"))).collect();
    let owners: BTreeSet<String> = teams
        .iter()
        .map(|t| cluster.owner_of(&format!("{prefix}:{{{t}}}:meta")))
        .collect();
    assert_eq!(
        owners.len(),
        3,
        "forty teams cover every primary: {owners:?}"
    );
    for t in &teams {
        a.subscribe(t).await.unwrap();
        b.subscribe(t).await.unwrap();
    }
    // Enqueued back to back over all teams: one batch, split per team by the publisher.
    let pending: Vec<_> = (0..3u64)
        .flat_map(|round| teams.iter().map(move |t| (round, t)))
        .map(|(_, t)| {
            let ty = teamhub_protocol::MessageType::new("test.msg").unwrap();
            let user = teamhub_protocol::UserId::new("u1").unwrap();
            let data = serde_json::value::RawValue::from_string("1".into()).unwrap();
            a.enqueue(teamhub::broker::Publication {
                parts: teamhub::event::MessageParts {
                    team: t,
                    ty: &ty,
                    user: &user,
                    data: &data,
                },
                origin: None,
                echo: false,
                messages_per_day: None,
            })
        })
        .collect();
    for (i, p) in futures_util::future::join_all(pending)
        .await
        .into_iter()
        .enumerate()
    {
        let round = (i / teams.len()) as u64;
        assert_eq!(p.unwrap().offset, round + 1, "publish {i}");
    }
    for events in [&mut ea, &mut eb] {
        let mut next_offset = std::collections::HashMap::new();
        for _ in 0..3 * teams.len() {
            let ev = conformance::next_event(events).await;
            let expected = next_offset.entry(ev.team.clone()).or_insert(1u64);
            assert_eq!(conformance::offset_of(&ev), *expected, "team {}", ev.team);
            *expected += 1;
        }
    }
}

/// The control channel is plain pub/sub, which the cluster forwards to every shard:
/// nodes connected through different seeds all receive a command.
#[tokio::test]
async fn control_reaches_every_node_of_a_cluster() {
    let cluster = tokio::task::spawn_blocking(LocalCluster::shared)
        .await
        .unwrap();
    let prefix = unique_prefix();
    let mut nodes = Vec::new();
    for seed in cluster.primaries() {
        let redis = Redis::connect(RedisConfig::new(Mode::Cluster, &seed).unwrap())
            .await
            .unwrap();
        let (tx, mut rx) = unbounded_channel();
        let control = RedisControl::start(&redis, &prefix, tx).await.unwrap();
        assert_eq!(rx.recv().await, Some(ControlEvent::Resubscribed));
        nodes.push((control, rx));
    }
    let cmd = Command::KeyDeleted {
        team: team("t"),
        id: "k1".into(),
    };
    let cmd = teamhub::control::Logged {
        command: cmd,
        seq: Some(1),
    };
    nodes[0].0.send(cmd.clone()).await.unwrap();
    for (_, rx) in &mut nodes {
        let got = tokio::time::timeout(WAIT, rx.recv()).await.unwrap();
        assert_eq!(got, Some(ControlEvent::Command(cmd.clone())));
    }
}

/// What a receiving node saw of a team while its shard changed under it.
struct Seen {
    offsets: Vec<u64>,
    resyncs: usize,
}

/// Publishes to one busy team from node A while `disturb` runs on the cluster (a
/// failover, a slot move), and checks node B: every offset from 1 to the last one
/// Redis assigned, in order, once each, and no resync (history holds all of them).
async fn busy_team_through(disturb: impl FnOnce(&LocalCluster, &str) + Send + 'static) {
    let cluster = Arc::new(
        tokio::task::spawn_blocking(LocalCluster::start)
            .await
            .unwrap(),
    );
    let prefix = unique_prefix();
    let limits = HistoryLimits {
        max_messages: 100_000,
        max_age: Duration::from_secs(3600),
    };
    let (tx, _ea) = unbounded_channel();
    let a = Arc::new(RedisBroker::new(
        &layer(&cluster).await,
        &prefix,
        tx,
        limits,
    ));
    let (tx, mut eb) = unbounded_channel();
    let b = RedisBroker::new(&layer(&cluster).await, &prefix, tx, limits);
    let t = team("busy");
    b.subscribe(&t).await.unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let succeeded = Arc::new(AtomicU64::new(0));
    let publisher = tokio::spawn({
        let (a, t, stop, succeeded) = (a.clone(), t.clone(), stop.clone(), succeeded.clone());
        async move {
            let (mut ok, mut failed) = (Vec::new(), 0u32);
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) && n < 20_000 {
                n += 1;
                match publish(&*a, &t, n, None, false).await {
                    Ok(p) => {
                        ok.push(p.offset);
                        succeeded.fetch_add(1, Ordering::SeqCst);
                    }
                    // Unavailable while the slot has no primary: the client's retry.
                    Err(_) => {
                        failed += 1;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
            (ok, failed)
        }
    });
    // Let the team get busy before the disturbance: the first messages arrive.
    expect_message(&mut eb, &t, 1).await;
    let key = format!("{prefix}:{{busy}}:meta");
    {
        let cluster = cluster.clone();
        tokio::task::spawn_blocking(move || disturb(&cluster, &key))
            .await
            .unwrap();
    }
    // Fifty more publishes succeed after the disturbance, then stop.
    let target = succeeded.load(Ordering::SeqCst) + 50;
    let deadline = tokio::time::Instant::now() + WAIT;
    while succeeded.load(Ordering::SeqCst) < target {
        assert!(
            tokio::time::Instant::now() < deadline,
            "publishes do not succeed again after the disturbance"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let (ok, failed) = publisher.await.unwrap();
    let last = *ok.last().expect("some publishes succeeded");
    let head = teamhub::broker::History::position(&b, &t)
        .await
        .unwrap()
        .offset;
    assert!(head >= last);

    let mut seen = Seen {
        offsets: vec![1],
        resyncs: 0,
    };
    while *seen.offsets.last().unwrap() < head {
        match tokio::time::timeout(WAIT, eb.recv()).await {
            Ok(Some(BrokerEvent::Message(ev))) => match ev.kind {
                EventKind::Message { offset, .. } => seen.offsets.push(offset),
                EventKind::Presence { .. } => unreachable!(),
            },
            Ok(Some(BrokerEvent::Resync(r))) => {
                seen.resyncs += 1;
                panic!("resync {r:?} although history holds every message");
            }
            Ok(None) => panic!("event channel closed"),
            Err(_) => panic!(
                "node B stopped at offset {} of {head} ({failed} publishes failed)",
                seen.offsets.last().unwrap()
            ),
        }
    }
    assert_eq!(seen.resyncs, 0);
    assert_eq!(
        seen.offsets,
        (1..=head).collect::<Vec<_>>(),
        "every offset once, in order"
    );
    for offset in &ok {
        assert!(*offset <= head);
    }
    // And the team is live on its new shard.
    let p = publish(&*a, &t, 0, None, false).await.unwrap();
    loop {
        if let BrokerEvent::Message(ev) = next_broker_event(&mut eb).await
            && conformance::offset_of(&ev) == p.offset
        {
            break;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_under_a_busy_team_loses_nothing_history_holds() {
    busy_team_through(|cluster, key| {
        cluster.failover(key);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_move_under_a_busy_team_loses_nothing_history_holds() {
    busy_team_through(|cluster, key| {
        cluster.move_slot(key);
    })
    .await;
}

/// A primary that stops answering (`CLIENT PAUSE`, as an overloaded or partitioned
/// server looks) makes its teams' publishes `unavailable` while teams on the other
/// shards keep publishing, and readiness names the primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_that_stops_answering_fails_only_its_teams() {
    let cluster = tokio::task::spawn_blocking(LocalCluster::start)
        .await
        .unwrap();
    let prefix = unique_prefix();
    let redis = layer(&cluster).await;
    let (b, _events) = broker(&redis, &prefix).await;
    let owner = |t: &str| cluster.owner_of(&format!("{prefix}:{{{t}}}:meta"));
    let stuck = team("stuck");
    let stuck_owner = owner("stuck");
    let fine = (0..100)
        .map(|i| format!("fine-{i}"))
        .find(|t| owner(t) != stuck_owner)
        .map(|t| team(&t))
        .expect("a team on another shard");
    publish(&b, &stuck, 1, None, false).await.unwrap();
    publish(&b, &fine, 1, None, false).await.unwrap();

    let mut admin = redis::Client::open(stuck_owner.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(6000)
        .arg("ALL")
        .query_async(&mut admin)
        .await
        .unwrap();

    let (stuck_result, fine_result) = tokio::join!(
        publish(&b, &stuck, 2, None, false),
        publish(&b, &fine, 2, None, false)
    );
    assert!(
        matches!(
            stuck_result,
            Err(teamhub::broker::BrokerError::Unavailable(_))
        ),
        "the paused shard's team: {stuck_result:?}"
    );
    assert_eq!(fine_result.unwrap().offset, 2, "a team on another shard");
    let err = b
        .ping()
        .await
        .expect_err("readiness fails while a primary is silent");
    let port = stuck_owner.rsplit(':').next().unwrap();
    assert!(err.to_string().contains(port), "names the primary: {err}");

    let _: () = redis::cmd("CLIENT")
        .arg("UNPAUSE")
        .query_async(
            &mut redis::Client::open(stuck_owner.as_str())
                .unwrap()
                .get_multiplexed_async_connection()
                .await
                .unwrap(),
        )
        .await
        .unwrap();
    // Once it answers again its team publishes on (the timed-out call may have run).
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match publish(&b, &stuck, 3, None, false).await {
            Ok(p) => {
                assert!(p.offset >= 2);
                break;
            }
            Err(e) => assert!(tokio::time::Instant::now() < deadline, "still failing: {e}"),
        }
    }
    b.ping().await.unwrap();
}
