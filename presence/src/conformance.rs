//! The contract every [`PresenceStore`] must meet, as runnable checks.
//!
//! Backend-agnostic: each check takes a [`Subject`] (a store and the receiver of the
//! events it emits) and panics with a message when the store breaks the contract. The
//! in-process store runs them in `tests/memory.rs`; a Redis store runs the same ones.

use std::sync::Arc;
use std::time::Duration;

use teamhub_protocol::{TeamId, UserId};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::{ConnInfo, ConnKey, PresenceEvent, PresenceStore};

/// A store under test and the events it emits.
pub struct Subject {
    pub store: Arc<dyn PresenceStore>,
    pub events: UnboundedReceiver<PresenceEvent>,
}

const WAIT: Duration = Duration::from_secs(10);

fn team(name: &str) -> TeamId {
    TeamId::new(name).expect("valid team id")
}

fn conn(node: &str, n: u64, user: &str) -> ConnInfo {
    ConnInfo {
        key: ConnKey {
            node: node.into(),
            conn: n,
        },
        user: UserId::new(user).expect("valid user id"),
        name: Some(format!("{user} name")),
        meta: None,
    }
}

impl Subject {
    async fn next_event(&mut self) -> PresenceEvent {
        tokio::time::timeout(WAIT, self.events.recv())
            .await
            .expect("a presence event in time")
            .expect("the event channel is open")
    }

    fn assert_no_event(&mut self, why: &str) {
        if let Ok(ev) = self.events.try_recv() {
            panic!("{why}: unexpected event {ev:?}");
        }
    }
}

/// A user joins with the first connection and leaves with the last; each change is one
/// event, with its origin, and the snapshot agrees.
pub async fn first_connection_joins_last_leaves(s: &mut Subject) {
    let t = team("c1");
    s.store.host(&t).await.unwrap();
    let change = s.store.join(&t, conn("n1", 1, "ann")).await.unwrap();
    assert_eq!(change.joined.as_ref().map(|e| e.user.as_str()), Some("ann"));
    let ev = s.next_event().await;
    assert_eq!(
        (ev.version, ev.joins.len(), ev.leaves.len()),
        (change.version, 1, 0)
    );
    assert_eq!(
        ev.origin,
        ConnKey {
            node: "n1".into(),
            conn: 1
        }
    );

    let change = s.store.join(&t, conn("n2", 7, "ann")).await.unwrap();
    assert!(change.joined.is_none(), "a second connection is not a join");
    let snap = s.store.snapshot(&t).await.unwrap();
    assert_eq!(
        (snap.entries.len(), snap.entries[0].conns),
        (1, 2),
        "conns counts every node"
    );

    let change = s
        .store
        .leave(
            &t,
            &ConnKey {
                node: "n1".into(),
                conn: 1,
            },
        )
        .await
        .unwrap();
    assert!(
        change.left.is_none(),
        "one of two connections leaving is not a leave"
    );
    s.assert_no_event("no user-level change happened");
    let change = s
        .store
        .leave(
            &t,
            &ConnKey {
                node: "n2".into(),
                conn: 7,
            },
        )
        .await
        .unwrap();
    assert_eq!(change.left.as_ref().map(|e| e.user.as_str()), Some("ann"));
    let ev = s.next_event().await;
    assert_eq!((ev.joins.len(), ev.leaves.len()), (0, 1));
    assert!(s.store.snapshot(&t).await.unwrap().entries.is_empty());
}

/// Joining an existing key or leaving an unknown one changes nothing and emits nothing.
pub async fn retries_are_harmless(s: &mut Subject) {
    let t = team("c2");
    s.store.host(&t).await.unwrap();
    s.store.host(&t).await.expect("hosting twice is harmless");
    s.store.join(&t, conn("n1", 1, "ann")).await.unwrap();
    s.next_event().await;
    let again = s.store.join(&t, conn("n1", 1, "ann")).await.unwrap();
    assert!(again.joined.is_none());
    assert_eq!(s.store.snapshot(&t).await.unwrap().entries[0].conns, 1);
    let unknown = s
        .store
        .leave(
            &t,
            &ConnKey {
                node: "n1".into(),
                conn: 99,
            },
        )
        .await
        .unwrap();
    assert!(unknown.left.is_none());
    let other_team = s
        .store
        .leave(
            &team("never-seen"),
            &ConnKey {
                node: "n1".into(),
                conn: 1,
            },
        )
        .await
        .unwrap();
    assert!(other_team.left.is_none());
    s.assert_no_event("retries emit nothing");
}

