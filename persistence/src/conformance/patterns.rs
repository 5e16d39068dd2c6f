//! The [`PatternStore`] contract as runnable checks.

use std::sync::Arc;

use serde_json::json;
use serde_json::value::{RawValue, to_raw_value};
use teamhub_protocol::{PatternName, TeamId, UserId};

use crate::patterns::{Expect, Pattern, PatternError, PatternStore};

fn team(s: &str) -> TeamId {
    TeamId::new(s).unwrap()
}
fn name(s: &str) -> PatternName {
    PatternName::new(s).unwrap()
}
fn user(s: &str) -> UserId {
    UserId::new(s).unwrap()
}
fn content(v: serde_json::Value) -> Box<RawValue> {
    to_raw_value(&v).unwrap()
}
fn json_of(p: &Pattern) -> serde_json::Value {
    serde_json::from_str(p.content.get()).unwrap()
}

/// Every check, in order, on one store.
pub async fn run_all(store: Arc<dyn PatternStore>) {
    create_update_delete(store.as_ref()).await;
    preconditions(store.as_ref()).await;
    feed_and_versions(store.as_ref()).await;
    teams_are_isolated(store.as_ref()).await;
    racing_writers_one_wins(store.clone()).await;
    racing_creators_one_wins(store).await;
}

pub async fn create_update_delete(s: &dyn PatternStore) {
    let (t, n, u) = (team("cud"), name("p.1"), user("ann"));
    assert!(s.get(&t, &n).await.unwrap().is_none());
    let created = s
        .put(&t, &n, &content(json!({"a": [1, 2]})), Expect::Absent, &u)
        .await
        .unwrap();
    assert_eq!((created.version, created.deleted), (1, false));
    assert_eq!(json_of(&created), json!({"a": [1, 2]}));
    assert_eq!(s.get(&t, &n).await.unwrap().unwrap(), created);
    let updated = s
        .put(
            &t,
            &n,
            &content(json!("v2")),
            Expect::Version(1),
            &user("bob"),
        )
        .await
        .unwrap();
    assert_eq!(updated.version, 2);
    assert_eq!(updated.updated_by, user("bob"));
    assert_eq!(s.get(&t, &n).await.unwrap().unwrap(), updated);
    let tomb = s.delete(&t, &n, 2, &u).await.unwrap();
    assert_eq!((tomb.version, tomb.deleted), (3, true));
    assert_eq!(json_of(&tomb), serde_json::Value::Null);
    assert_eq!(s.get(&t, &n).await.unwrap().unwrap(), tomb);
    // A tombstoned name can be created again, with a new version.
    let again = s
        .put(&t, &n, &content(json!(3)), Expect::Absent, &u)
        .await
        .unwrap();
    assert_eq!((again.version, again.deleted), (4, false));
}

pub async fn preconditions(s: &dyn PatternStore) {
    let (t, n, u) = (team("pre"), name("p"), user("ann"));
    let missing = s
        .put(&t, &n, &content(json!(1)), Expect::Version(1), &u)
        .await;
    assert!(
        matches!(missing, Err(PatternError::NotFound)),
        "{missing:?}"
    );
    assert!(matches!(
        s.delete(&t, &n, 1, &u).await,
        Err(PatternError::NotFound)
    ));
    let p = s
        .put(&t, &n, &content(json!(1)), Expect::Absent, &u)
        .await
        .unwrap();
    match s.put(&t, &n, &content(json!(2)), Expect::Absent, &u).await {
        Err(PatternError::Conflict(cur)) => assert_eq!(*cur, p),
        other => panic!("create over an existing pattern: {other:?}"),
    }
    match s
        .put(&t, &n, &content(json!(2)), Expect::Version(7), &u)
        .await
    {
        Err(PatternError::Conflict(cur)) => assert_eq!(*cur, p),
        other => panic!("stale update: {other:?}"),
    }
    match s.delete(&t, &n, 7, &u).await {
        Err(PatternError::Conflict(cur)) => assert_eq!(*cur, p),
        other => panic!("stale delete: {other:?}"),
    }
    let tomb = s.delete(&t, &n, p.version, &u).await.unwrap();
    // Updating a deleted pattern conflicts, showing the tombstone; deleting it again is
    // not found.
    match s
        .put(&t, &n, &content(json!(2)), Expect::Version(p.version), &u)
        .await
    {
        Err(PatternError::Conflict(cur)) => assert_eq!(*cur, tomb),
        other => panic!("update after delete: {other:?}"),
    }
    assert!(matches!(
        s.delete(&t, &n, tomb.version, &u).await,
        Err(PatternError::NotFound)
    ));
    // Failed writes did not take versions.
    assert_eq!(s.changes(&t, 0).await.unwrap().version, tomb.version);
    assert_eq!(tomb.version, 2);
}

