//! Joining and leaving teams, and what a session lets through after a join.
//!
//! The order of a join is what makes it exact:
//! 1. the connection is added to the registry, so from now on every event of the team
//!    reaches its outbox;
//! 2. presence records it, then a snapshot is taken (version V);
//! 3. the history position (offset O) is read, with `missed` when recovering;
//! 4. the reply is written, and afterwards only events with offset > O or presence
//!    version > V are let through. Whatever was queued between 1 and 4 and is already
//!    in the reply is dropped, and nothing after it can be missed.

use teamhub_persistence::ActivityEvent;
use teamhub_presence::{ConnInfo, Snapshot};
use teamhub_protocol::{ErrorCode, Since, TeamId};

use super::Session;
use crate::broker::{Recovery, recover};
use crate::error::OpError;
use crate::event::EventKind;
use crate::quota::Taken;
use crate::registry::Subscriber;

/// Per joined team: the newest offset and presence version the client already has.
#[derive(Debug, Clone, Copy)]
pub(super) struct JoinState {
    offset: u64,
    presence_version: u64,
}

impl JoinState {
    /// Whether an event is news to this client; records it when it is.
    pub(super) fn admit(&mut self, kind: EventKind) -> bool {
        match kind {
            EventKind::Message { offset, .. } if offset > self.offset => {
                self.offset = offset;
                true
            }
            EventKind::Presence { version } if version > self.presence_version => {
                self.presence_version = version;
                true
            }
            _ => false,
        }
    }
}

pub(super) struct Joined {
    pub snapshot: Snapshot,
    pub recovery: Recovery,
}

impl Session {
    pub(super) async fn join_team(
        &mut self,
        team: &TeamId,
        since: Option<&Since>,
        meta: Option<serde_json::Map<String, serde_json::Value>>,
    ) -> Result<Joined, OpError> {
        let node = self.node.clone();
        let fresh = !self.joined.contains_key(team);
        if fresh {
            // The team's connection quota first: a refusal leaves nothing to undo.
            let (plan, quota) = node.plans.of(team);
            match node
                .quota
                .take(team, &self.key, quota.max_connections)
                .await?
            {
                Taken::Yes(n) => node.usage.connections(team, n),
                Taken::Full => {
                    crate::metrics::quota_refused(&plan, crate::metrics::QuotaKind::Connections);
                    return Err(OpError::new(
                        ErrorCode::QuotaExceeded,
                        format!(
                            "team {team} has the {} connections its plan allows; try again                              when one leaves",
                            quota.max_connections.unwrap_or_default()
                        ),
                    ));
                }
            }
            let sub = Subscriber {
                user: self.identity.user.clone(),
                outbox: self.outbox.clone(),
                framing: self.framing,
            };
            // Returns once the team's stream is live on this node, so the position read
            // below cannot miss a message; on error nothing changed but the quota.
            if let Err(e) = node.host(team, self.key.conn, sub).await {
                self.release_quota(team).await;
                return Err(e.into());
            }
        }
        let result = self.join_steps(team, since, meta).await;
        match result {
            Ok(joined) => {
                self.joined.insert(
                    team.clone(),
                    JoinState {
                        offset: joined.recovery.position.offset,
                        presence_version: joined.snapshot.version,
                    },
                );
                crate::metrics::counter_inc(crate::metrics::JOINS);
                self.record_teams();
                Ok(joined)
            }
            Err(e) => {
                if fresh {
                    self.forget(team).await;
                }
                Err(e)
            }
        }
    }

    async fn join_steps(
        &mut self,
        team: &TeamId,
        since: Option<&Since>,
        meta: Option<serde_json::Map<String, serde_json::Value>>,
    ) -> Result<Joined, OpError> {
        let node = &self.node;
        let info = ConnInfo {
            key: self.key.clone(),
            user: self.identity.user.clone(),
            name: self.identity.name.clone(),
            meta,
        };
        let change = node.presence.join(team, info).await?;
        if let Some(occupancy) = change.occupancy {
            node.occupancy.report(team, occupancy, change.version);
        }
        if change.joined.is_some() {
            self.record_presence(team, "presence.joined");
        }
        let snapshot = node.presence.snapshot(team).await?;
        let recovery = match since {
            Some(since) => recover(
                since,
                node.history.read(team, since.offset, usize::MAX).await?,
            ),
            None => Recovery {
                position: node.history.position(team).await?,
                recovered: false,
                missed: Vec::new(),
            },
        };
        Ok(Joined { snapshot, recovery })
    }

    /// Leaves a team. Returns false when the connection was not joined to it.
    pub(super) async fn leave_team(&mut self, team: &TeamId) -> bool {
        if self.joined.remove(team).is_none() {
            return false;
        }
        self.record_teams();
        self.forget(team).await;
        true
    }

    /// Undoes presence and registry membership (both idempotent). Presence first: the
    /// node still hosts the team then, so the leave's own event reaches it.
    pub(super) async fn forget(&mut self, team: &TeamId) {
        let node = self.node.clone();
        match node.presence.leave(team, &self.key).await {
            Ok(change) => {
                if let Some(occupancy) = change.occupancy {
                    node.occupancy.report(team, occupancy, change.version);
                }
                if change.left.is_some() {
                    self.record_presence(team, "presence.left");
                }
            }
            Err(e) => tracing::warn!(%team, error = %e, "presence leave failed"),
        }
        node.unhost(team, self.key.conn).await;
        self.release_quota(team).await;
    }

    /// Gives the connection's place in the team's quota back. A failure is logged: in
    /// a cluster the entry then expires within the presence TTL.
    async fn release_quota(&self, team: &TeamId) {
        if let Err(e) = self.node.quota.release(team, &self.key).await {
            tracing::warn!(%team, error = %e, "releasing a team connection failed");
        }
    }

    fn record_presence(&self, team: &TeamId, action: &str) {
        let event = ActivityEvent::new(team.clone(), self.identity.user.clone(), action)
            .with_resource("user", self.identity.user.as_str())
            .with_client(self.client.ip, self.client.user_agent.clone());
        self.node.activity.record(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_news_is_admitted() {
        let mut s = JoinState {
            offset: 5,
            presence_version: 2,
        };
        assert!(
            !s.admit(EventKind::Message {
                offset: 5,
                echo: false
            }),
            "covered by the reply"
        );
        assert!(s.admit(EventKind::Message {
            offset: 6,
            echo: false
        }));
        assert!(
            !s.admit(EventKind::Message {
                offset: 6,
                echo: false
            }),
            "a duplicate"
        );
        assert!(!s.admit(EventKind::Presence { version: 2 }));
        assert!(s.admit(EventKind::Presence { version: 3 }));
    }
}
