//! The bounded per-connection outbound queue.
//!
//! Fan-out pushes into it without ever waiting; the connection's own task drains it and
//! writes to the socket. When a client cannot keep up and the queue is full, the queue
//! flips to `overflowed`, drops what it holds and wakes the session, which closes that
//! one connection with 1013. Nothing else slows down.
//!
//! A hand-rolled queue rather than a tokio channel: an idle connection's queue holds no
//! allocation at all (a `VecDeque` allocates on first push), which matters at tens of
//! thousands of idle sockets, and overflow needs a side flag a channel has no room for.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use teamhub_protocol::{CloseCode, KickReason, TeamId};
use tokio::sync::Notify;

use crate::event::Event;

/// Something for a session to deliver or act on.
#[derive(Debug, Clone)]
pub enum Outbound {
    Event(Arc<Event>),
    /// Leave the team and tell the client why.
    Kick {
        team: TeamId,
        reason: KickReason,
    },
    /// Close the connection with this code (e.g. 1012 when a team's stream lost
    /// continuity and clients must recover with `since`).
    Close {
        code: CloseCode,
        reason: &'static str,
    },
}

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<Outbound>,
    overflowed: bool,
}

#[derive(Debug)]
pub struct Outbox {
    state: Mutex<State>,
    notify: Notify,
    capacity: usize,
}

/// The result of draining: what to deliver, or that the connection must close.
#[derive(Debug, PartialEq, Eq)]
pub enum Drained {
    Items,
    Overflowed,
}

impl Outbox {
    pub fn new(capacity: usize) -> Self {
        Self {
            state: Mutex::new(State::default()),
            notify: Notify::new(),
            capacity: capacity.max(1),
        }
    }

    /// Queues an item. Returns false when the queue had overflowed (now or before).
    /// Never blocks beyond the short critical section; never awaits.
    pub fn push(&self, item: Outbound) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.overflowed {
            return false;
        }
        if state.queue.len() >= self.capacity {
            state.overflowed = true;
            state.queue = VecDeque::new();
            drop(state);
            self.notify.notify_one();
            return false;
        }
        state.queue.push_back(item);
        let was_empty = state.queue.len() == 1;
        drop(state);
        // One wake-up per batch: a session that has not drained yet will see it all.
        if was_empty {
            self.notify.notify_one();
        }
        true
    }

    /// Moves everything queued into `buf`.
    pub fn drain_into(&self, buf: &mut Vec<Outbound>) -> Drained {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.overflowed {
            return Drained::Overflowed;
        }
        buf.extend(state.queue.drain(..));
        if state.queue.capacity() > 64 {
            // A burst grew the queue; give the memory back while the socket is quiet.
            state.queue.shrink_to(8);
        }
        Drained::Items
    }

    /// Resolves when something was pushed since the last drain (or on overflow).
    pub async fn ready(&self) {
        self.notify.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use teamhub_protocol::KickReason;

    fn kick() -> Outbound {
        Outbound::Kick {
            team: TeamId::new("t").unwrap(),
            reason: KickReason::Revoked,
        }
    }

    #[test]
    fn overflow_flips_once_and_for_all() {
        let q = Outbox::new(2);
        assert!(q.push(kick()));
        assert!(q.push(kick()));
        assert!(!q.push(kick()), "the third item overflows a queue of two");
        assert!(!q.push(kick()));
        let mut buf = Vec::new();
        assert_eq!(q.drain_into(&mut buf), Drained::Overflowed);
        assert!(buf.is_empty());
    }

    #[test]
    fn drain_empties_the_queue() {
        let q = Outbox::new(8);
        for _ in 0..5 {
            assert!(q.push(kick()));
        }
        let mut buf = Vec::new();
        assert_eq!(q.drain_into(&mut buf), Drained::Items);
        assert_eq!(buf.len(), 5);
        buf.clear();
        q.drain_into(&mut buf);
        assert!(buf.is_empty());
    }

    #[tokio::test]
    async fn a_push_wakes_the_reader() {
        let q = Arc::new(Outbox::new(8));
        let q2 = q.clone();
        let waiter = tokio::spawn(async move { q2.ready().await });
        q.push(kick());
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
    }
}
