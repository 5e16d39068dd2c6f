//! `team.occupied` and `team.vacated`: a team's first user joined, or its last user
//! left, on any node.
//!
//! The presence store decides (atomically, for the whole cluster: a Redis script or
//! the in-process lock) that a change made the team occupied or vacated, and says so
//! in the change it returns and in the event it publishes. A node reports both: the
//! change of a join or leave it made itself (it may stop hearing the team's events as
//! soon as its last connection left) and every event it hears (which covers a team
//! emptied by the sweep of a dead node's connections). The two reports of one change,
//! and the reports of every node that hosts the team, carry the same event id (a
//! hash of the scope, the team, the type and the presence version), and the outbox
//! keeps one delivery per endpoint and event id: each change is delivered once,
//! cluster-wide.
//!
//! What counts as a change is what presence reports: a user who leaves and comes back
//! makes the team vacated and occupied again, even within one sweep period; a node
//! that dies makes its teams vacated when its connections are swept (within two
//! presence TTLs when another node hosts the team, else at the team's next join or
//! snapshot, just before it is occupied again).
//!
//! Reports are enqueued by one task per node, off every socket's path; a report that
//! cannot be written (the database is down) is retried for a minute, then dropped.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use teamhub_persistence::Outbox;
use teamhub_persistence::webhooks::WebhookEvent;
use teamhub_presence::Occupancy;
use teamhub_protocol::TeamId;
use tokio::sync::mpsc;

/// How long a report is retried while the database cannot take it.
const RETRY_FOR: Duration = Duration::from_secs(60);

/// Where a node reports occupancy changes (cheap to clone; never blocks).
#[derive(Debug, Clone)]
pub struct Reports {
    scope: Arc<str>,
    tx: mpsc::UnboundedSender<WebhookEvent>,
}

impl Reports {
    /// Reports to `outbox` through a task of their own. `scope` names the presence
    /// version space: the same on every node of a cluster (its Redis key prefix), and
    /// one of its own for a node whose presence is in-process (its versions start
    /// again at every start).
    pub fn spawn(scope: &str, outbox: Arc<dyn Outbox>) -> Reports {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(outbox, rx));
        Reports {
            scope: scope.into(),
            tx,
        }
    }

    /// A change at presence `version` of `team`.
    pub fn report(&self, team: &TeamId, occupancy: Occupancy, version: u64) {
        let ty = match occupancy {
            Occupancy::Occupied => "team.occupied",
            Occupancy::Vacated => "team.vacated",
        };
        let id = event_id(&self.scope, team, ty, version);
        let _ = self.tx.send(WebhookEvent {
            id,
            team: team.clone(),
            ty: ty.to_owned(),
            at: teamhub_persistence::now_utc(),
            data: serde_json::json!({ "team": team.as_str() }),
        });
    }
}

/// The id of one change: the same for every report of it.
fn event_id(scope: &str, team: &TeamId, ty: &str, version: u64) -> uuid::Uuid {
    let digest = Sha256::digest(format!("{scope}\n{}\n{ty}\n{version}", team.as_str()));
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

async fn run(outbox: Arc<dyn Outbox>, mut rx: mpsc::UnboundedReceiver<WebhookEvent>) {
    while let Some(event) = rx.recv().await {
        let give_up = Instant::now() + RETRY_FOR;
        let mut backoff = Duration::from_millis(100);
        loop {
            match outbox.enqueue(&event).await {
                Ok(_) => break,
                Err(e) if Instant::now() + backoff < give_up => {
                    tracing::debug!(error = %e, "enqueueing {}; retrying", event.ty);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
                Err(e) => {
                    tracing::warn!(team = event.team.as_str(), error = %e, "{} not delivered: the outbox is unavailable", event.ty);
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_id_per_change() {
        let t = TeamId::new("t").unwrap();
        let a = event_id("p", &t, "team.occupied", 7);
        assert_eq!(a, event_id("p", &t, "team.occupied", 7));
        assert_ne!(a, event_id("p", &t, "team.vacated", 7));
        assert_ne!(a, event_id("p", &t, "team.occupied", 8));
        assert_ne!(a, event_id("q", &t, "team.occupied", 7));
    }
}
