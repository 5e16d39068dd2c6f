//! The per-user connection cap of one node (`--max-connections-per-user`).
//!
//! A handshake takes a [`UserSlot`] before the upgrade; the slot is released when it
//! is dropped: with the session at its end, or with the upgrade callback when the
//! upgrade never happens. Taking the slot checks and counts in one step under the
//! user's map entry, so concurrent handshakes of one user cannot pass the cap
//! together. The count is per node: the contract caps sockets on one node, and a
//! cluster-wide count would put a Redis round trip into every handshake.

use std::sync::Arc;

use dashmap::DashMap;
use teamhub_protocol::UserId;

/// Counts open sockets per user; `max` 0 turns the cap off.
#[derive(Debug)]
pub struct UserCap {
    max: usize,
    open: DashMap<UserId, usize>,
}

impl UserCap {
    pub fn new(max: usize) -> Arc<UserCap> {
        Arc::new(UserCap {
            max,
            open: DashMap::new(),
        })
    }

    /// The cap, `None` when off.
    pub fn max(&self) -> Option<usize> {
        (self.max > 0).then_some(self.max)
    }

    /// A slot for one more socket of `user`, or `None` when the user holds the cap.
    pub fn try_acquire(self: &Arc<Self>, user: &UserId) -> Option<UserSlot> {
        {
            // The entry guard is dropped before returning; nothing here awaits.
            let mut open = self.open.entry(user.clone()).or_insert(0);
            if self.max > 0 && *open >= self.max {
                return None;
            }
            *open += 1;
        }
        Some(UserSlot {
            cap: self.clone(),
            user: user.clone(),
        })
    }

    /// Sockets `user` holds on this node.
    pub fn open(&self, user: &UserId) -> usize {
        self.open.get(user).map_or(0, |n| *n)
    }

    fn release(&self, user: &UserId) {
        let mut gone = false;
        if let Some(mut open) = self.open.get_mut(user) {
            *open = open.saturating_sub(1);
            gone = *open == 0;
        }
        if gone {
            self.open.remove_if(user, |_, n| *n == 0);
        }
    }
}

/// One socket's place under its user's cap; released on drop.
#[derive(Debug)]
pub struct UserSlot {
    cap: Arc<UserCap>,
    user: UserId,
}

impl Drop for UserSlot {
    fn drop(&mut self) {
        self.cap.release(&self.user);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_counts_and_releases() {
        let cap = UserCap::new(2);
        let ann = UserId::new("ann").unwrap();
        let bob = UserId::new("bob").unwrap();
        let a = cap.try_acquire(&ann).unwrap();
        let b = cap.try_acquire(&ann).unwrap();
        assert!(cap.try_acquire(&ann).is_none(), "the third is refused");
        assert!(cap.try_acquire(&bob).is_some(), "per user");
        drop(a);
        let c = cap
            .try_acquire(&ann)
            .expect("a released slot is free again");
        drop((b, c));
        assert_eq!(cap.open(&ann), 0);
        assert!(cap.open.is_empty(), "no entry is kept for a user with none");
    }

    #[test]
    fn zero_turns_it_off() {
        let cap = UserCap::new(0);
        let ann = UserId::new("ann").unwrap();
        let slots: Vec<_> = (0..1000).map(|_| cap.try_acquire(&ann).unwrap()).collect();
        assert_eq!(cap.open(&ann), 1000);
        assert_eq!(cap.max(), None);
        drop(slots);
    }
}
