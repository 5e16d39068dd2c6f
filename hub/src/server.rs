//! Starting a node, and draining it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::bootstrap::{self, Background};
use crate::config::ServeArgs;
use crate::node::Node;
use crate::tls::{self, CertResolver, TlsFiles, TlsListener};

/// A node that serves until drained.
pub struct Running {
    pub addr: SocketAddr,
    /// The certificate in service when the node serves HTTPS and WSS.
    pub tls: Option<Arc<CertResolver>>,
    pub node: Arc<Node>,
    server: JoinHandle<()>,
    background: Background,
    drain_timeout: Duration,
}

/// What a drain did.
#[derive(Debug)]
pub struct DrainReport {
    /// Sessions that had not closed when the drain timeout passed.
    pub sessions_left: usize,
    pub activity_written: u64,
}

/// Binds `args.listen` and starts serving.
pub async fn start(args: &ServeArgs) -> anyhow::Result<Running> {
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    start_on(args, listener).await
}

/// Starts serving on an already bound listener (tests bind port 0).
pub async fn start_on(args: &ServeArgs, listener: TcpListener) -> anyhow::Result<Running> {
    // A certificate that does not load stops the start before anything else is done.
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(
            CertResolver::load(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            })
            .context("loading --tls-cert and --tls-key")?,
        ),
        _ => None,
    };
    let (node, background) = bootstrap::build(args).await?;
    let addr = listener.local_addr()?;
    let stop = node.shutdown.clone();
    let handshake_timeout = Duration::from_secs(args.handshake_timeout.max(1));
    let server = match &tls {
        None => spawn_server(listener, node.clone(), handshake_timeout),
        Some(resolver) => {
            tokio::spawn(tls::watch(resolver.clone(), stop.clone()));
            let config = resolver.server_config();
            let listener = TlsListener::spawn(listener, config, handshake_timeout, stop);
            spawn_server(listener, node.clone(), handshake_timeout)
        }
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(node = %node.id, %addr, scheme, "serving");
    Ok(Running {
        addr,
        tls,
        node,
        server,
        background,
        drain_timeout: Duration::from_secs(args.drain_timeout),
    })
}

/// Serves the node's routes on `listener` until the node drains.
fn spawn_server<L>(listener: L, node: Arc<Node>, header_timeout: Duration) -> JoinHandle<()>
where
    L: axum::serve::Listener<Addr = SocketAddr>,
{
    let stop = node.shutdown.clone();
    let router = crate::http::router(node);
    tokio::spawn(crate::serving::serve(
        listener,
        router,
        header_timeout,
        stop,
    ))
}

impl Running {
    /// `https` when the node serves TLS, else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// Begins the drain (idempotent); [`Running::wait`] finishes it.
    pub fn drain(&self) {
        self.node.start_drain();
    }

    /// Stops the Redis presence refresh without leaving (tests use it to play a node
    /// that died without a word).
    pub fn stop_presence_refresh(&self) {
        if let Some(p) = &self.background.redis_presence {
            p.shutdown();
        }
    }

    /// Waits for a drain to be requested, then completes it: every session closed (1012),
    /// the HTTP server stopped, the activity log flushed.
    pub async fn wait(self) -> anyhow::Result<DrainReport> {
        self.node.shutdown.cancelled().await;
        tracing::info!(node = %self.node.id, "draining");
        let sessions = &self.node.sessions;
        sessions.close();
        let sessions_left = match tokio::time::timeout(self.drain_timeout, sessions.wait()).await {
            Ok(()) => 0,
            Err(_) => sessions.len(),
        };
        if sessions_left > 0 {
            tracing::warn!(
                sessions_left,
                "drain timeout: some connections did not close in time"
            );
        }
        match tokio::time::timeout(self.drain_timeout, self.server).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "HTTP server task failed"),
            Err(_) => tracing::warn!("HTTP server did not stop in time"),
        }
        self.background.fanout.abort();
        // Deleting is idempotent: a pass cut short is finished by the next start's.
        self.background.retention.abort();
        self.background.control.abort();
        // The dispatcher stopped with the drain signal (attempts in flight are sent
        // again after their lease); wait for it before the database closes.
        if tokio::time::timeout(self.drain_timeout, self.background.webhooks)
            .await
            .is_err()
        {
            tracing::warn!("webhook dispatcher did not stop in time");
        }
        if let Some(presence) = &self.background.redis_presence {
            presence.shutdown();
        }
        let stats = self
            .background
            .writer
            .shutdown(self.drain_timeout)
            .await
            .context("flushing the activity log")?;
        // After the HTTP server and every session: nothing counts any more.
        match tokio::time::timeout(self.drain_timeout, self.node.usage.flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "usage not flushed at drain"),
            Err(_) => tracing::error!("usage flush at drain timed out"),
        }
        self.node.database.close().await;
        tracing::info!(node = %self.node.id, "drained");
        Ok(DrainReport {
            sessions_left,
            activity_written: stats.written,
        })
    }
}
