//! The presence conformance suite against the in-process store.

use std::sync::Arc;

use teamhub_presence::MemoryPresence;
use teamhub_presence::conformance::{self, Subject};

fn subject() -> Subject {
    let (tx, events) = tokio::sync::mpsc::unbounded_channel();
    Subject {
        store: Arc::new(MemoryPresence::new(tx)),
        events,
    }
}

#[tokio::test]
async fn first_connection_joins_last_leaves() {
    conformance::first_connection_joins_last_leaves(&mut subject()).await;
}

#[tokio::test]
async fn retries_are_harmless() {
    conformance::retries_are_harmless(&mut subject()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_ordered_under_concurrency() {
    conformance::events_are_ordered_under_concurrency(&mut subject()).await;
}

#[tokio::test]
async fn teams_are_isolated_and_snapshots_sorted() {
    conformance::teams_are_isolated_and_snapshots_sorted(&mut subject()).await;
}

#[tokio::test]
async fn occupancy_follows_the_first_and_last_user() {
    conformance::occupancy_follows_the_first_and_last_user(&mut subject()).await;
}
