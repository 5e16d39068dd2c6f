//! HTTPS and WSS served by the node (`--tls-cert` / `--tls-key`): handshakes with a CA
//! the test makes, clients that do not trust it refused, certificate rotation while a
//! connection stays open, and bad certificate files.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;
use teamhub_client::{ClientError, ConnectOptions, Connection, TlsConfig};
use teamhub_redis::testing::TestCa;

use crate::harness::*;

/// A node serving TLS with a certificate for 127.0.0.1 and localhost from its own CA.
pub struct TlsNode {
    pub hub: TestHub,
    pub ca: TestCa,
    pub ca_path: PathBuf,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl TlsNode {
    pub async fn start() -> TlsNode {
        Self::start_with(&[]).await
    }

    /// A TLS node with further `serve` flags.
    pub async fn start_with(extra: &[&str]) -> TlsNode {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new("teamhub node test CA").unwrap();
        let (ca_path, cert_path, key_path) = (
            dir.path().join("ca.pem"),
            dir.path().join("tls.crt"),
            dir.path().join("tls.key"),
        );
        std::fs::write(&ca_path, ca.pem()).unwrap();
        let pair = ca.issue(&["127.0.0.1", "localhost"]).unwrap();
        std::fs::write(&cert_path, &pair.cert).unwrap();
        std::fs::write(&key_path, &pair.key).unwrap();
        let mut args = vec![
            "--tls-cert",
            cert_path.to_str().unwrap(),
            "--tls-key",
            key_path.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let hub = TestHub::start_with(&args).await;
        TlsNode {
            hub,
            ca,
            ca_path,
            cert_path,
            key_path,
            _dir: dir,
        }
    }

    pub fn wss_url(&self) -> String {
        format!("wss://127.0.0.1:{}/ws", self.hub.addr.port())
    }

    fn trusting(&self, ca_pem: &str) -> TlsConfig {
        TlsConfig::with_ca_pem(ca_pem.as_bytes()).unwrap()
    }

    fn options(&self, user: &str, teams: &[(&str, &str)]) -> ConnectOptions {
        ConnectOptions::new(self.wss_url())
            .token(self.hub.token(user, teams))
            .tls(self.trusting(&self.ca.pem()))
    }

    /// A client over WSS trusting the node's CA.
    pub async fn client(&self, user: &str, teams: &[(&str, &str)]) -> TestClient {
        TestClient::connect(self.options(user, teams)).await
    }

    /// An HTTPS client trusting `ca_pem` only.
    fn https(&self, ca_pem: &str) -> reqwest::Client {
        reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
            .build()
            .unwrap()
    }

    fn https_url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.hub.addr.port())
    }

    /// A metric read over HTTPS, trusting `ca_pem` (the CA of the pair in service):
    /// the sum of the series of `name` whose labels contain `labels`.
    async fn metric(&self, ca_pem: &str, name: &str) -> f64 {
        self.metric_with(ca_pem, name, "").await
    }

