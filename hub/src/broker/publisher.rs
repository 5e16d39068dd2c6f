//! Publishing through Redis without a round trip per message.
//!
//! Every publish of the node goes through one task, on the node's Redis layer (one
//! multiplexed connection; one per shard in cluster mode). Callers hand it a ready-made script call and get a future for the reply;
//! the task takes whatever has queued up since its last write, sends it as **one
//! pipeline** and answers each caller from the replies, which Redis returns in order.
//! So:
//!
//! - a publish costs no pool checkout and no `PING` (a pooled connection is checked on
//!   every checkout: one extra round trip per publish);
//! - a session does not wait for its publish to come back before it reads its next
//!   frame, and publishes that arrive together share one write and one round trip;
//! - order is fixed when a call is queued: one task, one connection, one pipeline at a
//!   time, so two publishes queued one after the other run in that order in Redis.
//!
//! `NOSCRIPT` (a Redis that restarted or flushed its scripts): the calls of the
//! pipeline that got it are sent again, in their order, after `SCRIPT LOAD`, and before
//! anything queued later. The calls of the same pipeline that did run keep their place,
//! so only a pipeline that straddles a script flush can run a team's publishes out of
//! queue order.
//!
//! Redis Cluster: a pipeline must keep to one slot, so a batch is split per team (all
//! of a team's keys share one hash tag) and the teams' pipelines go out together, each
//! to its shard. A team's calls keep their order inside its pipeline, and the next
//! batch waits for the whole current one, so order per team holds across batches too.
//!
//! Failures: the connections are the node's Redis layer's, which reconnects with
//! backoff and jitter on its own. A pipeline that errs or does not answer within the
//! layer's timeout answers `Unavailable` for each of its calls (a call that timed out
//! may still have run: the usual ambiguity of a remote call). In cluster mode only the
//! teams of a failing shard fail; the others' pipelines succeed, although the next
//! batch waits until the failing one has timed out.

use std::future::Future;
use std::time::Duration;

use futures_util::future::join_all;
use redis::{Cmd, RedisResult};
use teamhub_protocol::TeamId;
use teamhub_redis::{Commands, Mode, Redis};
use tokio::sync::{mpsc, oneshot};

use super::BrokerError;

/// Most calls in one batch; more wait for the next one.
const MAX_BATCH: usize = 512;

struct Call {
    team: TeamId,
    cmd: Cmd,
    reply: oneshot::Sender<Result<String, BrokerError>>,
}

/// The handle publishes are queued on; the task stops when it is dropped.
pub(super) struct Publisher {
    calls: mpsc::UnboundedSender<Call>,
    timeout: Duration,
}

impl Publisher {
    /// Starts the task (inside a Tokio runtime). `script` is the source whose SHA the
    /// queued `EVALSHA` calls name, loaded again on `NOSCRIPT`.
    pub(super) fn start(redis: &Redis, script: &'static str) -> Self {
        let (calls, rx) = mpsc::unbounded_channel();
        let task = Task {
            commands: redis.commands(),
            mode: redis.mode(),
            script,
            timeout: redis.op_timeout(),
            rx,
        };
        tokio::spawn(task.run());
        Publisher {
            calls,
            timeout: redis.op_timeout(),
        }
    }

    /// Queues `cmd` for `team` (its place in the order is fixed now) and returns its
    /// reply.
    pub(super) fn call(
        &self,
        team: &TeamId,
        cmd: Cmd,
    ) -> impl Future<Output = Result<String, BrokerError>> + Send + Sync + 'static {
        let (reply, rx) = oneshot::channel();
        let queued = self.calls.send(Call {
            team: team.clone(),
            cmd,
            reply,
        });
        // The task answers within its own timeout; this bound covers a task stuck
        // behind a long queue.
        let bound = self.timeout * 3;
        async move {
            let gone = || BrokerError::Unavailable("redis publisher stopped".into());
            queued.map_err(|_| gone())?;
            match tokio::time::timeout(bound, rx).await {
                Ok(Ok(r)) => r,
                Ok(Err(_)) => Err(gone()),
                Err(_) => Err(BrokerError::Unavailable(
                    "redis did not answer in time".into(),
                )),
            }
        }
    }
}

