//! HTTPS and WSS served by the node itself (`--tls-cert` / `--tls-key`), with
//! certificate rotation.
//!
//! Why it is built this way:
//!
//! - **The certificate is chosen per handshake.** rustls asks a [`ResolvesServerCert`]
//!   for the certificate of every new connection; ours hands out the pair loaded last.
//!   Swapping it affects only handshakes that start afterwards, so connections already
//!   open (a WebSocket that lives for hours) are untouched by a rotation.
//! - **Rotation by polling the files' contents.** cert-manager and the kubelet replace a
//!   mounted secret by swapping a symlink, which file-change notifications miss or
//!   report twice; reading two small files every [`RELOAD_EVERY`] and comparing bytes
//!   sees every change, whichever way it was made. A pair that does not load (a key that
//!   does not match, a half-written file) is logged and counted, and the old pair stays
//!   in service: a broken rotation must not take the node off the air.
//! - **Handshakes off the accept loop.** Each TLS handshake runs in its own task, bounded
//!   by `--handshake-timeout`, and only finished connections reach the HTTP server, so a
//!   client that trickles its ClientHello (or never sends one) holds one task for a
//!   bounded time and delays nobody else.
//! - **Modern defaults.** TLS 1.2 and 1.3 only (rustls has nothing older), rustls's safe
//!   cipher suites on the pure-Rust `ring` provider, ALPN `http/1.1` (WebSockets upgrade
//!   over HTTP/1.1).

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

/// How often the certificate files are read for changes.
pub const RELOAD_EVERY: Duration = Duration::from_secs(1);
/// Finished handshakes waiting for the HTTP server to take them.
const ACCEPTED_BACKLOG: usize = 1024;

pub const CERT_EXPIRY: &str = "teamhub_tls_cert_expiry_timestamp_seconds";
pub const RELOADS: &str = "teamhub_tls_reloads_total";
pub const HANDSHAKE_FAILURES: &str = "teamhub_tls_handshake_failures_total";

/// Why a certificate pair could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Pem { path: PathBuf, reason: String },
    #[error("the certificate and key do not form a usable pair: {0}")]
    Pair(rustls::Error),
    #[error("the certificate in {path} cannot be parsed: {reason}")]
    Certificate { path: PathBuf, reason: String },
}

/// The certificate and key files, as given on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A loaded pair and what it was loaded from.
struct Loaded {
    key: Arc<CertifiedKey>,
    /// The bytes of both files, to tell whether they changed.
    source: (Vec<u8>, Vec<u8>),
    /// The leaf certificate's `notAfter`, in Unix seconds.
    not_after: i64,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

impl TlsFiles {
    fn read(&self) -> Result<(Vec<u8>, Vec<u8>), TlsError> {
        Ok((read(&self.cert)?, read(&self.key)?))
    }

    fn load(&self, source: &(Vec<u8>, Vec<u8>)) -> Result<Loaded, TlsError> {
        let pem = |path: &Path, reason: String| TlsError::Pem {
            path: path.to_owned(),
            reason,
        };
        let chain = CertificateDer::pem_slice_iter(&source.0)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| pem(&self.cert, e.to_string()))?;
        let Some(leaf) = chain.first() else {
            return Err(pem(&self.cert, "no certificate in the file".into()));
        };
        let not_after = not_after(leaf).map_err(|reason| TlsError::Certificate {
            path: self.cert.clone(),
            reason,
        })?;
        let key =
            PrivateKeyDer::from_pem_slice(&source.1).map_err(|e| pem(&self.key, e.to_string()))?;
        let key = CertifiedKey::from_der(chain, key, &provider()).map_err(TlsError::Pair)?;
        Ok(Loaded {
            key: Arc::new(key),
            source: source.clone(),
            not_after,
        })
    }
}

fn not_after(cert: &CertificateDer<'_>) -> Result<i64, String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert).map_err(|e| e.to_string())?;
    Ok(parsed.validity().not_after.timestamp())
}

/// The pair new handshakes get; swapped by the reload task.
pub struct CertResolver {
    files: TlsFiles,
    current: RwLock<Loaded>,
}

impl fmt::Debug for CertResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertResolver")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
        Some(current.key.clone())
    }
}

impl CertResolver {
    /// Loads the pair; an error here stops the node from starting.
    pub fn load(files: TlsFiles) -> Result<Arc<Self>, TlsError> {
        let loaded = files.load(&files.read()?)?;
        metrics::gauge!(CERT_EXPIRY).set(loaded.not_after as f64);
        Ok(Arc::new(CertResolver {
            files,
            current: RwLock::new(loaded),
        }))
    }

    /// The leaf certificate's expiry (Unix seconds) of the pair in service.
    pub fn not_after(&self) -> i64 {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .not_after
    }