    async fn metric_with(&self, ca_pem: &str, name: &str, labels: &str) -> f64 {
        let text = self
            .https(ca_pem)
            .get(self.https_url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        metric_sum(&text, name, labels)
    }
}

#[tokio::test]
async fn serves_https_and_wss_to_clients_that_trust_its_ca() {
    let node = TlsNode::start().await;
    let health = node
        .https(&node.ca.pem())
        .get(node.https_url("/healthz"))
        .send()
        .await
        .expect("HTTPS with the node's CA");
    assert_eq!(health.status(), 200);
    assert_eq!(health.version(), reqwest::Version::HTTP_11, "ALPN http/1.1");

    let mut ann = node.client("ann", &[("t", "editor")]).await;
    let mut bob = node.client("bob", &[("t", "editor")]).await;
    ann.join("t").await;
    bob.join("t").await;
    ann.expect_diff().await;
    bob.publish("t", "chat.msg", json!({"over": "wss"}), false)
        .await;
    assert_eq!(ann.expect_message().await.data, json!({"over": "wss"}));

    // The expiry of the certificate in service, for an alert before it lapses.
    let expiry = node
        .metric(&node.ca.pem(), "teamhub_tls_cert_expiry_timestamp_seconds")
        .await;
    let now = teamhub::auth::now_secs() as f64;
    assert!(expiry > now, "expiry {expiry} is after now {now}");
}

#[tokio::test]
async fn clients_that_do_not_trust_the_certificate_are_refused() {
    let node = TlsNode::start().await;
    let other = TestCa::new("some other CA").unwrap();

    // The system roots do not know the test's CA; nor does another private CA.
    for (who, tls) in [
        ("system roots", None),
        ("another CA", Some(node.trusting(&other.pem()))),
    ] {
        let mut opts = ConnectOptions::new(node.wss_url()).token(node.hub.token("ann", &[]));
        opts.tls = tls;
        let err = tokio::time::timeout(WAIT, Connection::connect(opts))
            .await
            .unwrap_or_else(|_| panic!("{who}: refused in time, not hung"))
            .expect_err(who);
        assert!(matches!(err, ClientError::Tls { .. }), "{who}: {err:?}");
        assert!(!err.is_transient(), "{who}: not worth retrying");
    }

    // Plain HTTP and ws:// to a TLS port get nothing served in clear text.
    let plain = reqwest::get(format!("http://{}/healthz", node.hub.addr)).await;
    assert!(plain.is_err(), "no plain HTTP: {plain:?}");
    let ws = tokio::time::timeout(
        WAIT,
        Connection::connect(ConnectOptions::new(node.hub.ws_url())),
    )
    .await
    .expect("plain ws:// to a TLS port ends in time");
    assert!(ws.is_err());
    let refused = node
        .metric(&node.ca.pem(), "teamhub_tls_handshake_failures_total")
        .await;
    assert!(refused >= 1.0, "failed handshakes are counted: {refused}");
}

#[tokio::test]
async fn a_rotated_certificate_serves_new_connections_and_spares_open_ones() {
    let node = TlsNode::start().await;
    let mut ann = node.client("ann", &[("t", "editor")]).await;
    ann.join("t").await;

    // cert-manager renews with a new CA: the files are replaced while ann is connected.
    let renewed = TestCa::new("renewed CA").unwrap();
    let pair = renewed.issue(&["127.0.0.1", "localhost"]).unwrap();
    std::fs::write(&node.key_path, &pair.key).unwrap();
    std::fs::write(&node.cert_path, &pair.cert).unwrap();

    // Until the node notices, new connections still get the old certificate; after,
    // the new one. Poll new handshakes (bounded) until one verifies against the new CA.
    let trusting_new = node.trusting(&renewed.pem());
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut fresh = loop {
        let opts = ConnectOptions::new(node.wss_url())
            .token(node.hub.token("bob", &[("t", "editor")]))
            .tls(trusting_new.clone());
        match TestClient::try_connect(opts).await {
            Ok(client) => break client,
            Err(ClientError::Tls { .. }) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("the renewed certificate was not served within {WAIT:?}: {e}"),
        }
    };
    assert!(
        node.metric(&renewed.pem(), "teamhub_tls_reloads_total")
            .await
            >= 1.0,
        "the reload is counted"
    );
    // The old CA no longer verifies new handshakes...
    let old = Connection::connect(node.options("carol", &[("t", "editor")])).await;
    assert!(matches!(old, Err(ClientError::Tls { .. })), "{old:?}");
    // ...while ann's connection, opened before the rotation, carries on.
    fresh.join("t").await;
    ann.expect_diff().await;
    fresh
        .publish("t", "chat.msg", json!({"after": "rotation"}), false)
        .await;
    assert_eq!(
        ann.expect_message().await.data,
        json!({"after": "rotation"})
    );

    // A broken pair (a key that belongs to another certificate) is refused and the
    // renewed one stays in service.
    let renewed_pem = renewed.pem();
    let failed = || {
        node.metric_with(
            &renewed_pem,
            "teamhub_tls_reloads_total",
            "result=\"failed\"",
        )
    };
    let failed_before = failed().await;
    let stray = renewed.issue(&["127.0.0.1"]).unwrap();
    std::fs::write(&node.key_path, &stray.key).unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while failed().await <= failed_before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the broken pair was not noticed within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let opts = ConnectOptions::new(node.wss_url())
        .token(node.hub.token("dave", &[("t", "editor")]))
        .tls(trusting_new);
    Connection::connect(opts)
        .await
        .expect("the renewed pair is still in service");
}

#[tokio::test]
async fn bad_tls_settings_stop_the_start_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("tls.crt");
    let key = dir.path().join("tls.key");
    std::fs::write(&cert, "not a certificate").unwrap();
    std::fs::write(&key, "not a key").unwrap();
    let args = serve_args(
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
        &dir.path().join("hub.db"),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = match teamhub::start_on(&args, listener).await {
        Ok(_) => panic!("a node with unusable certificate files must not start"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains("--tls-cert") && err.contains("tls.crt"),
        "{err}"
    );

    // One of the pair alone is a usage error.
    use clap::Parser;
    let alone = teamhub::config::Cli::try_parse_from(["teamhub", "serve", "--tls-cert", "x.pem"]);
    let err = alone.expect_err("--tls-cert needs --tls-key").to_string();
    assert!(err.contains("--tls-key"), "{err}");
}

/// A client that opens a TCP connection to the TLS port and never starts its
/// handshake is cut after `--handshake-timeout`.
#[tokio::test]
async fn a_stalled_tls_handshake_is_cut() {
    let node = TlsNode::start_with(&["--handshake-timeout", "1"]).await;
    let mut silent = tokio::net::TcpStream::connect(node.hub.addr).await.unwrap();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read(&mut silent, &mut buf),
    )
    .await
    .expect("the stalled handshake is cut within 5 s");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    // Real clients are served meanwhile and after.
    let mut ann = node.client("ann", &[("t", "editor")]).await;
    ann.join("t").await;
}
