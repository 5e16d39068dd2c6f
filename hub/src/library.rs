//! The pattern library: the operations behind `/api/v1/teams/{team}/patterns`.
//!
//! The store decides every write with a compare-and-set (see
//! `teamhub_persistence::patterns`); this module adds permissions, the activity log and
//! the change notice: every change is published to the team as a message of type
//! `pattern.updated` or `pattern.deleted` with `data: {"name","version"}`, through the
//! broker, so it reaches every node. The notice is sent after the write committed; if
//! the broker is unreachable then, the write stands (it is in the `since_version` feed)
//! and the failure is logged, since answering an error would make the client retry a
//! write that already happened.

use serde_json::value::RawValue;
use teamhub_persistence::{ActivityEvent, Changes, Expect, Pattern, PatternError};
use teamhub_protocol::{Action, ErrorCode, MessageType, PatternName, TeamId};

use crate::auth::Identity;
use crate::error::OpError;
use crate::node::{ClientInfo, Node};

/// Why a pattern write did not happen.
#[derive(Debug)]
pub enum WriteError {
    /// The precondition failed; what is stored now (the contract's `current`).
    Conflict(Box<Pattern>),
    Op(OpError),
}

impl From<OpError> for WriteError {
    fn from(e: OpError) -> Self {
        WriteError::Op(e)
    }
}

impl From<PatternError> for WriteError {
    fn from(e: PatternError) -> Self {
        match e {
            PatternError::Conflict(current) => WriteError::Conflict(current),
            PatternError::NotFound => {
                WriteError::Op(OpError::new(ErrorCode::NotFound, "no such pattern"))
            }
            PatternError::Store(e) => WriteError::Op(e.into()),
        }
    }
}

impl Node {
    pub async fn pattern_changes(
        &self,
        caller: &Identity,
        team: &TeamId,
        since: u64,
    ) -> Result<Changes, OpError> {
        self.authorize(caller, team, Action::ReadPatterns)?;
        Ok(self.patterns.changes(team, since).await?)
    }

    /// The live pattern of that name (`not_found` when missing or deleted).
    pub async fn pattern(
        &self,
        caller: &Identity,
        team: &TeamId,
        name: &PatternName,
    ) -> Result<Pattern, OpError> {
        self.authorize(caller, team, Action::ReadPatterns)?;
        match self.patterns.get(team, name).await? {
            Some(p) if !p.deleted => Ok(p),
            _ => Err(OpError::new(
                ErrorCode::NotFound,
                format!("team {team} has no pattern {name}"),
            )),
        }
    }

    pub async fn put_pattern(
        &self,
        caller: &Identity,
        team: &TeamId,
        name: &PatternName,
        content: &RawValue,
        expect: Expect,
        client: &ClientInfo,
    ) -> Result<Pattern, WriteError> {
        self.authorize(caller, team, Action::WritePattern)?;
        let pattern = self
            .patterns
            .put(team, name, content, expect, &caller.user)
            .await?;
        self.pattern_changed(caller, team, &pattern, "pattern.updated", client)
            .await;
        Ok(pattern)
    }

    /// Deletes the live pattern at `version`; returns its tombstone.
    pub async fn delete_pattern(
        &self,
        caller: &Identity,
        team: &TeamId,
        name: &PatternName,
        version: u64,
        client: &ClientInfo,
    ) -> Result<Pattern, WriteError> {
        self.authorize(caller, team, Action::DeletePattern)?;
        let tomb = self
            .patterns
            .delete(team, name, version, &caller.user)
            .await?;
        self.pattern_changed(caller, team, &tomb, "pattern.deleted", client)
            .await;
        Ok(tomb)
    }

    /// Tells the team and records the change.
    async fn pattern_changed(
        &self,
        caller: &Identity,
        team: &TeamId,
        pattern: &Pattern,
        action: &'static str,
        client: &ClientInfo,
    ) {
        let data = serde_json::json!({"name": pattern.name, "version": pattern.version});
        let data = serde_json::value::to_raw_value(&data).expect("a name and a number encode");
        let ty = MessageType::new(action).expect("a valid message type");
        if let Err(e) = self.publish_system(team, &ty, &data, &caller.user).await {
            tracing::warn!(%team, name = %pattern.name, error = %e, "pattern change notice not published");
        }
        self.activity.record(
            ActivityEvent::new(team.clone(), caller.user.clone(), action)
                .with_resource("pattern", pattern.name.as_str())
                .with_metadata(data)
                .with_client(client.ip, client.user_agent.clone()),
        );
    }
}
