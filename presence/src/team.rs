//! User-level aggregation of one team's connections, as plain data.

use std::collections::BTreeMap;

use teamhub_protocol::{PresenceEntry, UserId};

use crate::{ConnInfo, ConnKey};

/// What a join or leave did to the user-level view.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Change {
    /// The team's presence version after the operation.
    pub version: u64,
    /// The user came online in the team (their first connection joined).
    pub joined: Option<PresenceEntry>,
    /// The user went offline in the team (their last connection left).
    pub left: Option<PresenceEntry>,
    /// The team's first user came, or its last user went, with this change.
    pub occupancy: Option<Occupancy>,
}

/// A change in whether a team has anyone in it, across every node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Occupancy {
    /// The team had no user and now has one.
    Occupied,
    /// The team's last user left (or expired).
    Vacated,
}

impl Occupancy {
    pub fn parse(s: &str) -> Option<Occupancy> {
        match s {
            "occupied" => Some(Occupancy::Occupied),
            "vacated" => Some(Occupancy::Vacated),
            _ => None,
        }
    }
}

#[derive(Debug)]
struct UserConns {
    name: Option<String>,
    /// Connection -> (join sequence, meta). The entry shows the meta of the most recent
    /// connection, so a status set from a new tab wins over an old one.
    ///
    /// A short vector, not a map: a user has one or a few connections in a team, and a
    /// `BTreeMap` node holds room for eleven, which made every online user cost about
    /// 700 bytes more than it needs to.
    conns: Vec<(ConnKey, u64, Meta)>,
}

type Meta = Option<serde_json::Map<String, serde_json::Value>>;

impl UserConns {
    /// Adds the connection, or updates its sequence and meta when already there.
    fn upsert(&mut self, key: ConnKey, seq: u64, meta: Meta) {
        match self.conns.iter_mut().find(|(k, _, _)| *k == key) {
            Some(slot) => *slot = (key, seq, meta),
            None => self.conns.push((key, seq, meta)),
        }
    }

    fn remove(&mut self, key: &ConnKey) {
        self.conns.retain(|(k, _, _)| k != key);
    }
}

impl UserConns {
    fn entry(&self, user: &UserId) -> PresenceEntry {
        let meta = self
            .conns
            .iter()
            .max_by_key(|(_, seq, _)| *seq)
            .and_then(|(_, _, m)| m.clone());
        PresenceEntry {
            user: user.clone(),
            name: self.name.clone(),
            conns: u32::try_from(self.conns.len()).unwrap_or(u32::MAX),
            meta,
        }
    }
}

/// One team's presence state.
#[derive(Debug, Default)]
pub struct TeamPresence {
    version: u64,
    seq: u64,
    users: BTreeMap<UserId, UserConns>,
    /// Connection -> user, so a leave needs only the key.
    by_conn: BTreeMap<ConnKey, UserId>,
}

impl TeamPresence {
    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Adds (or updates) a connection.
    pub fn join(&mut self, info: ConnInfo) -> Change {
        self.seq += 1;
        let seq = self.seq;
        if let Some(previous) = self.by_conn.get(&info.key) {
            if *previous == info.user {
                if let Some(u) = self.users.get_mut(&info.user) {
                    u.upsert(info.key, seq, info.meta);
                }
                return self.unchanged();
            }
            // The same key for another user is a caller bug; treat it as leave + join.
            let key = info.key.clone();
            self.leave(&key);
        }
        let was_empty = self.users.is_empty();
        self.by_conn.insert(info.key.clone(), info.user.clone());
        let user = self
            .users
            .entry(info.user.clone())
            .or_insert_with(|| UserConns {
                name: info.name.clone(),
                conns: Vec::with_capacity(1),
            });
        user.upsert(info.key, seq, info.meta);
        if user.conns.len() == 1 {
            self.version += 1;
            let entry = user.entry(&info.user);
            Change {
                version: self.version,
                joined: Some(entry),
                left: None,
                occupancy: was_empty.then_some(Occupancy::Occupied),
            }
        } else {
            self.unchanged()
        }
    }

