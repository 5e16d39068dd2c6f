//! The pattern library: the operations behind `/api/v1/teams/{team}/patterns`.
//!
//! The store decides every write with a compare-and-set (see
//! `teamhub_persistence::patterns`); this module adds permissions, the activity log and
//! the change notice: every change is published to the team as a message of type
//! `pattern.updated` or `pattern.deleted` with `data: {"name","version"}`, through the
//! broker, so it reaches every node. The notice is sent after the write committed; if
//! the broker is unreachable then, the write stands (it is in the `since_version` feed)
//! and the call still succeeds, since answering an error would make the client retry a
//! write that already happened. The notice is then retried in the background every
//! [`NOTICE_RETRY`] until the broker takes it (for up to [`NOTICE_PATIENCE`], while the
//! node runs), so it reaches sockets shortly after the broker's return. Notices carry
//! the version, so one that arrives after a newer one is recognisable as old.

use serde_json::value::RawValue;
use teamhub_persistence::{ActivityEvent, Changes, Expect, Pattern, PatternError};
use teamhub_protocol::{Action, ErrorCode, MessageType, PatternName, TeamId};

use crate::auth::Identity;
use crate::error::OpError;
use crate::node::{ClientInfo, Node};

/// How often a notice the broker refused is tried again.
pub const NOTICE_RETRY: std::time::Duration = std::time::Duration::from_millis(250);
/// How long a notice is retried before it is given up (the change stays in the feed).
pub const NOTICE_PATIENCE: std::time::Duration = std::time::Duration::from_secs(600);

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
            tracing::warn!(%team, name = %pattern.name, error = %e, "pattern change notice not published; retrying");
            let (broker, shutdown) = (self.broker.clone(), self.shutdown.clone());
            let (team, user, data) = (team.clone(), caller.user.clone(), data.clone());
            tokio::spawn(async move {
                let give_up = tokio::time::Instant::now() + NOTICE_PATIENCE;
                while tokio::time::Instant::now() < give_up {
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(NOTICE_RETRY) => {}
                    }
                    let publication = crate::broker::Publication {
                        parts: crate::event::MessageParts {
                            team: &team,
                            ty: &ty,
                            user: &user,
                            data: &data,
                        },
                        origin: None,
                        echo: false,
                        messages_per_day: None,
                    };
                    if broker.publish(publication).await.is_ok() {
                        crate::metrics::counter_inc(crate::metrics::MESSAGES_PUBLISHED);
                        tracing::info!(%team, "pattern change notice published late");
                        return;
                    }
                }
                tracing::error!(%team, "pattern change notice dropped: the broker stayed unreachable");
            });
        }
        self.activity.record(
            ActivityEvent::new(team.clone(), caller.user.clone(), action)
                .with_resource("pattern", pattern.name.as_str())
                .with_metadata(data)
                .with_client(client.ip, client.user_agent.clone()),
        );
    }
}