struct Task {
    commands: Commands,
    mode: Mode,
    script: &'static str,
    timeout: Duration,
    rx: mpsc::UnboundedReceiver<Call>,
}

impl Task {
    async fn run(mut self) {
        let mut batch = Vec::with_capacity(64);
        while self.rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
            match self.mode {
                Mode::Single => self.send(std::mem::take(&mut batch)).await,
                Mode::Cluster => {
                    let groups = per_team(std::mem::take(&mut batch));
                    join_all(groups.into_iter().map(|g| self.send(g))).await;
                }
            }
        }
    }

    /// Sends calls as one pipeline (twice at most: again after `SCRIPT LOAD` for the
    /// calls that got `NOSCRIPT`) and answers every call.
    async fn send(&self, mut batch: Vec<Call>) {
        let mut conn = self.commands.clone();
        for attempt in 0..2 {
            let mut pipe = redis::pipe();
            pipe.ignore_errors();
            // Moved, not copied: a call's command is needed again only on `NOSCRIPT`,
            // and then it is taken back from the pipeline.
            for call in &mut batch {
                pipe.add_command(std::mem::take(&mut call.cmd));
            }
            let sent = pipe.query_async::<Vec<RedisResult<String>>>(&mut conn);
            let replies = match tokio::time::timeout(self.timeout, sent).await {
                Ok(Ok(r)) if r.len() == batch.len() => r,
                Ok(Ok(_)) => return answer_all(batch, "redis answered a pipeline short"),
                Ok(Err(e)) => return answer_all(batch, &format!("redis: {e}")),
                Err(_) => return answer_all(batch, "redis did not answer in time"),
            };
            let mut again = Vec::new();
            for ((mut call, reply), cmd) in batch.drain(..).zip(replies).zip(pipe.cmd_iter()) {
                match reply {
                    Err(e) if attempt == 0 && e.code() == Some("NOSCRIPT") => {
                        call.cmd = cmd.clone();
                        again.push(call);
                    }
                    Ok(v) => {
                        let _ = call.reply.send(Ok(v));
                    }
                    Err(e) => {
                        let _ = call
                            .reply
                            .send(Err(BrokerError::Unavailable(format!("redis: {e}"))));
                    }
                }
            }
            if again.is_empty() {
                return;
            }
            batch = again;
            // In cluster mode `SCRIPT LOAD` goes to every primary.
            let mut load_cmd = redis::cmd("SCRIPT");
            load_cmd.arg("LOAD").arg(self.script);
            let load = load_cmd.query_async::<redis::Value>(&mut conn);
            match tokio::time::timeout(self.timeout, load).await {
                Ok(Ok(_)) => tracing::info!("publish script loaded into redis again"),
                _ => return answer_all(batch, "redis: loading the publish script failed"),
            }
        }
        answer_all(batch, "redis keeps losing the publish script");
    }
}

/// Splits a batch into one group per team, each in queue order.
fn per_team(batch: Vec<Call>) -> Vec<Vec<Call>> {
    let mut groups: Vec<Vec<Call>> = Vec::new();
    let mut index: std::collections::HashMap<TeamId, usize> = std::collections::HashMap::new();
    for call in batch {
        match index.get(&call.team) {
            Some(&i) => groups[i].push(call),
            None => {
                index.insert(call.team.clone(), groups.len());
                groups.push(vec![call]);
            }
        }
    }
    groups
}

fn answer_all(batch: Vec<Call>, why: &str) {
    for call in batch {
        let _ = call
            .reply
            .send(Err(BrokerError::Unavailable(why.to_owned())));
    }
}
