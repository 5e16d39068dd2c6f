//! The conformance suite every [`QuotaStore`] must pass. The memory store runs it as
//! unit tests (`memory.rs`); the Redis store in `hub/tests/it/quotas.rs`. Each check
//! expects a fresh namespace (a new store, or a new key prefix).

use std::sync::Arc;

use futures_util::future::join_all;
use teamhub_presence::ConnKey;
use teamhub_protocol::TeamId;

use super::{QuotaStore, Taken};

pub fn conn(node: &str, n: u64) -> ConnKey {
    ConnKey {
        node: node.into(),
        conn: n,
    }
}

fn team(name: &str) -> TeamId {
    TeamId::new(name).unwrap()
}

/// The cap at its boundary, idempotent takes and releases, teams apart.
pub async fn takes_up_to_the_cap(store: &dyn QuotaStore) {
    let (t, other) = (team("t"), team("other"));
    let max = Some(2);
    assert_eq!(
        store.take(&t, &conn("a", 1), max).await.unwrap(),
        Taken::Yes(1)
    );
    assert_eq!(
        store.take(&t, &conn("a", 1), max).await.unwrap(),
        Taken::Yes(1),
        "the same connection again is still one"
    );
    assert_eq!(
        store.take(&t, &conn("b", 1), max).await.unwrap(),
        Taken::Yes(2)
    );
    assert_eq!(
        store.take(&t, &conn("b", 2), max).await.unwrap(),
        Taken::Full
    );
    assert_eq!(
        store.take(&t, &conn("a", 1), max).await.unwrap(),
        Taken::Yes(2),
        "a connection already counted is never refused"
    );
    assert_eq!(
        store.count(&t).await.unwrap(),
        2,
        "a refusal counts nothing"
    );
    assert_eq!(
        store.take(&other, &conn("b", 2), max).await.unwrap(),
        Taken::Yes(1),
        "per team"
    );
    store.release(&t, &conn("a", 1)).await.unwrap();
    store.release(&t, &conn("a", 1)).await.unwrap();
    store.release(&t, &conn("z", 9)).await.unwrap();
    assert_eq!(store.count(&t).await.unwrap(), 1);
    assert_eq!(
        store.take(&t, &conn("b", 2), max).await.unwrap(),
        Taken::Yes(2)
    );
    assert_eq!(
        store.take(&t, &conn("c", 1), None).await.unwrap(),
        Taken::Yes(3),
        "no cap"
    );
    assert_eq!(store.count(&team("never")).await.unwrap(), 0);
}

/// Many takes at once from several nodes: exactly `max` win.
pub async fn concurrent_takes_never_pass_the_cap(store: &dyn QuotaStore) {
    let t = team("race");
    let takes = (0..40u64).map(|i| {
        let t = t.clone();
        async move {
            store
                .take(&t, &conn(["a", "b", "c"][(i % 3) as usize], i), Some(7))
                .await
                .unwrap()
        }
    });
    let results = join_all(takes).await;
    let won = results
        .iter()
        .filter(|r| matches!(r, Taken::Yes(_)))
        .count();
    assert_eq!(won, 7);
    let mut counts: Vec<u64> = results
        .iter()
        .filter_map(|r| match r {
            Taken::Yes(n) => Some(*n),
            Taken::Full => None,
        })
        .collect();
    counts.sort_unstable();
    assert_eq!(
        counts,
        (1..=7).collect::<Vec<_>>(),
        "each count answered once"
    );
    assert_eq!(store.count(&t).await.unwrap(), 7);
}

/// For stores shared by nodes: what one node takes, another sees.
pub async fn nodes_share_the_count(a: Arc<dyn QuotaStore>, b: Arc<dyn QuotaStore>) {
    let t = team("shared");
    assert_eq!(
        a.take(&t, &conn("a", 1), Some(2)).await.unwrap(),
        Taken::Yes(1)
    );
    assert_eq!(
        b.take(&t, &conn("b", 1), Some(2)).await.unwrap(),
        Taken::Yes(2)
    );
    assert_eq!(
        a.take(&t, &conn("a", 2), Some(2)).await.unwrap(),
        Taken::Full
    );
    b.release(&t, &conn("b", 1)).await.unwrap();
    assert_eq!(
        a.take(&t, &conn("a", 2), Some(2)).await.unwrap(),
        Taken::Yes(2)
    );
}
