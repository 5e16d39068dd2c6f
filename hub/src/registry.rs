//! The channel registry: which local connections are joined to which team.
//!
//! A `DashMap` sharded by team, so joins and leaves in different teams do not contend.
//! Fan-out holds one shard's read guard while it pushes into outboxes; that is safe and
//! short because [`Outbox::push`] never awaits and never blocks beyond its own tiny
//! critical section. No DashMap guard is ever held across an `.await` anywhere in the
//! crate: every method here is synchronous, so the compiler enforces it.

use std::collections::HashMap;
use std::sync::Arc;

use dashmap::DashMap;
use teamhub_protocol::{CloseCode, KickReason, TeamId, UserId};

use crate::event::{Event, EventKind};
use crate::metrics;
use crate::outbox::{Outbound, Outbox};

/// How a subscriber wants its frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// `/ws`: the contract's frames.
    Full,
    /// `/ws/{team}`: `{"type","user_id","data"}` only.
    Seed,
}

#[derive(Debug, Clone)]
pub struct Subscriber {
    pub user: UserId,
    pub outbox: Arc<Outbox>,
    pub framing: Framing,
}

#[derive(Debug)]
pub struct Registry {
    node: Arc<str>,
    teams: DashMap<TeamId, HashMap<u64, Subscriber>>,
    /// Every local connection by user, joined to a team or not, so a credential's
    /// sockets can be closed (a deleted API key).
    users: DashMap<UserId, HashMap<u64, Arc<Outbox>>>,
}

/// What one fan-out did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Fanout {
    pub delivered: u64,
    pub overflowed: u64,
}

impl Registry {
    pub fn new(node: Arc<str>) -> Self {
        Self {
            node,
            teams: DashMap::new(),
            users: DashMap::new(),
        }
    }

    /// Records a new connection of `user` (for [`Registry::close_user`]).
    pub fn connect(&self, user: &UserId, conn: u64, outbox: Arc<Outbox>) {
        self.users
            .entry(user.clone())
            .or_default()
            .insert(conn, outbox);
    }

    /// Forgets a connection recorded by [`Registry::connect`].
    pub fn disconnect(&self, user: &UserId, conn: u64) {
        let mut empty = false;
        if let Some(mut conns) = self.users.get_mut(user) {
            conns.remove(&conn);
            empty = conns.is_empty();
        }
        if empty {
            self.users.remove_if(user, |_, conns| conns.is_empty());
        }
    }

    /// Closes every local connection of `user`; returns how many were told.
    pub fn close_user(&self, user: &UserId, code: CloseCode, reason: &'static str) -> usize {
        let Some(conns) = self.users.get(user) else {
            return 0;
        };
        conns
            .values()
            .filter(|o| o.push(Outbound::Close { code, reason }))
            .count()
    }

    /// Adds a connection to a team. Returns true when it is the team's first local
    /// connection (the node now hosts the team).
    pub fn add(&self, team: &TeamId, conn: u64, sub: Subscriber) -> bool {
        let mut subs = self.teams.entry(team.clone()).or_default();
        let first = subs.is_empty();
        subs.insert(conn, sub);
        first
    }

    /// Removes a connection from a team. Returns true when it was the last local one.
    pub fn remove(&self, team: &TeamId, conn: u64) -> bool {
        // remove_if takes the shard lock once; the emptiness check and the removal of the
        // team's entry cannot race with a concurrent add.
        let mut last = false;
        if let Some(mut subs) = self.teams.get_mut(team) {
            if subs.remove(&conn).is_none() {
                return false;
            }
            last = subs.is_empty();
        }
        if last {
            self.teams.remove_if(team, |_, subs| subs.is_empty());
        }
        last
    }

    /// Hands an event to every local connection joined to its team.
    pub fn fanout(&self, event: &Arc<Event>) -> Fanout {
        let mut out = Fanout::default();
        let Some(subs) = self.teams.get(&event.team) else {
            return out;
        };
        let skip = event
            .origin
            .as_ref()
            .filter(|o| *o.node == *self.node)
            .filter(|_| !matches!(event.kind, EventKind::Message { echo: true, .. }))
            .map(|o| o.conn);
        for (conn, sub) in subs.iter() {
            if Some(*conn) == skip {
                continue;
            }
            if sub.outbox.push(Outbound::Event(event.clone())) {
                out.delivered += 1;
            } else {
                out.overflowed += 1;
            }
        }
        drop(subs);
        metrics::deliveries(out.delivered);
        if out.overflowed > 0 {
            metrics::outbox_overflows(out.overflowed);
        }
        out
    }

