//! Command connections: one handle over a single server's multiplexed connection or a
//! cluster's per-shard connections, so callers write one `query_async` for both modes.

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use std::future::Future;
use std::time::Duration;

use redis::cluster_routing::{
    MultipleNodeRoutingInfo, ResponsePolicy, RoutingInfo, SingleNodeRoutingInfo,
};
use redis::{Cmd, Pipeline, RedisFuture, Value};

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

    /// `PING` to the server, or to every primary of a cluster at once, each bounded by
    /// `limit`; the error names each primary that does not answer (or that the cluster
    /// marks failed).
    pub(crate) async fn ping_all(&mut self, limit: Duration) -> Result<(), String> {
        match &mut self.0 {
            Conn::Single(c) => {
                bounded(
                    "PING".into(),
                    limit,
                    redis::cmd("PING").query_async::<()>(c),
                )
                .await
            }
            Conn::Cluster(c) => {
                // Any node that answers knows the topology.
                let any = RoutingInfo::MultiNode((
                    MultipleNodeRoutingInfo::AllNodes,
                    Some(ResponsePolicy::OneSucceeded),
                ));
                let nodes = bounded(
                    "CLUSTER NODES".into(),
                    limit,
                    c.route_command(redis::cmd("CLUSTER").arg("NODES").clone(), any),
                )
                .await?;
                let nodes: String = redis::FromRedisValue::from_redis_value(nodes)
                    .map_err(|e| format!("CLUSTER NODES: {e}"))?;
                let mut down = Vec::new();
                let mut pings = Vec::new();
                for (addr, flags) in primaries(&nodes) {
                    if flags.split(',').any(|f| f == "fail" || f == "fail?") {
                        down.push(format!("primary {addr} is marked {flags}"));
                        continue;
                    }
                    let Some((host, port)) = addr.rsplit_once(':') else {
                        continue;
                    };
                    let Ok(port) = port.parse() else { continue };
                    let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                        host: host.to_owned(),
                        port,
                    });
                    let mut c = c.clone();
                    let ping = async move { c.route_command(redis::cmd("PING"), route).await };
                    pings.push(bounded(format!("primary {addr}"), limit, ping));
                }
                for result in futures_util::future::join_all(pings).await {
                    if let Err(e) = result {
                        down.push(e);
                    }
                }
                if down.is_empty() {
                    Ok(())
                } else {
                    Err(down.join("; "))
                }
            }
        }
    }
}

/// `op` within `limit`, its failure described as `what: ...`.
async fn bounded<T>(
    what: String,
    limit: Duration,
    op: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, String> {
    match tokio::time::timeout(limit, op).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Err(_) => Err(format!("{what}: no answer within {limit:?}")),
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

/// The primaries of a `CLUSTER NODES` answer: `(host:port, flags)`, slots served.
fn primaries(nodes: &str) -> Vec<(&str, &str)> {
    nodes
        .lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let (_id, addr, flags) = (f.next()?, f.next()?, f.next()?);
            let has_slots = f.nth(5).is_some();
            let addr = addr.split('@').next()?;
            (flags.contains("master") && has_slots).then_some((addr, flags))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn primaries_with_slots_are_found() {
        let nodes = "\
a1 127.0.0.1:7001@17001 myself,master - 0 0 1 connected 0-5460
b2 127.0.0.1:7002@17002 master,fail - 0 0 2 connected 5461-10922
c3 127.0.0.1:7003@17003 slave a1 0 0 1 connected
d4 127.0.0.1:7004@17004 master - 0 0 4 connected
";
        assert_eq!(
            super::primaries(nodes),
            [
                ("127.0.0.1:7001", "myself,master"),
                ("127.0.0.1:7002", "master,fail")
            ]
        );
    }
}
