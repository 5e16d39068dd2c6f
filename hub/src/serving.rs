//! Serving the router on a listener, with a deadline on every request head.
//!
//! This is `axum::serve` with one thing added: hyper reads each request's headers under
//! a deadline (`--handshake-timeout`), so a client that trickles its headers (a
//! slowloris) or opens a connection and says nothing holds its file descriptor and its
//! task for a bounded time, then is cut. `axum::serve` builds hyper's connection
//! without a timer, which leaves hyper's header timeout off. Everything else is as
//! there: HTTP/1.1 with upgrades (WebSockets) and HTTP/2, `ConnectInfo<SocketAddr>` for
//! the handlers, and a graceful stop that finishes the requests in flight. Each
//! connection is served by a task of its own, so slow ones delay nobody.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::serve::Listener;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// Serves `router` on `listener` until `stop`, then waits for the requests in flight.
/// Upgraded connections (WebSockets) are the sessions' own by then: the drain closes
/// them.
pub async fn serve<L>(
    mut listener: L,
    router: Router,
    header_timeout: Duration,
    stop: CancellationToken,
) where
    L: Listener<Addr = SocketAddr>,
{
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .enable_connect_protocol();
    let graceful = GracefulShutdown::new();
    loop {
        let (io, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let service =
            router
                .clone()
                .map_request(move |mut request: http::Request<hyper::body::Incoming>| {
                    request.extensions_mut().insert(ConnectInfo(peer));
                    request.map(axum::body::Body::new)
                });
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(io), TowerToHyperService::new(service))
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                // Header timeouts, resets and bad requests: the client's doing.
                tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}