    /// Tells every local connection of `user` in `team` to leave it.
    pub fn kick_user(&self, team: &TeamId, user: &UserId, reason: KickReason) -> usize {
        let Some(subs) = self.teams.get(team) else {
            return 0;
        };
        subs.values()
            .filter(|s| s.user == *user)
            .filter(|s| {
                s.outbox.push(Outbound::Kick {
                    team: team.clone(),
                    reason,
                })
            })
            .count()
    }

    /// Whether connection `conn` is joined to `team`.
    pub fn contains(&self, team: &TeamId, conn: u64) -> bool {
        self.teams
            .get(team)
            .is_some_and(|subs| subs.contains_key(&conn))
    }

    /// Whether any local connection is joined to `team`.
    pub fn hosts(&self, team: &TeamId) -> bool {
        self.teams.get(team).is_some_and(|subs| !subs.is_empty())
    }

    /// Closes every local connection joined to `team`; returns how many were told.
    pub fn close_team(&self, team: &TeamId, code: CloseCode, reason: &'static str) -> usize {
        let Some(subs) = self.teams.get(team) else {
            return 0;
        };
        subs.values()
            .filter(|s| s.outbox.push(Outbound::Close { code, reason }))
            .count()
    }

    /// Teams with at least one local connection.
    pub fn hosted_teams(&self) -> Vec<TeamId> {
        self.teams.iter().map(|e| e.key().clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use teamhub_presence::ConnKey;

    fn sub(user: &str) -> Subscriber {
        Subscriber {
            user: UserId::new(user).unwrap(),
            outbox: Arc::new(Outbox::new(4)),
            framing: Framing::Full,
        }
    }

    fn message(team: &TeamId, origin: Option<u64>, echo: bool) -> Arc<Event> {
        let origin = origin.map(|conn| ConnKey {
            node: "n1".into(),
            conn,
        });
        Arc::new(Event::message(team, 1, echo, origin, "{}".into()))
    }

    #[test]
    fn first_and_last() {
        let r = Registry::new("n1".into());
        let t = TeamId::new("t").unwrap();
        assert!(r.add(&t, 1, sub("a")));
        assert!(!r.add(&t, 2, sub("b")));
        assert!(!r.remove(&t, 1));
        assert!(!r.remove(&t, 1), "removing twice is a no-op");
        assert!(r.remove(&t, 2));
        assert!(r.hosted_teams().is_empty());
    }

    #[test]
    fn fanout_spares_the_publisher_unless_echo() {
        let r = Registry::new("n1".into());
        let t = TeamId::new("t").unwrap();
        r.add(&t, 1, sub("a"));
        r.add(&t, 2, sub("b"));
        assert_eq!(r.fanout(&message(&t, Some(1), false)).delivered, 1);
        assert_eq!(r.fanout(&message(&t, Some(1), true)).delivered, 2);
        assert_eq!(r.fanout(&message(&t, None, false)).delivered, 2);
        assert_eq!(
            r.fanout(&message(&TeamId::new("other").unwrap(), None, false))
                .delivered,
            0
        );
    }

    #[test]
    fn a_full_outbox_counts_as_overflow_and_others_still_receive() {
        let r = Registry::new("n1".into());
        let t = TeamId::new("t").unwrap();
        r.add(&t, 1, sub("slow"));
        let fast = sub("fast");
        r.add(&t, 2, fast.clone());
        for _ in 0..4 {
            assert_eq!(r.fanout(&message(&t, None, false)).delivered, 2);
        }
        // The slow one's queue (4) is full; the fast one drains.
        let mut buf = Vec::new();
        fast.outbox.drain_into(&mut buf);
        let f = r.fanout(&message(&t, None, false));
        assert_eq!(
            f,
            Fanout {
                delivered: 1,
                overflowed: 1
            }
        );
    }
}