    /// Removes a connection.
    pub fn leave(&mut self, key: &ConnKey) -> Change {
        let Some(user_id) = self.by_conn.remove(key) else {
            return self.unchanged();
        };
        let Some(user) = self.users.get_mut(&user_id) else {
            return self.unchanged();
        };
        user.remove(key);
        if !user.conns.is_empty() {
            return self.unchanged();
        }
        let user = self.users.remove(&user_id).map(|u| u.entry(&user_id));
        self.version += 1;
        let left = user.map(|mut e| {
            e.conns = 0;
            e
        });
        Change {
            version: self.version,
            joined: None,
            left,
            occupancy: self.users.is_empty().then_some(Occupancy::Vacated),
        }
    }

    /// Every user present, sorted by user id.
    pub fn entries(&self) -> Vec<PresenceEntry> {
        self.users.iter().map(|(id, u)| u.entry(id)).collect()
    }

    fn unchanged(&self) -> Change {
        Change {
            version: self.version,
            joined: None,
            left: None,
            occupancy: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u64) -> ConnKey {
        ConnKey {
            node: "n1".into(),
            conn: n,
        }
    }

    fn info(n: u64, user: &str) -> ConnInfo {
        ConnInfo {
            key: key(n),
            user: UserId::new(user).unwrap(),
            name: Some(user.to_uppercase()),
            meta: None,
        }
    }

    #[test]
    fn first_connection_joins_last_one_leaves() {
        let mut t = TeamPresence::default();
        let c = t.join(info(1, "ann"));
        assert_eq!(c.version, 1);
        assert_eq!(c.joined.as_ref().map(|e| e.conns), Some(1));
        let c = t.join(info(2, "ann"));
        assert_eq!(
            (c.version, c.joined, c.left),
            (1, None, None),
            "a second connection is not a join"
        );
        assert_eq!(t.entries()[0].conns, 2);
        let c = t.leave(&key(1));
        assert_eq!(
            (c.version, c.left),
            (1, None),
            "one of two connections leaving is not a leave"
        );
        let c = t.leave(&key(2));
        assert_eq!(c.version, 2);
        assert_eq!(c.left.map(|e| e.user.to_string()), Some("ann".into()));
        assert!(t.is_empty());
    }

    #[test]
    fn retries_are_harmless() {
        let mut t = TeamPresence::default();
        t.join(info(1, "ann"));
        assert_eq!(t.join(info(1, "ann")).joined, None);
        assert_eq!(t.entries()[0].conns, 1);
        t.leave(&key(1));
        let again = t.leave(&key(1));
        assert_eq!((again.version, again.left), (2, None));
    }

    #[test]
    fn meta_of_the_most_recent_connection_wins() {
        let mut t = TeamPresence::default();
        let mut a = info(1, "ann");
        a.meta = Some(
            serde_json::json!({"status": "away"})
                .as_object()
                .unwrap()
                .clone(),
        );
        let mut b = info(2, "ann");
        b.meta = Some(
            serde_json::json!({"status": "busy"})
                .as_object()
                .unwrap()
                .clone(),
        );
        t.join(a);
        t.join(b);
        assert_eq!(t.entries()[0].meta.as_ref().unwrap()["status"], "busy");
        t.leave(&key(2));
        assert_eq!(t.entries()[0].meta.as_ref().unwrap()["status"], "away");
    }

    #[test]
    fn entries_are_sorted_by_user() {
        let mut t = TeamPresence::default();
        t.join(info(1, "zed"));
        t.join(info(2, "ann"));
        let users: Vec<_> = t
            .entries()
            .into_iter()
            .map(|e| e.user.to_string())
            .collect();
        assert_eq!(users, ["ann", "zed"]);
    }
}
