//! Postgres over TLS through the database URL (`sslmode`, `sslrootcert`), against a
//! PostgreSQL of the test's own that accepts TLS connections only, with a certificate
//! from a CA the test makes.

use serde_json::json;
use teamhub_persistence::testing::LocalTlsPostgres;
use teamhub_redis::testing::TestCa;

use crate::harness::*;

/// Starts a node on `url`; the error chain when it does not start.
async fn start(url: &str) -> Result<teamhub::Running, String> {
    let dir = tempfile::tempdir().unwrap();
    let args = serve_args_db(&["--jwt-secret", SECRET], &dir.path().join("hub.db"), url);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    teamhub::start_on(&args, listener)
        .await
        .map_err(|e| format!("{e:#}"))
}

#[tokio::test]
async fn the_node_speaks_tls_to_postgres_as_the_url_says() {
    let ca = TestCa::new("teamhub postgres test CA").unwrap();
    let wrong = TestCa::new("some other CA").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (ca_path, wrong_path) = (dir.path().join("ca.pem"), dir.path().join("wrong.pem"));
    std::fs::write(&ca_path, ca.pem()).unwrap();
    std::fs::write(&wrong_path, wrong.pem()).unwrap();
    let pair = ca.issue(&["localhost", "127.0.0.1"]).unwrap();
    let pg = tokio::task::spawn_blocking(move || LocalTlsPostgres::start(&pair.cert, &pair.key))
        .await
        .unwrap();

    // The server takes TLS connections only: a clear-text one is refused...
    let err = start(&pg.url("sslmode=disable"))
        .await
        .err()
        .expect("clear text is refused");
    assert!(err.contains("PostgreSQL"), "{err}");

    // ...so a node that starts and writes its activity log spoke TLS, verifying the
    // server's certificate and name against the CA of `sslrootcert`.
    let url = pg.url(&format!(
        "sslmode=verify-full&sslrootcert={}",
        ca_path.display()
    ));
    let running = start(&url).await.expect("verify-full with the right CA");
    let addr = running.addr;
    let response = reqwest::Client::new()
        .post(format!("http://{addr}/api/v1/teams/t/messages"))
        .bearer_auth(token_with("ann", &[("t", "editor")], |_| {}))
        .json(&json!({"type": "chat.msg", "data": {"over": "tls"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    running.drain();
    let report = tokio::time::timeout(WAIT, running.wait())
        .await
        .expect("drain in time")
        .expect("drain succeeds");
    assert_eq!(report.activity_written, 1, "the activity row went over TLS");

    // `require` encrypts without verifying: no CA needed.
    let running = start(&pg.url("sslmode=require"))
        .await
        .expect("require without a CA");
    running.drain();
    running.wait().await.unwrap();

    // A certificate that does not verify is a clear error at start, not a hang.
    for (why, params) in [
        (
            "another CA",
            format!("sslmode=verify-full&sslrootcert={}", wrong_path.display()),
        ),
        (
            "verify-ca with another CA",
            format!("sslmode=verify-ca&sslrootcert={}", wrong_path.display()),
        ),
    ] {
        let err = tokio::time::timeout(WAIT, start(&pg.url(&params)))
            .await
            .unwrap_or_else(|_| panic!("{why}: refused in time"))
            .err()
            .unwrap_or_else(|| panic!("{why}: must not start"));
        assert!(
            err.to_lowercase().contains("certificate"),
            "{why}: says it is the certificate: {err}"
        );
    }
}
