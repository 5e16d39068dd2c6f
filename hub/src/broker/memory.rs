//! Single-node broker and history, in this process.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::extract::ws::Utf8Bytes;
use dashmap::DashMap;
use teamhub_protocol::TeamId;
use time::OffsetDateTime;
use tokio::sync::mpsc::UnboundedSender;

use super::{
    Broker, BrokerError, BrokerEvent, History, HistoryRead, Pending, Position, Publication,
    Published,
};
use crate::event::{Event, encode_message};

/// How much history each team keeps.
#[derive(Debug, Clone, Copy)]
pub struct HistoryLimits {
    pub max_messages: usize,
    pub max_age: Duration,
}

#[derive(Debug)]
struct TeamLog {
    epoch: String,
    offset: u64,
    entries: VecDeque<(u64, Instant, Utf8Bytes)>,
    /// Messages published with a daily quota, per UTC day (the last day only).
    today: (time::Date, u64),
}

impl TeamLog {
    fn new() -> Self {
        Self {
            epoch: new_epoch(),
            offset: 0,
            entries: VecDeque::new(),
            today: (time::Date::MIN, 0),
        }
    }

    fn evict(&mut self, limits: HistoryLimits, now: Instant) {
        while self.entries.len() > limits.max_messages {
            self.entries.pop_front();
        }
        while self
            .entries
            .front()
            .is_some_and(|(_, at, _)| now.duration_since(*at) > limits.max_age)
        {
            self.entries.pop_front();
        }
    }
}

/// A random epoch: a restarted node starts a new history generation.
fn new_epoch() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// Offsets, history and fan-out for one node.
///
/// Each team's log sits behind its own mutex. `publish` assigns the offset, encodes,
/// appends to history and sends the event to the fan-out channel under that mutex, so
/// events enter the channel in offset order. The channel is unbounded because sending
/// must not await under the lock; the fan-out task at its other end does no I/O (it
/// only pushes into bounded outboxes), so it keeps up.
pub struct MemoryBroker {
    teams: DashMap<TeamId, Arc<Mutex<TeamLog>>>,
    events: UnboundedSender<BrokerEvent>,
    limits: HistoryLimits,
}

impl MemoryBroker {
    pub fn new(events: UnboundedSender<BrokerEvent>, limits: HistoryLimits) -> Self {
        Self {
            teams: DashMap::new(),
            events,
            limits,
        }
    }

    fn log(&self, team: &TeamId) -> Arc<Mutex<TeamLog>> {
        if let Some(log) = self.teams.get(team) {
            return log.clone();
        }
        self.teams
            .entry(team.clone())
            .or_insert_with(|| Arc::new(Mutex::new(TeamLog::new())))
            .clone()
    }
}

impl MemoryBroker {
    fn publish_now(&self, p: Publication<'_>) -> Result<Published, BrokerError> {
        let log = self.log(p.parts.team);
        let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
        let ts = OffsetDateTime::now_utc();
        if let Some(limit) = p.messages_per_day {
            if log.today.0 != ts.date() {
                log.today = (ts.date(), 0);
            }
            if log.today.1 >= limit {
                return Err(BrokerError::QuotaExceeded);
            }
        }
        let offset = log.offset + 1;
        let wire = encode_message(&p.parts, offset, ts);
        let event = Arc::new(Event::message(
            p.parts.team,
            offset,
            p.echo,
            p.origin,
            wire.clone(),
        ));
        if self.events.send(BrokerEvent::Message(event)).is_err() {
            return Err(BrokerError::Unavailable("node is shutting down".into()));
        }
        log.offset = offset;
        if p.messages_per_day.is_some() {
            log.today.1 += 1;
        }
        let now = Instant::now();
        log.entries.push_back((offset, now, wire));
        log.evict(self.limits, now);
        Ok(Published { offset, ts })
    }
}

#[async_trait]
impl Broker for MemoryBroker {
    /// Publishes at once, under the team's lock: the future is already resolved.
    fn enqueue(&self, p: Publication<'_>) -> Pending {
        Box::pin(std::future::ready(self.publish_now(p)))
    }

    async fn subscribe(&self, _team: &TeamId) -> Result<(), BrokerError> {
        Ok(())
    }

