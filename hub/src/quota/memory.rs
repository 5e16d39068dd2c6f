//! Team connections counted in this process (a single node).

use std::collections::HashSet;

use async_trait::async_trait;
use dashmap::DashMap;
use teamhub_presence::ConnKey;
use teamhub_protocol::TeamId;

use super::{QuotaError, QuotaStore, Taken};

/// The connections joined to each team, under the team's map entry (no guard is held
/// across an `.await`: nothing here awaits).
#[derive(Debug, Default)]
pub struct MemoryQuota {
    teams: DashMap<TeamId, HashSet<ConnKey>>,
}

#[async_trait]
impl QuotaStore for MemoryQuota {
    async fn take(
        &self,
        team: &TeamId,
        conn: &ConnKey,
        max: Option<u64>,
    ) -> Result<Taken, QuotaError> {
        let mut conns = self.teams.entry(team.clone()).or_default();
        let n = conns.len() as u64;
        if conns.contains(conn) {
            return Ok(Taken::Yes(n));
        }
        if max.is_some_and(|max| n >= max) {
            return Ok(Taken::Full);
        }
        conns.insert(conn.clone());
        Ok(Taken::Yes(n + 1))
    }

    async fn release(&self, team: &TeamId, conn: &ConnKey) -> Result<(), QuotaError> {
        let mut empty = false;
        if let Some(mut conns) = self.teams.get_mut(team) {
            conns.remove(conn);
            empty = conns.is_empty();
        }
        if empty {
            self.teams.remove_if(team, |_, conns| conns.is_empty());
        }
        Ok(())
    }

    async fn count(&self, team: &TeamId) -> Result<u64, QuotaError> {
        Ok(self.teams.get(team).map_or(0, |c| c.len() as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::super::conformance;
    use super::*;

    #[tokio::test]
    async fn memory_takes_up_to_the_cap() {
        conformance::takes_up_to_the_cap(&MemoryQuota::default()).await;
    }

    #[tokio::test]
    async fn memory_concurrent_takes_never_pass_the_cap() {
        conformance::concurrent_takes_never_pass_the_cap(&MemoryQuota::default()).await;
    }
}
