//! Opening the layer's connections, with the start-up checks that turn a wrong URL, a
//! refused TLS handshake or an unhealthy cluster into one clear error.

use std::time::Duration;

use redis::AsyncConnectionConfig;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::{ConnectionInfo, IntoConnectionInfo, ProtocolVersion, TlsCertificates};
use tokio::sync::mpsc;

use crate::pubsub::{PubSub, SubConn};
use crate::{Commands, Mode, RedisConfig, RedisError, redact};

/// Reconnect backoff of the client library: exponential from this, with full jitter.
const MIN_RETRY: Duration = Duration::from_millis(50);
const MAX_RETRY: Duration = Duration::from_secs(2);
/// Attempts per reconnect before a command fails; the next command tries again.
const RETRIES: usize = 6;

pub(crate) async fn open(config: &RedisConfig) -> Result<(Commands, PubSub), RedisError> {
    let certs = certificates(config)?;
    let infos = config
        .urls
        .iter()
        .map(|u| resp3(u))
        .collect::<Result<Vec<_>, _>>()?;
    for (url, info) in config.urls.iter().zip(&infos) {
        if config.mode == Mode::Cluster || url == &config.urls[0] {
            // In cluster mode every seed must be a healthy cluster member, so a typo in
            // one seed is found now rather than at the first failover.
            probe(config, url, info, certs.clone()).await?;
        }
    }
    let (push_tx, push_rx) = mpsc::unbounded_channel();
    let shown = config.shown();
    let failed = |what: &str, e: redis::RedisError| {
        RedisError::Unavailable(format!("{what} to redis at {shown}: {e}"))
    };
    match config.mode {
        Mode::Single => {
            let client = client(infos[0].clone(), certs)?;
            let manager = |push: Option<mpsc::UnboundedSender<_>>| {
                let mut c = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(config.connect_timeout))
                    .set_response_timeout(Some(config.op_timeout))
                    .set_min_delay(MIN_RETRY)
                    .set_max_delay(MAX_RETRY)
                    .set_number_of_retries(RETRIES);
                if let Some(push) = push {
                    c = c.set_push_sender(push).set_automatic_resubscription();
                }
                ConnectionManager::new_with_config(client.clone(), c)
            };
            let commands = bounded(config, manager(None))
                .await
                .map_err(|e| failed("command connection", e))?;
            let pubsub = bounded(config, manager(Some(push_tx)))
                .await
                .map_err(|e| failed("pub/sub connection", e))?;
            Ok((
                Commands::single(commands),
                PubSub::start(
                    SubConn::Single(pubsub),
                    Mode::Single,
                    push_rx,
                    config.op_timeout,
                ),
            ))
        }
        Mode::Cluster => {
            let builder = || {
                let mut b = ClusterClientBuilder::new(infos.clone())
                    .use_protocol(ProtocolVersion::RESP3)
                    .connection_timeout(config.connect_timeout)
                    .response_timeout(config.op_timeout)
                    .retries(RETRIES as u32)
                    .min_retry_wait(MIN_RETRY.as_millis() as u64)
                    .max_retry_wait(MAX_RETRY.as_millis() as u64);
                if let Some(certs) = &certs {
                    b = b.certs(certs.clone());
                }
                b
            };
            let build = |b: ClusterClientBuilder| -> Result<ClusterClient, RedisError> {
                b.build()
                    .map_err(|e| RedisError::Config(format!("redis cluster {shown}: {e}")))
            };
            let commands = build(builder())?;
            let pubsub = build(builder().push_sender(push_tx))?;
            let commands = bounded(config, commands.get_async_connection())
                .await
                .map_err(|e| failed("command connections", e))?;
            let pubsub = bounded(config, pubsub.get_async_connection())
                .await
                .map_err(|e| failed("pub/sub connections", e))?;
            Ok((
                Commands::cluster(commands),
                PubSub::start(
                    SubConn::Cluster(pubsub),
                    Mode::Cluster,
                    push_rx,
                    config.op_timeout,
                ),
            ))
        }
    }
}

