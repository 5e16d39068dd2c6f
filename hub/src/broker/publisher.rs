//! Publishing through Redis without a round trip per message.
//!
//! Every publish of the node goes through one task that owns one multiplexed
//! connection. Callers hand it a ready-made script call and get a future for the reply;
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
//! Failures: a connection that errs or does not answer within the timeout is dropped,
//! every call of that pipeline answers `Unavailable` (a call that timed out may still
//! have run: the usual ambiguity of a remote call), and the next pipeline connects
//! afresh, with a full-jitter backoff after consecutive failures so an outage is not
//! hammered.

use std::future::Future;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{Cmd, RedisResult};
use tokio::sync::{mpsc, oneshot};

use super::BrokerError;

/// Most calls in one pipeline; more wait for the next one.
const MAX_BATCH: usize = 512;
/// Backoff after a failed connection attempt: full jitter up to a doubling cap.
const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

struct Call {
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
    pub(super) fn start(client: redis::Client, script: &'static str, timeout: Duration) -> Self {
        let (calls, rx) = mpsc::unbounded_channel();
        let task = Task {
            client,
            script,
            timeout,
            conn: None,
            failures: 0,
            rx,
        };
        tokio::spawn(task.run());
        Publisher { calls, timeout }
    }

    /// Queues `cmd` (its place in the order is fixed now) and returns its reply.
    pub(super) fn call(
        &self,
        cmd: Cmd,
    ) -> impl Future<Output = Result<String, BrokerError>> + Send + Sync + 'static {
        let (reply, rx) = oneshot::channel();
        let queued = self.calls.send(Call { cmd, reply });
        // The task answers within its own timeout; this bound covers a task stuck
        // behind a slow connect or a long queue.
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
    client: redis::Client,
    script: &'static str,
    timeout: Duration,
    conn: Option<MultiplexedConnection>,
    /// Consecutive failed attempts, for the backoff.
    failures: u32,
    rx: mpsc::UnboundedReceiver<Call>,
}

impl Task {
    async fn run(mut self) {
        let mut batch = Vec::with_capacity(64);
        while self.rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
            self.flush(&mut batch).await;
            if batch.capacity() > 1024 {
                batch.shrink_to(64);
            }
        }
    }

    async fn connection(&mut self) -> Result<MultiplexedConnection, BrokerError> {
        if let Some(c) = &self.conn {
            return Ok(c.clone());
        }
        if self.failures > 0 {
            let cap = MIN_BACKOFF
                .saturating_mul(1 << self.failures.min(8))
                .min(MAX_BACKOFF);
            let pause = cap.mul_f64(rand::random::<f64>());
            tokio::time::sleep(pause).await;
        }
        let connect = self.client.get_multiplexed_async_connection();
        match tokio::time::timeout(self.timeout, connect).await {
            Ok(Ok(c)) => {
                self.conn = Some(c.clone());
                Ok(c)
            }
            Ok(Err(e)) => Err(self.failed(format!("redis: {e}"))),
            Err(_) => Err(self.failed("redis connect timed out".into())),
        }
    }

    fn failed(&mut self, why: String) -> BrokerError {
        self.conn = None;
        self.failures = self.failures.saturating_add(1);
        BrokerError::Unavailable(why)
    }

    /// Sends the batch as one pipeline (twice at most: again after `SCRIPT LOAD` for
    /// the calls that got `NOSCRIPT`) and answers every call.
    async fn flush(&mut self, batch: &mut Vec<Call>) {
        let mut conn = match self.connection().await {
            Ok(c) => c,
            Err(e) => return answer_all(batch, &e),
        };
        for attempt in 0..2 {
            let mut pipe = redis::pipe();
            pipe.ignore_errors();
            // Moved, not copied: a call's command is needed again only on `NOSCRIPT`,
            // and then it is taken back from the pipeline.
            for call in batch.iter_mut() {
                pipe.add_command(std::mem::take(&mut call.cmd));
            }
            let sent = pipe.query_async::<Vec<RedisResult<String>>>(&mut conn);
            let replies = match tokio::time::timeout(self.timeout, sent).await {
                Ok(Ok(r)) if r.len() == batch.len() => r,
                Ok(Ok(_)) => {
                    let e = self.failed("redis answered a pipeline short".into());
                    return answer_all(batch, &e);
                }
                Ok(Err(e)) => {
                    let e = self.failed(format!("redis: {e}"));
                    return answer_all(batch, &e);
                }
                Err(_) => {
                    let e = self.failed("redis did not answer in time".into());
                    return answer_all(batch, &e);
                }
            };
            self.failures = 0;
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
            *batch = again;
            let mut load_cmd = redis::cmd("SCRIPT");
            load_cmd.arg("LOAD").arg(self.script);
            let load = load_cmd.query_async::<String>(&mut conn);
            match tokio::time::timeout(self.timeout, load).await {
                Ok(Ok(_sha)) => tracing::info!("publish script loaded into redis again"),
                _ => {
                    let e = self.failed("redis: loading the publish script failed".into());
                    return answer_all(batch, &e);
                }
            }
        }
        answer_all(
            batch,
            &BrokerError::Unavailable("redis keeps losing the publish script".into()),
        );
    }
}

fn answer_all(batch: &mut Vec<Call>, e: &BrokerError) {
    for call in batch.drain(..) {
        let _ = call.reply.send(Err(e.clone()));
    }
}
