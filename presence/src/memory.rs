//! In-process presence: the single-node embedded default.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use teamhub_protocol::TeamId;
use tokio::sync::mpsc::UnboundedSender;

use crate::{
    Change, ConnInfo, ConnKey, PresenceError, PresenceEvent, PresenceStore, Snapshot, TeamPresence,
};

/// Presence kept in this process. Events go to the node through an unbounded channel:
/// sending never awaits, so it can happen under the lock, which is what keeps events in
/// version order. The channel is drained by the node's fan-out task, which does no I/O.
pub struct MemoryPresence {
    teams: Mutex<HashMap<TeamId, TeamPresence>>,
    events: UnboundedSender<PresenceEvent>,
}

impl MemoryPresence {
    pub fn new(events: UnboundedSender<PresenceEvent>) -> Self {
        Self {
            teams: Mutex::new(HashMap::new()),
            events,
        }
    }

    fn emit(&self, team: &TeamId, origin: &ConnKey, change: &Change) {
        if change.joined.is_none() && change.left.is_none() {
            return;
        }
        // A closed receiver means the node is shutting down; nobody is left to tell.
        let _ = self.events.send(PresenceEvent {
            team: team.clone(),
            version: change.version,
            origin: origin.clone(),
            joins: change.joined.iter().cloned().collect(),
            leaves: change.left.iter().cloned().collect(),
            occupancy: change.occupancy,
        });
    }
}

#[async_trait]
impl PresenceStore for MemoryPresence {
    /// Every change happens in this process, so every event is seen anyway.
    async fn host(&self, _team: &TeamId) -> Result<(), PresenceError> {
        Ok(())
    }

    async fn unhost(&self, _team: &TeamId) {}

    async fn join(&self, team: &TeamId, conn: ConnInfo) -> Result<Change, PresenceError> {
        let origin = conn.key.clone();
        let mut teams = self.teams.lock().unwrap_or_else(|e| e.into_inner());
        let change = teams.entry(team.clone()).or_default().join(conn);
        self.emit(team, &origin, &change);
        Ok(change)
    }

    async fn leave(&self, team: &TeamId, key: &ConnKey) -> Result<Change, PresenceError> {
        let mut teams = self.teams.lock().unwrap_or_else(|e| e.into_inner());
        let Some(state) = teams.get_mut(team) else {
            return Ok(Change::default());
        };
        let change = state.leave(key);
        self.emit(team, key, &change);
        // Versions must never go backwards for a team that is still known to a client,
        // so the (tiny) empty state is kept rather than removed.
        Ok(change)
    }

    async fn snapshot(&self, team: &TeamId) -> Result<Snapshot, PresenceError> {
        let teams = self.teams.lock().unwrap_or_else(|e| e.into_inner());
        Ok(match teams.get(team) {
            Some(t) => Snapshot {
                version: t.version(),
                entries: t.entries(),
            },
            None => Snapshot {
                version: 0,
                entries: Vec::new(),
            },
        })
    }
}