/// The URL as connection settings, speaking RESP3 (pushes carry pub/sub).
fn resp3(url: &str) -> Result<ConnectionInfo, RedisError> {
    let info = url
        .into_connection_info()
        .map_err(|e| RedisError::Config(format!("redis URL {}: {e}", redact(url))))?;
    let settings = info
        .redis_settings()
        .clone()
        .set_protocol(ProtocolVersion::RESP3);
    Ok(info.set_redis_settings(settings))
}

fn certificates(config: &RedisConfig) -> Result<Option<TlsCertificates>, RedisError> {
    let Some(path) = &config.ca_cert else {
        return Ok(None);
    };
    if !config.tls() {
        return Err(RedisError::Config(format!(
            "--redis-ca-cert {} is set but the redis URL is not rediss://",
            path.display()
        )));
    }
    let pem = std::fs::read(path)
        .map_err(|e| RedisError::Config(format!("reading the redis CA {}: {e}", path.display())))?;
    if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
        return Err(RedisError::Config(format!(
            "the redis CA {} holds no PEM certificate",
            path.display()
        )));
    }
    Ok(Some(TlsCertificates {
        client_tls: None,
        root_cert: Some(pem),
    }))
}

fn client(
    info: ConnectionInfo,
    certs: Option<TlsCertificates>,
) -> Result<redis::Client, RedisError> {
    let shown = info.addr().to_string();
    match certs {
        Some(certs) => redis::Client::build_with_tls(info, certs),
        None => redis::Client::open(info),
    }
    .map_err(|e| RedisError::Config(format!("redis at {shown}: {e}")))
}

async fn bounded<T>(
    config: &RedisConfig,
    op: impl Future<Output = redis::RedisResult<T>>,
) -> redis::RedisResult<T> {
    let limit = config.connect_timeout + config.op_timeout;
    match tokio::time::timeout(limit, op).await {
        Ok(r) => r,
        Err(_) => Err(redis::RedisError::from(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no answer within {limit:?}"),
        ))),
    }
}

/// One direct connection to `url`: it must connect (TLS included), answer `PING`, and
/// in cluster mode report `cluster_state:ok`.
async fn probe(
    config: &RedisConfig,
    url: &str,
    info: &ConnectionInfo,
    certs: Option<TlsCertificates>,
) -> Result<(), RedisError> {
    let shown = redact(url);
    let client = client(info.clone(), certs)?;
    let settings = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(config.connect_timeout))
        .set_response_timeout(Some(config.op_timeout));
    let mut conn = bounded(
        config,
        client.get_multiplexed_async_connection_with_config(&settings),
    )
    .await
    .map_err(|e| RedisError::Unavailable(format!("cannot connect to redis at {shown}: {e}")))?;
    let answer = |e: redis::RedisError| RedisError::Unavailable(format!("redis at {shown}: {e}"));
    match config.mode {
        Mode::Single => {
            bounded(config, redis::cmd("PING").query_async::<()>(&mut conn))
                .await
                .map_err(answer)?;
        }
        Mode::Cluster => {
            let info: String = bounded(
                config,
                redis::cmd("CLUSTER").arg("INFO").query_async(&mut conn),
            )
            .await
            .map_err(|e| {
                RedisError::Unavailable(format!(
                    "redis at {shown} is not a cluster node (--redis-mode cluster): {e}"
                ))
            })?;
            let state = info
                .lines()
                .find_map(|l| l.trim().strip_prefix("cluster_state:"))
                .unwrap_or("unknown");
            if state != "ok" {
                return Err(RedisError::Unavailable(format!(
                    "redis cluster at {shown} reports cluster_state:{state}; \
                     it must be ok (every slot served) before the hub starts"
                )));
            }
        }
    }
    Ok(())
}
