//! Command connections: one handle over a single server's multiplexed connection or a
//! cluster's per-shard connections, so callers write one `query_async` for both modes.

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{MultipleNodeRoutingInfo, ResponsePolicy, RoutingInfo};
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};

/// Sends commands to Redis. Clone it per use: every clone shares the connection(s),
/// which reconnect on their own with exponential backoff and full jitter.
///
/// In cluster mode each command goes to the shard that owns its key; a pipeline must
/// keep to one slot (callers group by team, whose keys share one hash tag).
#[derive(Clone)]
pub struct Commands(Conn);

#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Commands {
    pub(crate) fn single(c: ConnectionManager) -> Self {
        Commands(Conn::Single(c))
    }

    pub(crate) fn cluster(c: ClusterConnection) -> Self {
        Commands(Conn::Cluster(c))
    }

    /// `PING` to the server, or to every primary of a cluster.
    pub(crate) async fn ping_all(&mut self) -> RedisResult<()> {
        match &mut self.0 {
            Conn::Single(c) => redis::cmd("PING").query_async::<()>(c).await,
            Conn::Cluster(c) => c
                .route_command(
                    redis::cmd("PING"),
                    RoutingInfo::MultiNode((
                        MultipleNodeRoutingInfo::AllMasters,
                        Some(ResponsePolicy::AllSucceeded),
                    )),
                )
                .await
                .map(drop),
        }
    }
}

impl ConnectionLike for Commands {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match &mut self.0 {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match &mut self.0 {
            Conn::Single(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match &self.0 {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}