    async fn unsubscribe(&self, _team: &TeamId) -> Result<(), BrokerError> {
        Ok(())
    }

    async fn ping(&self) -> Result<(), BrokerError> {
        Ok(())
    }
}

#[async_trait]
impl History for MemoryBroker {
    async fn position(&self, team: &TeamId) -> Result<Position, BrokerError> {
        let log = self.log(team);
        let log = log.lock().unwrap_or_else(|e| e.into_inner());
        Ok(Position {
            epoch: log.epoch.clone(),
            offset: log.offset,
        })
    }

    async fn read(
        &self,
        team: &TeamId,
        after: u64,
        limit: usize,
    ) -> Result<HistoryRead, BrokerError> {
        let log = self.log(team);
        let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
        log.evict(self.limits, Instant::now());
        let oldest = log.entries.front().map_or(log.offset + 1, |(o, _, _)| *o);
        let complete = after >= log.offset || oldest <= after + 1;
        let messages = log
            .entries
            .iter()
            .skip_while(|(o, _, _)| *o <= after)
            .take(limit)
            .map(|(_, _, wire)| wire.clone())
            .collect();
        Ok(HistoryRead {
            position: Position {
                epoch: log.epoch.clone(),
                offset: log.offset,
            },
            messages,
            complete,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::MessageParts;
    use teamhub_protocol::{MessageType, UserId};

    fn broker(
        max_messages: usize,
    ) -> (
        MemoryBroker,
        tokio::sync::mpsc::UnboundedReceiver<BrokerEvent>,
    ) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        (
            MemoryBroker::new(
                tx,
                HistoryLimits {
                    max_messages,
                    max_age: Duration::from_secs(3600),
                },
            ),
            rx,
        )
    }

    async fn publish(b: &MemoryBroker, team: &TeamId) -> u64 {
        let (ty, user) = (MessageType::new("x").unwrap(), UserId::new("u").unwrap());
        let data = serde_json::value::RawValue::from_string("1".into()).unwrap();
        let parts = MessageParts {
            team,
            ty: &ty,
            user: &user,
            data: &data,
        };
        b.publish(Publication {
            parts,
            origin: None,
            echo: false,
            messages_per_day: None,
        })
        .await
        .unwrap()
        .offset
    }

    #[tokio::test]
    async fn offsets_start_at_one_and_are_per_team() {
        let (b, mut rx) = broker(10);
        let (t1, t2) = (TeamId::new("a").unwrap(), TeamId::new("b").unwrap());
        assert_eq!(publish(&b, &t1).await, 1);
        assert_eq!(publish(&b, &t1).await, 2);
        assert_eq!(publish(&b, &t2).await, 1);
        assert_eq!(
            b.position(&TeamId::new("new").unwrap())
                .await
                .unwrap()
                .offset,
            0
        );
        let mut seen = Vec::new();
        while let Ok(BrokerEvent::Message(ev)) = rx.try_recv() {
            seen.push((ev.team.to_string(), ev.kind));
        }
        assert_eq!(seen.len(), 3);
    }

    #[tokio::test]
    async fn history_is_bounded_and_reports_gaps() {
        let (b, _rx) = broker(3);
        let t = TeamId::new("a").unwrap();
        for _ in 0..5 {
            publish(&b, &t).await;
        }
        let r = b.read(&t, 2, 100).await.unwrap();
        assert!(r.complete && r.messages.len() == 3, "3, 4 and 5 are held");
        let r = b.read(&t, 1, 100).await.unwrap();
        assert!(!r.complete, "2 was evicted");
        let r = b.read(&t, 5, 100).await.unwrap();
        assert!(r.complete && r.messages.is_empty());
        let r = b.read(&t, 2, 2).await.unwrap();
        assert_eq!(r.messages.len(), 2, "limit applies");
    }

    #[tokio::test]
    async fn each_broker_has_its_own_epoch() {
        let t = TeamId::new("a").unwrap();
        let (b1, _r1) = broker(3);
        let (b2, _r2) = broker(3);
        assert_ne!(
            b1.position(&t).await.unwrap().epoch,
            b2.position(&t).await.unwrap().epoch
        );
    }
}