/// Under concurrent joins and leaves, events come in strictly increasing version order,
/// one per user-level change, and the last version equals the snapshot's.
pub async fn events_are_ordered_under_concurrency(s: &mut Subject) {
    let t = team("c3");
    s.store.host(&t).await.unwrap();
    let mut tasks = Vec::new();
    for u in 0..8u64 {
        let store = s.store.clone();
        let t = t.clone();
        tasks.push(tokio::spawn(async move {
            let user = format!("u{u}");
            for round in 0..5u64 {
                let key = ConnKey {
                    node: "n1".into(),
                    conn: u * 100 + round,
                };
                store
                    .join(&t, conn("n1", u * 100 + round, &user))
                    .await
                    .unwrap();
                store.leave(&t, &key).await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    // 8 users x 5 rounds x (join + leave) user-level changes.
    let mut last = 0;
    for _ in 0..80 {
        let ev = s.next_event().await;
        assert!(
            ev.version > last,
            "versions must increase: {} after {last}",
            ev.version
        );
        last = ev.version;
    }
    s.assert_no_event("exactly one event per change");
    let snap = s.store.snapshot(&t).await.unwrap();
    assert!(snap.entries.is_empty());
    assert_eq!(snap.version, last);
}

/// Teams do not see each other's users; the snapshot is sorted and carries name and meta.
pub async fn teams_are_isolated_and_snapshots_sorted(s: &mut Subject) {
    let (a, b) = (team("c4-a"), team("c4-b"));
    s.store.host(&a).await.unwrap();
    s.store.host(&b).await.unwrap();
    let mut zed = conn("n1", 1, "zed");
    zed.meta = serde_json::json!({"status": "away"}).as_object().cloned();
    s.store.join(&a, zed).await.unwrap();
    s.store.join(&a, conn("n1", 2, "ann")).await.unwrap();
    s.store.join(&b, conn("n1", 3, "bob")).await.unwrap();
    let snap = s.store.snapshot(&a).await.unwrap();
    let users: Vec<_> = snap.entries.iter().map(|e| e.user.as_str()).collect();
    assert_eq!(users, ["ann", "zed"]);
    assert_eq!(snap.entries[1].name.as_deref(), Some("zed name"));
    assert_eq!(snap.entries[1].meta.as_ref().unwrap()["status"], "away");
    assert_eq!(s.store.snapshot(&b).await.unwrap().entries.len(), 1);
    assert_eq!(
        s.store
            .snapshot(&team("c4-empty"))
            .await
            .unwrap()
            .entries
            .len(),
        0
    );
}

/// The team's first user makes it occupied and its last user leaving makes it vacated,
/// in the change and in its event; changes in between do neither.
pub async fn occupancy_follows_the_first_and_last_user(s: &mut Subject) {
    use crate::Occupancy;
    let t = team("c9");
    s.store.host(&t).await.unwrap();
    let key = |node: &str, n: u64| ConnKey {
        node: node.into(),
        conn: n,
    };
    let change = s.store.join(&t, conn("n1", 1, "ann")).await.unwrap();
    assert_eq!(change.occupancy, Some(Occupancy::Occupied));
    assert_eq!(s.next_event().await.occupancy, Some(Occupancy::Occupied));
    let change = s.store.join(&t, conn("n2", 2, "bob")).await.unwrap();
    assert_eq!(change.occupancy, None, "a second user");
    assert_eq!(s.next_event().await.occupancy, None);
    let change = s.store.join(&t, conn("n2", 3, "bob")).await.unwrap();
    assert_eq!(change.occupancy, None, "a second connection");
    let change = s.store.leave(&t, &key("n1", 1)).await.unwrap();
    assert_eq!(change.occupancy, None, "bob is still there");
    assert_eq!(s.next_event().await.occupancy, None);
    let change = s.store.leave(&t, &key("n2", 2)).await.unwrap();
    assert_eq!(
        change.occupancy, None,
        "bob's other connection is still there"
    );
    let change = s.store.leave(&t, &key("n2", 3)).await.unwrap();
    assert_eq!(change.occupancy, Some(Occupancy::Vacated));
    let ev = s.next_event().await;
    assert_eq!(
        (ev.version, ev.occupancy),
        (change.version, Some(Occupancy::Vacated))
    );
    let change = s.store.join(&t, conn("n1", 4, "cy")).await.unwrap();
    assert_eq!(
        change.occupancy,
        Some(Occupancy::Occupied),
        "occupied again"
    );
    assert_eq!(s.next_event().await.occupancy, Some(Occupancy::Occupied));
    s.store.leave(&t, &key("n1", 4)).await.unwrap();
    assert_eq!(s.next_event().await.occupancy, Some(Occupancy::Vacated));
}
