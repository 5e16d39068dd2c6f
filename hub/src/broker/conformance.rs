//! The conformance suite every [`Broker`] + [`History`] implementation must pass.
//!
//! Each check is a backend-agnostic async function taking the broker (as both traits)
//! and the receiver of the node channel the broker was built with. The memory backend
//! runs them as unit tests below; the Redis backend runs them in
//! `hub/tests/it/redis_broker.rs`. Backends must be built with
//! [`HISTORY_MAX_MESSAGES`] and an age limit of at least an hour, and each check
//! expects a fresh namespace (a new broker, or a new key prefix).
//!
//! Checks wait for events with a timeout (never a sleep); absence of an event is shown
//! by a later sentinel message arriving first.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use serde_json::value::RawValue;
use teamhub_presence::ConnKey;
use teamhub_protocol::{MessageType, TeamId, UserId};
use tokio::sync::mpsc::UnboundedReceiver;

use super::{Broker, BrokerError, BrokerEvent, History, Publication, Published};
use crate::event::{Event, EventKind, MessageParts};

/// The history size the suite's backends must be built with.
pub const HISTORY_MAX_MESSAGES: usize = 5;
/// How long to wait for an expected event.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

pub fn team(name: &str) -> TeamId {
    TeamId::new(name).unwrap()
}

/// Publishes a `test.msg` from user `u1` with `data` = `n`.
pub async fn publish(
    broker: &dyn Broker,
    team: &TeamId,
    n: u64,
    origin: Option<ConnKey>,
    echo: bool,
) -> Result<Published, BrokerError> {
    let ty = MessageType::new("test.msg").unwrap();
    let user = UserId::new("u1").unwrap();
    let data = RawValue::from_string(n.to_string()).unwrap();
    broker
        .publish(Publication {
            parts: MessageParts {
                team,
                ty: &ty,
                user: &user,
                data: &data,
            },
            origin,
            echo,
            messages_per_day: None,
        })
        .await
}

/// Waits for the next item of the broker's stream, failing the test after
/// [`EVENT_TIMEOUT`].
pub async fn next_broker_event(rx: &mut UnboundedReceiver<BrokerEvent>) -> BrokerEvent {
    match tokio::time::timeout(EVENT_TIMEOUT, rx.recv()).await {
        Ok(Some(ev)) => ev,
        Ok(None) => panic!("the broker's event channel closed"),
        Err(_) => panic!("no event within {EVENT_TIMEOUT:?}"),
    }
}

/// Waits for the next message event; a resync here fails the test.
pub async fn next_event(rx: &mut UnboundedReceiver<BrokerEvent>) -> Arc<Event> {
    match next_broker_event(rx).await {
        BrokerEvent::Message(ev) => ev,
        BrokerEvent::Resync(r) => panic!("unexpected resync {r:?}"),
    }
}

/// The offset of a message event.
pub fn offset_of(ev: &Event) -> u64 {
    match ev.kind {
        EventKind::Message { offset, .. } => offset,
        EventKind::Presence { .. } => panic!("expected a message event, got {ev:?}"),
    }
}

/// Waits for the next event and checks its team and offset.
pub async fn expect_message(
    rx: &mut UnboundedReceiver<BrokerEvent>,
    team: &TeamId,
    offset: u64,
) -> Arc<Event> {
    let ev = next_event(rx).await;
    assert_eq!(
        (&ev.team, offset_of(&ev)),
        (team, offset),
        "unexpected event {ev:?}"
    );
    ev
}

fn frame_offset(wire: &str) -> u64 {
    let v: serde_json::Value = serde_json::from_str(wire).unwrap();
    assert_eq!(v["op"], "message", "{wire}");
    v["offset"].as_u64().unwrap()
}

/// Offsets start at 1, grow by exactly 1 and are counted per team; events follow them.
pub async fn offsets_start_at_one_per_team(
    b: &dyn Broker,
    h: &dyn History,
    rx: &mut UnboundedReceiver<BrokerEvent>,
) {
    let (a, z) = (team("conf-a"), team("conf-z"));
    assert_eq!(
        h.position(&a).await.unwrap().offset,
        0,
        "before any message"
    );
    b.subscribe(&a).await.unwrap();
    b.subscribe(&z).await.unwrap();
    for expected in 1..=3 {
        assert_eq!(
            publish(b, &a, expected, None, false).await.unwrap().offset,
            expected
        );
    }
    for expected in 1..=2 {
        assert_eq!(
            publish(b, &z, expected, None, false).await.unwrap().offset,
            expected
        );
    }
    for offset in 1..=3 {
        let ev = expect_message(rx, &a, offset).await;
        assert_eq!(
            frame_offset(ev.wire().as_str()),
            offset,
            "frame and event agree"
        );
    }
    for offset in 1..=2 {
        expect_message(rx, &z, offset).await;
    }
    assert_eq!(h.position(&a).await.unwrap().offset, 3);
    assert_eq!(h.position(&z).await.unwrap().offset, 2);
}

