//! The [`UsageStore`] contract as runnable checks.

use std::sync::Arc;

use teamhub_protocol::TeamId;
use time::macros::date;
use uuid::Uuid;

use crate::usage::{UsageCounts, UsageDay, UsageDelta, UsageStore};

fn counts(messages: u64, api_calls: u64, peak: u64, webhooks: u64) -> UsageCounts {
    UsageCounts {
        messages,
        api_calls,
        peak_connections: peak,
        webhook_deliveries: webhooks,
    }
}

fn delta(team: &TeamId, day: time::Date, c: UsageCounts) -> UsageDelta {
    UsageDelta {
        team: team.clone(),
        day,
        counts: c,
    }
}

pub async fn run_all(s: &dyn UsageStore) {
    let (t, u) = (TeamId::new("t").unwrap(), TeamId::new("u").unwrap());
    let (d1, d2, d3) = (
        date!(2026 - 03 - 30),
        date!(2026 - 03 - 31),
        date!(2026 - 04 - 01),
    );
    assert!(s.days(&t, d1, d3).await.unwrap().is_empty());

    let first = Uuid::now_v7();
    let batch = vec![
        delta(&t, d1, counts(3, 1, 2, 0)),
        delta(&t, d3, counts(1, 0, 1, 4)),
        delta(&u, d1, counts(9, 9, 9, 9)),
    ];
    s.add(first, "node-a", &batch).await.unwrap();
    // The same batch again (a retry) counts nothing.
    s.add(first, "node-a", &batch).await.unwrap();
    // Another node's batch adds up; peaks take the larger.
    s.add(
        Uuid::now_v7(),
        "node-b",
        &[
            delta(&t, d1, counts(2, 5, 1, 0)),
            delta(&t, d2, counts(0, 1, 0, 0)),
        ],
    )
    .await
    .unwrap();
    s.add(
        Uuid::now_v7(),
        "node-b",
        &[delta(&t, d1, counts(0, 0, 7, 1))],
    )
    .await
    .unwrap();
    s.add(Uuid::now_v7(), "node-b", &[]).await.unwrap();

    let want = vec![
        UsageDay {
            day: d1,
            counts: counts(5, 6, 7, 1),
        },
        UsageDay {
            day: d2,
            counts: counts(0, 1, 0, 0),
        },
        UsageDay {
            day: d3,
            counts: counts(1, 0, 1, 4),
        },
    ];
    assert_eq!(s.days(&t, d1, d3).await.unwrap(), want, "oldest first");
    assert_eq!(
        s.days(&t, d2, d2).await.unwrap(),
        want[1..2].to_vec(),
        "both ends inclusive"
    );
    assert!(s.days(&t, d3, d1).await.unwrap().is_empty());
    assert_eq!(
        s.days(&u, d1, d3).await.unwrap(),
        vec![UsageDay {
            day: d1,
            counts: counts(9, 9, 9, 9)
        }],
        "per team"
    );

    // Pruning batch ids keeps the counts.
    let later = crate::now_utc() + time::Duration::seconds(5);
    assert_eq!(s.prune_batches(later).await.unwrap(), 4);
    assert_eq!(s.days(&t, d1, d3).await.unwrap(), want);
}

/// Two stores on one database (two nodes), adding at once, the same batch retried by
/// both: every count once.
pub async fn concurrent_batches_add_up(a: Arc<dyn UsageStore>, b: Arc<dyn UsageStore>) {
    let t = TeamId::new("race").unwrap();
    let day = date!(2026 - 05 - 01);
    let shared = Uuid::now_v7();
    let mut tasks = Vec::new();
    for i in 0..20u64 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        let t = t.clone();
        tasks.push(tokio::spawn(async move {
            let id = if i < 4 { shared } else { Uuid::now_v7() };
            store
                .add(id, "n", &[delta(&t, day, counts(1, 2, i, 0))])
                .await
                .unwrap();
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let days = a.days(&t, day, day).await.unwrap();
    // Batches 0..4 share one id: one of them counts. 16 others: 17 in all.
    assert_eq!(days.len(), 1);
    assert_eq!(days[0].counts.messages, 17);
    assert_eq!(days[0].counts.api_calls, 34);
    assert_eq!(days[0].counts.peak_connections, 19);
}