    /// Reads the files and, if they changed, puts the new pair in service. A pair that
    /// does not load is logged and counted; the old one stays. Returns whether a new
    /// pair went into service.
    pub fn reload(&self) -> bool {
        let source = match self.files.read() {
            Ok(source) => source,
            Err(e) => {
                // A file briefly missing mid-swap: the next poll sees the new one.
                tracing::warn!(error = %e, "TLS certificate files unreadable; keeping the pair in service");
                metrics::counter!(RELOADS, "result" => "failed").increment(1);
                return false;
            }
        };
        {
            let current = self.current.read().unwrap_or_else(|e| e.into_inner());
            if current.source == source {
                return false;
            }
        }
        match self.files.load(&source) {
            Ok(loaded) => {
                tracing::info!(
                    cert = %self.files.cert.display(),
                    not_after = loaded.not_after,
                    "TLS certificate reloaded; new connections get the new pair"
                );
                metrics::gauge!(CERT_EXPIRY).set(loaded.not_after as f64);
                metrics::counter!(RELOADS, "result" => "loaded").increment(1);
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = loaded;
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "new TLS certificate pair does not load; keeping the pair in service");
                metrics::counter!(RELOADS, "result" => "failed").increment(1);
                // Remember the bytes that failed (not a second read, which could see
                // a newer pair) so the same failure is logged once, not every second;
                // a further change is tried again.
                self.current
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .source = source;
                false
            }
        }
    }

    /// The rustls configuration of the node's listener.
    pub fn server_config(self: &Arc<Self>) -> rustls::ServerConfig {
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("the ring provider supports the default protocol versions")
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        config
    }
}

/// Polls the certificate files every [`RELOAD_EVERY`] until `stop`.
pub async fn watch(resolver: Arc<CertResolver>, stop: CancellationToken) {
    let mut every = tokio::time::interval(RELOAD_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = every.tick() => {}
        }
        let resolver = resolver.clone();
        // File reads are blocking I/O: off the runtime's worker threads.
        let _ = tokio::task::spawn_blocking(move || resolver.reload()).await;
    }
}

/// A listener whose connections have finished their TLS handshake: what `axum::serve`
/// takes in place of a `TcpListener`.
pub struct TlsListener {
    accepted: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local_addr: SocketAddr,
}

impl TlsListener {
    /// Starts accepting on `tcp`; handshakes run in tasks of their own, each bounded by
    /// `timeout`, until `stop`.
    pub fn spawn(
        tcp: TcpListener,
        config: rustls::ServerConfig,
        timeout: Duration,
        stop: CancellationToken,
    ) -> Self {
        let local_addr = tcp
            .local_addr()
            .expect("a bound listener has a local address");
        let (tx, accepted) = mpsc::channel(ACCEPTED_BACKLOG);
        let acceptor = TlsAcceptor::from(Arc::new(config));
        tokio::spawn(async move {
            loop {
                let (stream, peer) = tokio::select! {
                    _ = stop.cancelled() => return,
                    accepted = tcp.accept() => match accepted {
                        Ok(pair) => pair,
                        Err(e) => {
                            // As axum's own listener: out of file descriptors passes.
                            tracing::error!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    },
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    let _ = stream.set_nodelay(true);
                    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            metrics::counter!(HANDSHAKE_FAILURES, "reason" => "refused")
                                .increment(1);
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            metrics::counter!(HANDSHAKE_FAILURES, "reason" => "timeout")
                                .increment(1);
                        }
                    }
                });
            }
        });
        TlsListener {
            accepted,
            local_addr,
        }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.accepted.recv().await {
            Some(pair) => pair,
            // The accept task stopped: the node is draining; nothing more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}

pub fn describe() {
    metrics::describe_gauge!(
        CERT_EXPIRY,
        "notAfter of the TLS certificate in service, in Unix seconds"
    );
    metrics::describe_counter!(RELOADS, "TLS certificate reloads, by result");
    metrics::describe_counter!(
        HANDSHAKE_FAILURES,
        "TLS handshakes that failed or timed out"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(name: &str) -> (String, String) {
        let cert = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
        (cert.cert.pem(), cert.signing_key.serialize_pem())
    }

    fn write(dir: &Path, (cert, key): &(String, String)) -> TlsFiles {
        std::fs::write(dir.join("tls.crt"), cert).unwrap();
        std::fs::write(dir.join("tls.key"), key).unwrap();
        TlsFiles {
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
        }
    }

    fn leaf(resolver: &CertResolver) -> Vec<u8> {
        let current = resolver.current.read().unwrap();
        current.key.cert[0].to_vec()
    }

    #[test]
    fn a_changed_pair_is_loaded_and_a_broken_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let first = pair("one.test");
        let files = write(dir.path(), &first);
        let resolver = CertResolver::load(files.clone()).unwrap();
        let before = leaf(&resolver);
        assert!(!resolver.reload(), "nothing changed");

        // A key that belongs to another certificate: refused, the old pair stays.
        let other = pair("two.test");
        std::fs::write(&files.key, &other.1).unwrap();
        assert!(!resolver.reload());
        assert_eq!(leaf(&resolver), before, "the old pair stays in service");

        let third = pair("three.test");
        write(dir.path(), &third);
        assert!(resolver.reload());
        assert_ne!(leaf(&resolver), before, "the new pair is in service");
        assert!(resolver.not_after() > 0);
    }

    #[test]
    fn bad_files_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let files = write(dir.path(), &("not a pem".into(), "nor this".into()));
        let err = CertResolver::load(files).unwrap_err().to_string();
        assert!(err.contains("tls.crt"), "{err}");
        let missing = TlsFiles {
            cert: dir.path().join("absent.crt"),
            key: dir.path().join("absent.key"),
        };
        let err = CertResolver::load(missing).unwrap_err().to_string();
        assert!(err.contains("absent.crt"), "{err}");
        let (cert, _) = pair("x.test");
        let files = write(dir.path(), &(cert, "no key here".into()));
        let err = CertResolver::load(files).unwrap_err().to_string();
        assert!(err.contains("tls.key"), "{err}");
    }
}