pub async fn feed_and_versions(s: &dyn PatternStore) {
    let (t, u) = (team("feed"), user("ann"));
    let empty = s.changes(&t, 0).await.unwrap();
    assert_eq!((empty.version, empty.patterns.len()), (0, 0));
    let a = s
        .put(&t, &name("a"), &content(json!(1)), Expect::Absent, &u)
        .await
        .unwrap();
    let b = s
        .put(&t, &name("b"), &content(json!(2)), Expect::Absent, &u)
        .await
        .unwrap();
    let a2 = s
        .put(
            &t,
            &name("a"),
            &content(json!(3)),
            Expect::Version(a.version),
            &u,
        )
        .await
        .unwrap();
    let b_gone = s.delete(&t, &name("b"), b.version, &u).await.unwrap();
    assert_eq!(
        [a.version, b.version, a2.version, b_gone.version],
        [1, 2, 3, 4]
    );
    let all = s.changes(&t, 0).await.unwrap();
    assert_eq!(all.version, 4);
    assert_eq!(
        all.patterns,
        vec![a2.clone(), b_gone.clone()],
        "one entry per name, oldest change first"
    );
    let since3 = s.changes(&t, 3).await.unwrap();
    assert_eq!((since3.version, since3.patterns), (4, vec![b_gone]));
    let none = s.changes(&t, 4).await.unwrap();
    assert_eq!((none.version, none.patterns.len()), (4, 0));
    let future = s.changes(&t, u64::MAX).await.unwrap();
    assert_eq!((future.version, future.patterns.len()), (4, 0));
}

pub async fn teams_are_isolated(s: &dyn PatternStore) {
    let u = user("ann");
    let n = name("same");
    s.put(&team("iso-1"), &n, &content(json!(1)), Expect::Absent, &u)
        .await
        .unwrap();
    let other = s
        .put(&team("iso-2"), &n, &content(json!(2)), Expect::Absent, &u)
        .await
        .unwrap();
    assert_eq!(other.version, 1, "each team has its own counter");
    assert_eq!(
        s.changes(&team("iso-2"), 0).await.unwrap().patterns,
        vec![other]
    );
    assert!(s.get(&team("iso-3"), &n).await.unwrap().is_none());
}

const RACERS: usize = 8;

/// Writers updating from the same version: exactly one wins, the others see its write.
pub async fn racing_writers_one_wins(s: Arc<dyn PatternStore>) {
    let (t, n) = (team("race"), name("hot"));
    let base = s
        .put(&t, &n, &content(json!(0)), Expect::Absent, &user("ann"))
        .await
        .unwrap();
    let tasks: Vec<_> = (0..RACERS)
        .map(|i| {
            let (s, t, n) = (s.clone(), t.clone(), n.clone());
            tokio::spawn(async move {
                s.put(
                    &t,
                    &n,
                    &content(json!(i)),
                    Expect::Version(base.version),
                    &user(&format!("w{i}")),
                )
                .await
            })
        })
        .collect();
    let mut won = Vec::new();
    let mut conflicts = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            Ok(p) => won.push(p),
            Err(PatternError::Conflict(cur)) => conflicts.push(*cur),
            Err(e) => panic!("a racing writer failed: {e}"),
        }
    }
    assert_eq!(won.len(), 1, "exactly one writer wins: {won:?}");
    let winner = &won[0];
    assert_eq!(winner.version, base.version + 1);
    assert_eq!(conflicts.len(), RACERS - 1);
    assert!(
        conflicts.iter().all(|c| c == winner),
        "losers see the winner"
    );
    assert_eq!(s.get(&t, &n).await.unwrap().unwrap(), *winner);
    assert_eq!(s.changes(&t, 0).await.unwrap().version, winner.version);
}

/// Two stores on one database (two nodes' pools, or two processes on one SQLite
/// file): a writer on each races for the same version, round after round, and exactly
/// one of each pair wins while the other sees a conflict.
pub async fn racing_writers_across_stores(a: Arc<dyn PatternStore>, b: Arc<dyn PatternStore>) {
    let (t, n, u) = (team("x"), name("p"), user("u"));
    let one = content(json!(1));
    let mut version = a
        .put(&t, &n, &one, Expect::Absent, &u)
        .await
        .unwrap()
        .version;
    for _round in 0..20 {
        let racers = [a.clone(), b.clone()].map(|s| {
            let (t, n, u, c) = (t.clone(), n.clone(), u.clone(), one.clone());
            tokio::spawn(async move { s.put(&t, &n, &c, Expect::Version(version), &u).await })
        });
        let mut results = Vec::new();
        for racer in racers {
            results.push(racer.await.unwrap());
        }
        let winners: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(winners.len(), 1, "{results:?}");
        assert!(
            results
                .iter()
                .any(|r| matches!(r, Err(PatternError::Conflict(_))))
        );
        version = winners[0].version;
    }
}

/// Creators of the same new name: exactly one wins.
pub async fn racing_creators_one_wins(s: Arc<dyn PatternStore>) {
    let (t, n) = (team("race-create"), name("new"));
    let tasks: Vec<_> = (0..RACERS)
        .map(|i| {
            let (s, t, n) = (s.clone(), t.clone(), n.clone());
            tokio::spawn(async move {
                s.put(&t, &n, &content(json!(i)), Expect::Absent, &user("c"))
                    .await
            })
        })
        .collect();
    let mut won = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(p) => {
                won += 1;
                assert_eq!(p.version, 1);
            }
            Err(PatternError::Conflict(cur)) => assert_eq!(cur.version, 1),
            Err(e) => panic!("a racing creator failed: {e}"),
        }
    }
    assert_eq!(won, 1, "exactly one creator wins");
}
