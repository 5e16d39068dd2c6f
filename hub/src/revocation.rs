//! Member revocations: the per-node cache every permission check consults, and the
//! revoke operation.
//!
//! A revocation of `user` in `team` at time R refuses, in that team, every identity of
//! that user issued at or before R's second (`iat <= floor(R)`): a JWT carries only
//! whole seconds, so a token issued in the same second as the revocation cannot be told
//! apart from one issued just before it, and is refused too (a token minted a second
//! later works). A token without `iat` counts as issued before every revocation. Clock
//! skew leeway is deliberately not added: it would refuse fresh tokens for that long.
//!
//! A revocation is needed until every token issued before it has expired. With
//! `--max-token-lifetime` (tokens must carry `iat` and live at most that long) the
//! node prunes, every `--retention-interval`, the revocations older than the lifetime
//! plus the clock-skew leeway, from the database and from this cache ([`prune_loop`]);
//! API keys' revocations stay, since a key never expires. Without the bound every
//! revocation is kept. The cache is loaded from the database at start, updated by
//! [`crate::control::Command::Revoked`] on every node, and reloaded after the control
//! channel was (re)subscribed. Lookups are one `DashMap` read, on the hot path of every
//! permission check; no guard is held beyond the lookup.

use std::collections::HashMap;

use dashmap::DashMap;
use teamhub_persistence::{ActivityEvent, Revocation};
use teamhub_protocol::{Action, ErrorCode, TeamId, UserId};
use time::OffsetDateTime;

use crate::auth::Identity;
use crate::control::Command;
use crate::error::OpError;
use crate::node::{ClientInfo, Node};

/// Revocation times (seconds since the Unix epoch, rounded down) by team and user.
#[derive(Debug, Default)]
pub struct Revocations {
    teams: DashMap<TeamId, HashMap<UserId, i64>>,
}

impl Revocations {
    /// Records a revocation; an older one never replaces a newer one.
    pub fn apply(&self, team: &TeamId, user: &UserId, at: OffsetDateTime) {
        let secs = at.unix_timestamp();
        let mut users = self.teams.entry(team.clone()).or_default();
        let entry = users.entry(user.clone()).or_insert(secs);
        *entry = (*entry).max(secs);
    }

    /// Merges what the database holds (after a start or a gap in control traffic).
    pub fn load(&self, all: &[Revocation]) {
        for r in all {
            self.apply(&r.team, &r.user, r.revoked_at);
        }
    }

    /// Forgets the revocations made before `before` (Unix seconds), except API keys'
    /// (see [`teamhub_persistence::RevocationStore::prune`]).
    pub fn prune(&self, before: i64) {
        self.teams.retain(|_, users| {
            users.retain(|user, at| {
                *at >= before
                    || user
                        .as_str()
                        .starts_with(teamhub_persistence::API_KEY_USER_PREFIX)
            });
            !users.is_empty()
        });
    }

    /// Whether `identity` was revoked in `team`.
    pub fn is_revoked(&self, team: &TeamId, identity: &Identity) -> bool {
        let Some(users) = self.teams.get(team) else {
            return false;
        };
        let Some(&revoked) = users.get(&identity.user) else {
            return false;
        };
        match identity.iat {
            Some(iat) => i64::try_from(iat).unwrap_or(i64::MAX) <= revoked,
            None => true,
        }
    }
}

