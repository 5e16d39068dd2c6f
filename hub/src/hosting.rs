//! The one owner of "this node hosts team T": a team's local membership (the registry),
//! the node's subscription to the team's stream (the broker) and to its presence events
//! (the presence store) change together, under a per-team lock, with rollback when a
//! subscription fails. Neither the broker nor presence decides on its own which teams
//! this node hosts; they are told here.
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

use teamhub_presence::{PresenceError, PresenceStore};
use teamhub_protocol::TeamId;
use tokio::sync::Mutex;

use crate::broker::{Broker, BrokerError};
use crate::error::OpError;
use crate::registry::{Registry, Subscriber};

const STRIPES: usize = 1024;

/// Why a team could not be hosted; nothing changed.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error(transparent)]
    Presence(#[from] PresenceError),
}

impl From<HostError> for OpError {
    fn from(e: HostError) -> Self {
        match e {
            HostError::Broker(e) => e.into(),
            HostError::Presence(e) => e.into(),
        }
    }
}

/// The seams whose subscriptions follow the registry.
#[derive(Clone, Copy)]
pub struct Seams<'a> {
    pub registry: &'a Registry,
    pub broker: &'a dyn Broker,
    pub presence: &'a dyn PresenceStore,
}

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

    /// Adds a connection to the team and makes sure the node's subscriptions are live
    /// before returning, so the caller may join presence and read the team's position
    /// next. On failure the connection is removed again and the node hosts the team
    /// exactly as before.
    ///
    /// Every join asks the broker, not only the team's first: a broker answers a
    /// repeated subscribe at once, and renews a team whose continuity was lost.
    /// Presence is asked with the team's first connection only.
    pub async fn join(
        &self,
        seams: Seams<'_>,
        team: &TeamId,
        conn: u64,
        sub: Subscriber,
    ) -> Result<(), HostError> {
        let _held = self.stripe(team).lock().await;
        let first = seams.registry.add(team, conn, sub);
        let subscribed = async {
            if first {
                seams.presence.host(team).await?;
            }
            seams.broker.subscribe(team).await?;
            Ok::<_, HostError>(())
        }
        .await;
        if let Err(e) = subscribed {
            seams.registry.remove(team, conn);
            if first {
                // A subscription may have half happened; nobody local needs it.
                let _ = seams.broker.unsubscribe(team).await;
                seams.presence.unhost(team).await;
            }
            return Err(e);
        }
        Ok(())
    }

    /// Removes a connection from the team; the team's last local connection ends the
    /// node's subscriptions. False when the connection was not in the team. The
    /// connection leaves presence before this, so its own leave event still arrives.
    pub async fn leave(&self, seams: Seams<'_>, team: &TeamId, conn: u64) -> bool {
        let _held = self.stripe(team).lock().await;
        let was_member = seams.registry.contains(team, conn);
        if seams.registry.remove(team, conn) {
            if let Err(e) = seams.broker.unsubscribe(team).await {
                // The broker drops what arrives for a team it no longer hosts.
                tracing::warn!(%team, error = %e, "unsubscribe failed");
            }
            seams.presence.unhost(team).await;
        }
        was_member
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
    use std::sync::{Arc, Mutex as StdMutex};

    use async_trait::async_trait;
    use teamhub_presence::{Change, ConnInfo, ConnKey, Snapshot};
    use teamhub_protocol::UserId;

    use super::*;
    use crate::broker::{Pending, Publication};
    use crate::outbox::Outbox;
    use crate::registry::Framing;

    /// The teams a seam is subscribed to; it yields inside every call (so racing tasks
    /// interleave there) and can be told to refuse subscribing.
    #[derive(Default)]
    struct Recording {
        subscribed: StdMutex<HashSet<TeamId>>,
        refuse: AtomicBool,
    }

    impl Recording {
        async fn subscribe(&self, team: &TeamId) -> bool {
            tokio::task::yield_now().await;
            if self.refuse.load(SeqCst) {
                return false;
            }
            self.subscribed.lock().unwrap().insert(team.clone());
            true
        }

        async fn unsubscribe(&self, team: &TeamId) {
            tokio::task::yield_now().await;
            self.subscribed.lock().unwrap().remove(team);
        }

        fn has(&self, team: &TeamId) -> bool {
            self.subscribed.lock().unwrap().contains(team)
        }

        fn is_empty(&self) -> bool {
            self.subscribed.lock().unwrap().is_empty()
        }
    }

    #[derive(Default)]
    struct RecordingBroker(Recording);

    #[async_trait]
    impl Broker for RecordingBroker {
        fn enqueue(&self, _: Publication<'_>) -> Pending {
            unreachable!("no publishes here")
        }
        async fn subscribe(&self, team: &TeamId) -> Result<(), BrokerError> {
            match self.0.subscribe(team).await {
                true => Ok(()),
                false => Err(BrokerError::Unavailable("refused".into())),
            }
        }
        async fn unsubscribe(&self, team: &TeamId) -> Result<(), BrokerError> {
            self.0.unsubscribe(team).await;
            Ok(())
        }
        async fn ping(&self) -> Result<(), BrokerError> {
            Ok(())
        }
    }

    #[derive(Default)]
    struct RecordingPresence(Recording);

    #[async_trait]
    impl PresenceStore for RecordingPresence {
        async fn host(&self, team: &TeamId) -> Result<(), PresenceError> {
            match self.0.subscribe(team).await {
                true => Ok(()),
                false => Err(PresenceError::Unavailable("refused".into())),
            }
        }
        async fn unhost(&self, team: &TeamId) {
            self.0.unsubscribe(team).await;
        }
        async fn join(&self, _: &TeamId, _: ConnInfo) -> Result<Change, PresenceError> {
            unreachable!("hosting never joins presence")
        }
        async fn leave(&self, _: &TeamId, _: &ConnKey) -> Result<Change, PresenceError> {
            unreachable!("hosting never leaves presence")
        }
        async fn snapshot(&self, _: &TeamId) -> Result<Snapshot, PresenceError> {
            unreachable!("hosting never reads presence")
        }
    }

    struct Fixture {
        registry: Registry,
        broker: RecordingBroker,
        presence: RecordingPresence,
        hosting: Hosting,
    }

    impl Fixture {
        fn new() -> Self {
            Fixture {
                registry: Registry::new("n".into()),
                broker: RecordingBroker::default(),
                presence: RecordingPresence::default(),
                hosting: Hosting::default(),
            }
        }

        fn seams(&self) -> Seams<'_> {
            Seams {
                registry: &self.registry,
                broker: &self.broker,
                presence: &self.presence,
            }
        }

        async fn join(&self, team: &TeamId, conn: u64) -> Result<(), HostError> {
            self.hosting.join(self.seams(), team, conn, sub()).await
        }

        async fn leave(&self, team: &TeamId, conn: u64) -> bool {
            self.hosting.leave(self.seams(), team, conn).await
        }

        /// Both subscriptions agree with the registry.
        fn assert_in_step(&self, team: &TeamId, why: &str) {
            let hosted = self.registry.hosts(team);
            assert_eq!(self.broker.0.has(team), hosted, "{why}: broker");
            assert_eq!(self.presence.0.has(team), hosted, "{why}: presence");
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
            let f = Arc::new(Fixture::new());
            // Connection 1 leaves while connection 2 joins: whichever order the lock
            // gives them, the end state must agree.
            f.join(&team, 1).await.unwrap();
            let (f1, t1) = (f.clone(), team.clone());
            let leave = tokio::spawn(async move { f1.leave(&t1, 1).await });
            let (f2, t2) = (f.clone(), team.clone());
            let join = tokio::spawn(async move { f2.join(&t2, 2).await });
            assert!(leave.await.unwrap(), "round {round}: conn 1 was a member");
            join.await.unwrap().unwrap();
            assert!(f.registry.hosts(&team));
            f.assert_in_step(&team, &format!("round {round}, hosted"));
            assert!(!f.leave(&team, 1).await, "left already");
            assert!(f.leave(&team, 2).await);
            f.assert_in_step(&team, &format!("round {round}, left"));
            assert!(f.broker.0.is_empty() && f.presence.0.is_empty());
        }
    }

    #[tokio::test]
    async fn a_failed_subscribe_leaves_the_team_as_it_was() {
        let team = TeamId::new("t").unwrap();
        for refusing in ["broker", "presence"] {
            let f = Fixture::new();
            let refuse = match refusing {
                "broker" => &f.broker.0.refuse,
                _ => &f.presence.0.refuse,
            };
            refuse.store(true, SeqCst);
            let err = f.join(&team, 1).await;
            assert!(err.is_err(), "{refusing} refused");
            assert!(!f.registry.hosts(&team) && !f.registry.contains(&team, 1));
            assert!(
                f.broker.0.is_empty() && f.presence.0.is_empty(),
                "{refusing} refused: nothing stays subscribed"
            );
            refuse.store(false, SeqCst);
            f.join(&team, 1).await.unwrap();
            assert!(f.registry.contains(&team, 1));
            f.assert_in_step(&team, refusing);
        }
    }
}
