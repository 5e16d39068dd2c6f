//! One function per client op: check, act, encode the reply.

use axum::extract::ws::Utf8Bytes;
use serde_json::value::RawValue;
use teamhub_protocol::{
    Action, ClientOp, ErrorCode, Join, KickReason, MessageType, MetaError, Refresh, TeamId,
};

use super::replies::{self, Empty, ExpBody, JoinBody, PresenceBody};
use super::{Session, expiry_instant};
use crate::error::OpError;
use crate::node::{Outgoing, PendingPublish};
use crate::outbox::Outbound;

/// What an op answers with: its encoded reply, or a publish under way, whose reply
/// follows once it is published (see the module docs of `session`).
pub(super) enum Answer {
    Now(Utf8Bytes),
    Later(PendingPublish),
}

impl Session {
    /// Acts on one decoded frame.
    pub(super) async fn dispatch(
        &mut self,
        op: ClientOp,
        id: Option<u64>,
    ) -> Result<Answer, OpError> {
        let reply = match op {
            ClientOp::Join(j) => self.op_join(id, j).await?,
            ClientOp::Leave(l) => {
                self.leave_team(&l.team).await;
                replies::reply(id, Empty {})
            }
            ClientOp::Publish(p) => {
                return Ok(Answer::Later(
                    self.op_publish(&p.team, &p.ty, &p.data, p.echo)?,
                ));
            }
            ClientOp::Presence(p) => {
                let snapshot = self.node.presence_snapshot(&self.identity, &p.team).await?;
                replies::reply(
                    id,
                    PresenceBody {
                        presence: &snapshot.entries,
                    },
                )
            }
            ClientOp::Refresh(r) => self.op_refresh(id, r).await?,
            ClientOp::Ping => replies::pong(id),
        };
        Ok(Answer::Now(reply))
    }

    async fn op_join(&mut self, id: Option<u64>, j: Join) -> Result<Utf8Bytes, OpError> {
        self.node.authorize(&self.identity, &j.team, Action::Join)?;
        let meta = j.meta_object().map_err(|e| match e {
            MetaError::TooLarge => OpError::new(ErrorCode::TooLarge, e.to_string()),
            MetaError::NotObject => OpError::bad_request(e.to_string()),
        })?;
        if !self.joined.contains_key(&j.team) && self.joined.len() >= self.node.limits.max_joins {
            return Err(OpError::bad_request(format!(
                "this connection has joined the maximum of {} teams; leave one first",
                self.node.limits.max_joins
            )));
        }
        let joined = self.join_team(&j.team, j.since.as_ref(), meta).await?;
        let missed = joined
            .recovery
            .missed
            .iter()
            .map(|m| serde_json::from_str::<&RawValue>(m.as_str()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| OpError::internal(format!("corrupt history entry: {e}")))?;
        Ok(replies::reply(
            id,
            JoinBody {
                team: &j.team,
                epoch: &joined.recovery.position.epoch,
                offset: joined.recovery.position.offset,
                presence: &joined.snapshot.entries,
                recovered: joined.recovery.recovered,
                missed,
            },
        ))
    }

    /// Checks and enqueues a publish from this connection (`/ws` and the seed
    /// endpoint), without waiting for it.
    pub(super) fn op_publish(
        &self,
        team: &TeamId,
        ty: &MessageType,
        data: &RawValue,
        echo: bool,
    ) -> Result<PendingPublish, OpError> {
        self.node.enqueue_publish(
            &self.identity,
            Outgoing {
                team,
                ty,
                data,
                origin: Some(self.key.clone()),
                echo,
            },
            &self.client,
        )
    }

    /// Replaces the connection's claims. Teams the new token no longer grants are left,
    /// through the outbox so the `kicked` frames follow the reply.
    async fn op_refresh(&mut self, id: Option<u64>, r: Refresh) -> Result<Utf8Bytes, OpError> {
        // Boxed: a refetch of the identity provider's keys is rare, and the session's
        // future should not carry its state.
        let identity = Box::pin(self.node.auth.authenticate(&r.token)).await?;
        if identity.user != self.identity.user {
            return Err(OpError::new(
                ErrorCode::Unauthorized,
                format!(
                    "the new token is for {:?}, this connection is {:?}",
                    identity.user.as_str(),
                    self.identity.user.as_str()
                ),
            ));
        }
        let removed: Vec<TeamId> = self
            .joined
            .keys()
            .filter(|t| identity.role_in(t.as_str()).is_none())
            .cloned()
            .collect();
        self.expires_at = expiry_instant(identity.exp, self.node.limits.jwt_leeway);
        let exp = identity.exp;
        self.identity = identity;
        for team in removed {
            self.outbox.push(Outbound::Kick {
                team,
                reason: KickReason::RoleRemoved,
            });
        }
        Ok(replies::reply(id, ExpBody { exp }))
    }
}