/// Prunes revocations every `interval` until `stop`: those made more than `lifetime`
/// ago, from the store and then from the node's cache. Every node runs it; deleting is
/// idempotent.
pub async fn prune_loop(
    node: std::sync::Arc<Node>,
    lifetime: std::time::Duration,
    interval: std::time::Duration,
) {
    let stop = node.shutdown.clone();
    loop {
        let cutoff = teamhub_persistence::now_utc() - lifetime;
        match node.revocation_store.prune(cutoff).await {
            Ok(pruned) => {
                if pruned > 0 {
                    tracing::info!(
                        pruned,
                        "pruned member revocations older than every token they refuse"
                    );
                }
                node.revocations.prune(cutoff.unix_timestamp());
            }
            // The next round retries; until then the revocations keep refusing tokens
            // that have expired anyway.
            Err(e) => tracing::warn!(error = %e, "pruning member revocations failed"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}

impl Node {
    /// Revokes `user` in `team`: stored, applied here at once, and sent to every node,
    /// which kicks the user's live connections from the team.
    pub async fn revoke_member(
        &self,
        caller: &Identity,
        team: &TeamId,
        user: &UserId,
        client: &ClientInfo,
    ) -> Result<Revocation, OpError> {
        self.authorize(caller, team, Action::RevokeMembers)?;
        let wanted = Revocation {
            team: team.clone(),
            user: user.clone(),
            revoked_at: teamhub_persistence::now_utc(),
            revoked_by: caller.user.clone(),
        };
        let stored = self
            .revocation_store
            .revoke(&wanted)
            .await
            .map_err(OpError::from)?;
        self.revocations.apply(team, user, stored.revoked_at);
        let at_micros = (stored.revoked_at.unix_timestamp_nanos() / 1000) as i64;
        self.broadcast(Command::Revoked {
            team: team.clone(),
            user: user.clone(),
            at_micros,
        })
        .await;
        let meta = serde_json::json!({"user": user, "revoked_at": at_micros});
        self.activity.record(
            ActivityEvent::new(team.clone(), caller.user.clone(), "member.revoked")
                .with_resource("member", user.as_str())
                .with_metadata(serde_json::value::to_raw_value(&meta).map_err(|e| {
                    OpError::new(ErrorCode::Internal, format!("encoding metadata: {e}"))
                })?)
                .with_client(client.ip, client.user_agent.clone()),
        );
        Ok(stored)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use teamhub_protocol::Role;

    #[test]
    fn tokens_issued_up_to_the_revocation_second_are_refused() {
        let r = Revocations::default();
        let team = TeamId::new("t").unwrap();
        let at =
            OffsetDateTime::from_unix_timestamp(1000).unwrap() + time::Duration::milliseconds(500);
        let id = |iat: Option<u64>| {
            let mut i = Identity::for_api_key("k", team.clone(), Role::Viewer, 0);
            i.user = UserId::new("u").unwrap();
            i.iat = iat;
            i
        };
        assert!(!r.is_revoked(&team, &id(Some(999))), "nothing revoked yet");
        r.apply(&team, &UserId::new("u").unwrap(), at);
        assert!(r.is_revoked(&team, &id(Some(999))));
        assert!(r.is_revoked(&team, &id(Some(1000))), "same second");
        assert!(r.is_revoked(&team, &id(None)), "no iat counts as old");
        assert!(!r.is_revoked(&team, &id(Some(1001))));
        assert!(!r.is_revoked(&TeamId::new("other").unwrap(), &id(Some(1))));
        // An older revocation does not move it back.
        r.apply(
            &team,
            &UserId::new("u").unwrap(),
            OffsetDateTime::from_unix_timestamp(5).unwrap(),
        );
        assert!(r.is_revoked(&team, &id(Some(1000))));

        // Pruning forgets revocations older than the cut-off, but not API keys'.
        let key = UserId::new("apikey:k").unwrap();
        r.apply(
            &team,
            &key,
            OffsetDateTime::from_unix_timestamp(10).unwrap(),
        );
        let key_identity = |iat| {
            let mut i = id(Some(iat));
            i.user = key.clone();
            i
        };
        r.prune(999);
        assert!(
            r.is_revoked(&team, &id(Some(1000))),
            "newer than the cut-off"
        );
        r.prune(1001);
        assert!(!r.is_revoked(&team, &id(Some(1000))), "pruned");
        assert!(r.is_revoked(&team, &key_identity(5)), "an API key's stays");
    }
}