/// Concurrent publishers get distinct, gapless offsets and the subscriber sees every
/// message once, in offset order.
pub async fn concurrent_publishers_keep_order(
    b: &dyn Broker,
    h: &dyn History,
    rx: &mut UnboundedReceiver<BrokerEvent>,
) {
    const PUBLISHERS: u64 = 4;
    const EACH: u64 = 25;
    let t = team("conf-concurrent");
    b.subscribe(&t).await.unwrap();
    let t_ref = &t;
    let publishers = (0..PUBLISHERS).map(|p| async move {
        let mut offsets = Vec::new();
        for i in 0..EACH {
            offsets.push(
                publish(b, t_ref, p * EACH + i, None, false)
                    .await
                    .unwrap()
                    .offset,
            );
        }
        offsets
    });
    let mut offsets: Vec<u64> = join_all(publishers).await.concat();
    offsets.sort_unstable();
    let total = PUBLISHERS * EACH;
    assert_eq!(offsets, (1..=total).collect::<Vec<_>>());
    for offset in 1..=total {
        expect_message(rx, &t, offset).await;
    }
    // No duplicate is pending: the next event is the sentinel.
    publish(b, &t, 0, None, false).await.unwrap();
    expect_message(rx, &t, total + 1).await;
    assert_eq!(h.position(&t).await.unwrap().offset, total + 1);
}

