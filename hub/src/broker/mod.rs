//! The broker and history seams: how a published message gets its offset, lands in
//! history and reaches every node hosting its team.
//!
//! One implementation per file: [`memory`] for a single node; Redis (for a cluster)
//! goes beside it. Both are picked in one place, `bootstrap`.
//!
//! Architecture invariant: the broker never sees sessions. It hands every event to the
//! node through one channel of [`BrokerEvent`]s, and the node's fan-out task takes it
//! from there.

pub mod conformance;
pub mod memory;
mod publisher;
pub mod redis;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use axum::extract::ws::Utf8Bytes;
use teamhub_presence::ConnKey;
use teamhub_protocol::{Since, TeamId};
use time::OffsetDateTime;

use crate::event::{Event, MessageParts};

/// What a broker hands the node: one ordered stream per node, so a resync takes its
/// place among a team's messages and can neither overtake nor trail them.
#[derive(Debug, Clone)]
pub enum BrokerEvent {
    /// The team's next message, in offset order.
    Message(Arc<Event>),
    /// The team lost continuity on this node: nothing more of it follows until it is
    /// subscribed afresh, and its local connections must reconnect (1012).
    Resync(Resync),
}

/// Why a team lost continuity on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResyncReason {
    /// The team's epoch changed: the broker lost the team's history.
    EpochChanged,
    /// Messages this node missed are no longer in history.
    HistoryLost,
    /// An entry could not be decoded or was not the next offset.
    Inconsistent,
}

/// A team whose messages this node can no longer deliver in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resync {
    pub team: TeamId,
    pub reason: ResyncReason,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum BrokerError {
    /// The backing service is unreachable; the message was not published.
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    /// The team published its `messages_per_day` today; the message was not published
    /// (no offset spent).
    #[error("the team's messages of the day are used up")]
    QuotaExceeded,
}

/// A message to publish.
#[derive(Debug)]
pub struct Publication<'a> {
    pub parts: MessageParts<'a>,
    /// The publishing connection, which does not receive its own message unless `echo`.
    pub origin: Option<ConnKey>,
    pub echo: bool,
    /// The team's plan allows this many messages per UTC day (of the publish's
    /// timestamp); `None` is unlimited and leaves the day's count alone.
    pub messages_per_day: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    pub offset: u64,
    pub ts: OffsetDateTime,
}

/// A team's history generation and latest offset.
///
/// The epoch changes whenever a team's history is lost (a restarted single node, a
/// flushed Redis), so a client's `since` from before the loss can never be mistaken for
/// a position in the new history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub epoch: String,
    pub offset: u64,
}

/// Messages read from history.
#[derive(Debug, Clone)]
pub struct HistoryRead {
    pub position: Position,
    /// Encoded `message` frames with offset > `after`, oldest first, at most `limit`.
    pub messages: Vec<Utf8Bytes>,
    /// False when some message after `after` has already been evicted.
    pub complete: bool,
}

/// A publish under way: its place in its team's order is already fixed, its outcome
/// (the offset, or why it failed) is what the future resolves to.
pub type Pending =
    Pin<Box<dyn Future<Output = Result<Published, BrokerError>> + Send + Sync + 'static>>;

/// Fans messages out to every node hosting the team.
///
/// Contract: publishing assigns the team's next offset (starting at 1, no gaps),
/// appends the encoded message to history and hands it to every subscribed node, as one
/// atomic step, so every node sees a team's messages in offset order. The outcome is
/// known only after all three happened, or none did (`Unavailable`).
///
/// A publication with `messages_per_day` is counted against the team's count of its
/// UTC day in the same atomic step, cluster-wide: when the day's count has reached the
/// limit it is refused (`QuotaExceeded`) and nothing else happens, so the limit is
/// exact however many nodes publish, and checking it costs no extra round trip.
///
/// Publishes are *enqueued*: [`Broker::enqueue`] fixes the message's place among this
/// node's publishes before it returns, so a caller (a session reading frame after
/// frame) may start the next publish before the previous one has come back, and two
/// publishes enqueued one after the other to the same team get increasing offsets.
/// That is what lets a connection keep many publishes in flight through a remote
/// broker without paying a round trip for each.
#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// Starts publishing; see the trait's contract for what is fixed on return.
    fn enqueue(&self, publication: Publication<'_>) -> Pending;
    /// Publishes and waits for the outcome.
    async fn publish(&self, publication: Publication<'_>) -> Result<Published, BrokerError> {
        self.enqueue(publication).await
    }
    /// This node now hosts `team` (its first local connection joined).
    async fn subscribe(&self, team: &TeamId) -> Result<(), BrokerError>;
    /// This node no longer hosts `team`.
    async fn unsubscribe(&self, team: &TeamId) -> Result<(), BrokerError>;
    /// Cheap reachability check, for `/readyz`.
    async fn ping(&self) -> Result<(), BrokerError>;
}

/// Bounded per-team history (the last N messages or T seconds, whichever is less).
#[async_trait]
pub trait History: Send + Sync + 'static {
    async fn position(&self, team: &TeamId) -> Result<Position, BrokerError>;
    async fn read(
        &self,
        team: &TeamId,
        after: u64,
        limit: usize,
    ) -> Result<HistoryRead, BrokerError>;
}

/// What a `join` with `since` gets back.
#[derive(Debug, Clone)]
pub struct Recovery {
    pub position: Position,
    pub recovered: bool,
    pub missed: Vec<Utf8Bytes>,
}

/// Decides recovery from a history read, as the contract defines it: recovered only
/// when the epoch matches and every message after `since.offset` is still held.
pub fn recover(since: &Since, read: HistoryRead) -> Recovery {
    let recovered =
        since.epoch == read.position.epoch && since.offset <= read.position.offset && read.complete;
    Recovery {
        position: read.position,
        recovered,
        missed: if recovered { read.messages } else { Vec::new() },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(epoch: &str, head: u64, complete: bool, n: usize) -> HistoryRead {
        HistoryRead {
            position: Position {
                epoch: epoch.into(),
                offset: head,
            },
            messages: vec![Utf8Bytes::from_static("{}"); n],
            complete,
        }
    }

    fn since(epoch: &str, offset: u64) -> Since {
        Since {
            epoch: epoch.into(),
            offset,
        }
    }

    #[test]
    fn recovery_needs_same_epoch_and_complete_history() {
        let r = recover(&since("e1", 5), read("e1", 8, true, 3));
        assert!(r.recovered);
        assert_eq!(r.missed.len(), 3);
        let r = recover(&since("e0", 5), read("e1", 8, true, 3));
        assert!(!r.recovered && r.missed.is_empty(), "another epoch");
        let r = recover(&since("e1", 5), read("e1", 8, false, 2));
        assert!(!r.recovered && r.missed.is_empty(), "evicted messages");
        let r = recover(&since("e1", 9), read("e1", 8, true, 0));
        assert!(!r.recovered, "an offset from the future");
        let r = recover(&since("e1", 8), read("e1", 8, true, 0));
        assert!(r.recovered && r.missed.is_empty(), "nothing missed");
    }
}
