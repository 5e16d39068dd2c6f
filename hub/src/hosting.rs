//! The one owner of "this node hosts team T": a team's local membership (the registry)
//! and the node's subscription to the team's stream (the broker) change together,
//! under a per-team lock, with rollback when the subscription fails.
//!
//! Without it, a join and a leave of the same team racing on two connections could
//! interleave their registry change and their subscribe/unsubscribe, so that the last
//! connection's unsubscribe lands after a new connection's subscribe and the team goes
//! silent on this node. Holding the team's lock across both steps makes the pair
//! atomic per team (centrifuge's `Node.addSubscription` works the same way).
//!
//! The locks are striped: a fixed array indexed by the team's hash, so nothing grows
//! with the number of teams and nothing needs cleaning up. Two teams sharing a stripe
//! only wait for each other's subscribe, never deadlock (one lock per operation).

use std::hash::BuildHasher;

use teamhub_protocol::TeamId;
use tokio::sync::Mutex;

use crate::broker::{Broker, BrokerError};
use crate::registry::{Registry, Subscriber};

const STRIPES: usize = 1024;

/// The per-team locks; [`crate::node::Node::host`] and [`crate::node::Node::unhost`]
/// are the only ways to change a team's membership on a node.
pub struct Hosting {
    stripes: Box<[Mutex<()>]>,
    hasher: std::collections::hash_map::RandomState,
}

impl Default for Hosting {
    fn default() -> Self {
        Hosting {
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            hasher: Default::default(),
        }
    }
}

impl Hosting {
    fn stripe(&self, team: &TeamId) -> &Mutex<()> {
        &self.stripes[(self.hasher.hash_one(team) as usize) % STRIPES]
    }

    /// Adds a connection to the team and makes sure the node's subscription is live
    /// before returning, so the caller may read the team's position next. On failure
    /// the connection is removed again and the node hosts the team exactly as before.
    ///
    /// Every join asks the broker, not only the team's first: a broker answers a
    /// repeated subscribe at once, and renews a team whose continuity was lost.
    pub async fn join(
        &self,
        registry: &Registry,
        broker: &dyn Broker,
        team: &TeamId,
        conn: u64,
        sub: Subscriber,
    ) -> Result<(), BrokerError> {
        let _held = self.stripe(team).lock().await;
        let first = registry.add(team, conn, sub);
        if let Err(e) = broker.subscribe(team).await {
            registry.remove(team, conn);
            if first {
                // The subscription may have half happened; nobody local needs it.
                let _ = broker.unsubscribe(team).await;
            }
            return Err(e);
        }
        Ok(())
    }

    /// Removes a connection from the team; the team's last local connection ends the
    /// node's subscription. False when the connection was not in the team.
    pub async fn leave(
        &self,
        registry: &Registry,
        broker: &dyn Broker,
        team: &TeamId,
        conn: u64,
    ) -> bool {
        let _held = self.stripe(team).lock().await;
        let was_member = registry.contains(team, conn);
        if registry.remove(team, conn)
            && let Err(e) = broker.unsubscribe(team).await
        {
            // The broker drops what arrives for a team it no longer hosts.
            tracing::warn!(%team, error = %e, "unsubscribe failed");
        }
        was_member
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::{Arc, Mutex as StdMutex};

    use async_trait::async_trait;
    use teamhub_protocol::UserId;

    use super::*;
    use crate::broker::{Pending, Publication};
    use crate::outbox::Outbox;
    use crate::registry::Framing;

    /// A broker that records which teams it is subscribed to, yields inside every call
    /// (so racing tasks interleave there) and can be told to refuse subscribes.
    #[derive(Default)]
    struct Recording {
        subscribed: StdMutex<HashSet<TeamId>>,
        refuse: std::sync::atomic::AtomicBool,
    }

    #[async_trait]
    impl Broker for Recording {
        fn enqueue(&self, _: Publication<'_>) -> Pending {
            unreachable!("no publishes here")
        }
        async fn subscribe(&self, team: &TeamId) -> Result<(), BrokerError> {
            tokio::task::yield_now().await;
            if self.refuse.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(BrokerError::Unavailable("refused".into()));
            }
            self.subscribed.lock().unwrap().insert(team.clone());
            Ok(())
        }
        async fn unsubscribe(&self, team: &TeamId) -> Result<(), BrokerError> {
            tokio::task::yield_now().await;
            self.subscribed.lock().unwrap().remove(team);
            Ok(())
        }
        async fn ping(&self) -> Result<(), BrokerError> {
            Ok(())
        }
    }

    fn sub() -> Subscriber {
        Subscriber {
            user: UserId::new("u").unwrap(),
            outbox: Arc::new(Outbox::new(4)),
            framing: Framing::Full,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn racing_joins_and_leaves_end_subscribed_exactly_when_hosted() {
        let team = TeamId::new("t").unwrap();
        for round in 0..50u64 {
            let registry = Arc::new(Registry::new("n".into()));
            let broker = Arc::new(Recording::default());
            let hosting = Arc::new(Hosting::default());
            // Connection 1 leaves while connection 2 joins: whichever order the lock
            // gives them, the end state must agree.
            hosting
                .join(&registry, &*broker, &team, 1, sub())
                .await
                .unwrap();
            let (h, r, b, t) = (
                hosting.clone(),
                registry.clone(),
                broker.clone(),
                team.clone(),
            );
            let leave = tokio::spawn(async move { h.leave(&r, &*b, &t, 1).await });
            let (h, r, b, t) = (
                hosting.clone(),
                registry.clone(),
                broker.clone(),
                team.clone(),
            );
            let join = tokio::spawn(async move { h.join(&r, &*b, &t, 2, sub()).await });
            assert!(leave.await.unwrap(), "round {round}: conn 1 was a member");
            join.await.unwrap().unwrap();
            assert!(registry.hosts(&team));
            assert!(
                broker.subscribed.lock().unwrap().contains(&team),
                "round {round}: hosted but not subscribed"
            );
            assert!(
                !hosting.leave(&registry, &*broker, &team, 1).await,
                "left already"
            );
            assert!(hosting.leave(&registry, &*broker, &team, 2).await);
            assert!(!registry.hosts(&team));
            assert!(broker.subscribed.lock().unwrap().is_empty());
        }
    }

    #[tokio::test]
    async fn a_failed_subscribe_leaves_the_team_as_it_was() {
        let (registry, broker, hosting) = (
            Registry::new("n".into()),
            Recording::default(),
            Hosting::default(),
        );
        let team = TeamId::new("t").unwrap();
        broker
            .refuse
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let err = hosting.join(&registry, &broker, &team, 1, sub()).await;
        assert!(err.is_err());
        assert!(!registry.hosts(&team) && !registry.contains(&team, 1));
        assert!(broker.subscribed.lock().unwrap().is_empty());
        broker
            .refuse
            .store(false, std::sync::atomic::Ordering::SeqCst);
        hosting
            .join(&registry, &broker, &team, 1, sub())
            .await
            .unwrap();
        assert!(registry.contains(&team, 1));
    }
}