/// Publishes enqueued one after the other, before any is awaited, take offsets in
/// that order and reach subscribers in that order: what lets a session keep many
/// publishes in flight.
pub async fn enqueued_publishes_keep_their_order(
    b: &dyn Broker,
    _h: &dyn History,
    rx: &mut UnboundedReceiver<BrokerEvent>,
) {
    const N: u64 = 200;
    let t = team("conf-enqueued");
    b.subscribe(&t).await.unwrap();
    let ty = MessageType::new("test.msg").unwrap();
    let user = UserId::new("u1").unwrap();
    let pending: Vec<_> = (1..=N)
        .map(|n| {
            let data = RawValue::from_string(n.to_string()).unwrap();
            b.enqueue(Publication {
                parts: MessageParts {
                    team: &t,
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
    let offsets: Vec<u64> = join_all(pending)
        .await
        .into_iter()
        .map(|r| r.unwrap().offset)
        .collect();
    assert_eq!(
        offsets,
        (1..=N).collect::<Vec<_>>(),
        "offsets in enqueue order"
    );
    for n in 1..=N {
        let ev = expect_message(rx, &t, n).await;
        let frame: serde_json::Value = serde_json::from_str(ev.wire().as_str()).unwrap();
        assert_eq!(
            frame["data"], n,
            "message {n} carries what was enqueued {n}th"
        );
    }
}

/// A daily quota is exact: of publishes enqueued at once, exactly `limit` pass, with
/// offsets 1..=limit; the others are refused (`QuotaExceeded`) without spending an
/// offset or reaching anyone, and a publish without a quota takes the next offset.
pub async fn daily_quota_is_exact_and_spends_nothing(
    b: &dyn Broker,
    h: &dyn History,
    rx: &mut UnboundedReceiver<BrokerEvent>,
) {
    const LIMIT: u64 = 6;
    let t = team("conf-quota");
    b.subscribe(&t).await.unwrap();
    let ty = MessageType::new("test.msg").unwrap();
    let user = UserId::new("u1").unwrap();
    let data = RawValue::from_string("1".into()).unwrap();
    let publication = |quota: Option<u64>| Publication {
        parts: MessageParts {
            team: &t,
            ty: &ty,
            user: &user,
            data: &data,
        },
        origin: None,
        echo: false,
        messages_per_day: quota,
    };
    let pending: Vec<_> = (0..10)
        .map(|_| b.enqueue(publication(Some(LIMIT))))
        .collect();
    let results = join_all(pending).await;
    let offsets: Vec<u64> = results
        .iter()
        .filter_map(|r| r.as_ref().ok().map(|p| p.offset))
        .collect();
    assert_eq!(offsets, (1..=LIMIT).collect::<Vec<_>>());
    assert!(
        results[LIMIT as usize..]
            .iter()
            .all(|r| matches!(r, Err(BrokerError::QuotaExceeded))),
        "{results:?}"
    );
    assert_eq!(
        h.position(&t).await.unwrap().offset,
        LIMIT,
        "no offset spent"
    );
    assert!(matches!(
        b.publish(publication(Some(LIMIT))).await,
        Err(BrokerError::QuotaExceeded)
    ));
    assert_eq!(
        b.publish(publication(None)).await.unwrap().offset,
        LIMIT + 1
    );
    assert!(
        matches!(
            b.publish(publication(Some(LIMIT + 2))).await,
            Ok(Published { offset, .. }) if offset == LIMIT + 2
        ),
        "a larger limit lets one more through: unlimited ones were not counted"
    );
    for n in 1..=LIMIT + 2 {
        expect_message(rx, &t, n).await;
    }
}

/// History holds the last [`HISTORY_MAX_MESSAGES`], oldest first, reports evictions
/// through `complete`, and honours `limit`.
pub async fn history_is_bounded(
    b: &dyn Broker,
    h: &dyn History,
    _rx: &mut UnboundedReceiver<BrokerEvent>,
) {
    let t = team("conf-history");
    let empty = h.read(&t, 0, 100).await.unwrap();
    assert!(empty.complete && empty.messages.is_empty() && empty.position.offset == 0);
    let total = HISTORY_MAX_MESSAGES as u64 + 3;
    for n in 1..=total {
        publish(b, &t, n, None, false).await.unwrap();
    }
    let oldest = total - HISTORY_MAX_MESSAGES as u64 + 1;
    let offsets = |r: &super::HistoryRead| {
        r.messages
            .iter()
            .map(|m| frame_offset(m.as_str()))
            .collect::<Vec<_>>()
    };
    let r = h.read(&t, oldest - 1, 100).await.unwrap();
    assert!(r.complete, "everything after {} is held", oldest - 1);
    assert_eq!(offsets(&r), (oldest..=total).collect::<Vec<_>>());
    assert_eq!(r.position.offset, total);
    let r = h.read(&t, oldest - 2, 100).await.unwrap();
    assert!(!r.complete, "offset {} was evicted", oldest - 1);
    assert_eq!(offsets(&r), (oldest..=total).collect::<Vec<_>>());
    let r = h.read(&t, 0, 100).await.unwrap();
    assert!(!r.complete);
    let r = h.read(&t, oldest, 2).await.unwrap();
    assert!(r.complete);
    assert_eq!(offsets(&r), vec![oldest + 1, oldest + 2], "limit applies");
    let r = h.read(&t, total, 100).await.unwrap();
    assert!(
        r.complete && r.messages.is_empty(),
        "nothing after the head"
    );
}

/// A team has one epoch, stable across publishes and shared by position and read, and
/// a recovery from it succeeds.
pub async fn epochs_are_stable(
    b: &dyn Broker,
    h: &dyn History,
    _rx: &mut UnboundedReceiver<BrokerEvent>,
) {
    let t = team("conf-epoch");
    let before = h.position(&t).await.unwrap();
    assert!(!before.epoch.is_empty());
    publish(b, &t, 1, None, false).await.unwrap();
    publish(b, &t, 2, None, false).await.unwrap();
    let after = h.position(&t).await.unwrap();
    assert_eq!(after.epoch, before.epoch, "publishing keeps the epoch");
    let read = h.read(&t, 1, 100).await.unwrap();
    assert_eq!(read.position, after);
    let since = teamhub_protocol::Since {
        epoch: before.epoch.clone(),
        offset: 1,
    };
    let r = super::recover(&since, read);
    assert!(r.recovered && r.missed.len() == 1);
    let since = teamhub_protocol::Since {
        epoch: format!("{}x", before.epoch),
        offset: 1,
    };
    let r = super::recover(&since, h.read(&t, 1, 100).await.unwrap());
    assert!(!r.recovered, "another epoch never recovers");
}

/// Events carry the publishing connection and the echo flag, and the frame history holds.
pub async fn events_carry_origin_and_echo(
    b: &dyn Broker,
    h: &dyn History,
    rx: &mut UnboundedReceiver<BrokerEvent>,
) {
    let t = team("conf-origin");
    b.subscribe(&t).await.unwrap();
    let origin = ConnKey {
        node: "node-1".into(),
        conn: 7,
    };
    publish(b, &t, 1, Some(origin.clone()), true).await.unwrap();
    publish(b, &t, 2, None, false).await.unwrap();
    let ev = expect_message(rx, &t, 1).await;
    assert_eq!(ev.origin.as_ref(), Some(&origin));
    assert_eq!(
        ev.kind,
        EventKind::Message {
            offset: 1,
            echo: true
        }
    );
    assert_eq!(
        ev.seed_frames()[0].as_str(),
        r#"{"type":"test.msg","user_id":"u1","data":1}"#
    );
    let ev2 = expect_message(rx, &t, 2).await;
    assert_eq!(ev2.origin, None);
    assert_eq!(
        ev2.kind,
        EventKind::Message {
            offset: 2,
            echo: false
        }
    );
    let held = h.read(&t, 0, 100).await.unwrap();
    assert_eq!(held.messages[0].as_str(), ev.wire().as_str());
    assert_eq!(held.messages[1].as_str(), ev2.wire().as_str());
}

/// After `unsubscribe`, the team's messages stop reaching this node while other teams'
/// still arrive. `scoped` is false for a single-node backend, which hands every team to
/// its node (subscriptions are no-ops; the registry has no receiver for the team), and
/// then only the other team's delivery is checked.
pub async fn unsubscribe_stops_delivery(
    b: &dyn Broker,
    _h: &dyn History,
    rx: &mut UnboundedReceiver<BrokerEvent>,
    scoped: bool,
) {
    let (gone, kept) = (team("conf-gone"), team("conf-kept"));
    b.subscribe(&gone).await.unwrap();
    b.subscribe(&kept).await.unwrap();
    publish(b, &gone, 1, None, false).await.unwrap();
    expect_message(rx, &gone, 1).await;
    b.unsubscribe(&gone).await.unwrap();
    assert_eq!(publish(b, &gone, 2, None, false).await.unwrap().offset, 2);
    publish(b, &kept, 1, None, false).await.unwrap();
    if !scoped {
        expect_message(rx, &gone, 2).await;
    }
    // Published after `gone`'s message, so it would have arrived first.
    expect_message(rx, &kept, 1).await;
    // Subscribing again resumes delivery with the next offset.
    b.subscribe(&gone).await.unwrap();
    publish(b, &gone, 3, None, false).await.unwrap();
    expect_message(rx, &gone, 3).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::memory::{HistoryLimits, MemoryBroker};

    fn memory() -> (MemoryBroker, UnboundedReceiver<BrokerEvent>) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let limits = HistoryLimits {
            max_messages: HISTORY_MAX_MESSAGES,
            max_age: Duration::from_secs(3600),
        };
        (MemoryBroker::new(tx, limits), rx)
    }

    #[tokio::test]
    async fn memory_offsets_start_at_one_per_team() {
        let (b, mut rx) = memory();
        offsets_start_at_one_per_team(&b, &b, &mut rx).await;
    }

    #[tokio::test]
    async fn memory_concurrent_publishers_keep_order() {
        let (b, mut rx) = memory();
        concurrent_publishers_keep_order(&b, &b, &mut rx).await;
    }

    #[tokio::test]
    async fn memory_enqueued_publishes_keep_their_order() {
        let (b, mut rx) = memory();
        enqueued_publishes_keep_their_order(&b, &b, &mut rx).await;
    }

    #[tokio::test]
    async fn memory_daily_quota_is_exact_and_spends_nothing() {
        let (b, mut rx) = memory();
        daily_quota_is_exact_and_spends_nothing(&b, &b, &mut rx).await;
    }

    #[tokio::test]
    async fn memory_history_is_bounded() {
        let (b, mut rx) = memory();
        history_is_bounded(&b, &b, &mut rx).await;
    }

    #[tokio::test]
    async fn memory_epochs_are_stable() {
        let (b, mut rx) = memory();
        epochs_are_stable(&b, &b, &mut rx).await;
    }

    #[tokio::test]
    async fn memory_events_carry_origin_and_echo() {
        let (b, mut rx) = memory();
        events_carry_origin_and_echo(&b, &b, &mut rx).await;
    }

    #[tokio::test]
    async fn memory_unsubscribe_stops_delivery() {
        let (b, mut rx) = memory();
        unsubscribe_stops_delivery(&b, &b, &mut rx, false).await;
    }
}
