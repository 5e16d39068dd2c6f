//! RS256 and ES256 verification with a configured PEM public key.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use teamhub_client::ConnectOptions;

use crate::harness::*;

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn sign(alg: Algorithm, key: EncodingKey) -> String {
    let claims = teamhub_client::claims_for(
        "ann",
        &[("t", teamhub_protocol::Role::Viewer)],
        std::time::Duration::from_secs(60),
    )
    .unwrap();
    jsonwebtoken::encode(&Header::new(alg), &claims, &key).unwrap()
}

fn rs256() -> String {
    sign(
        Algorithm::RS256,
        EncodingKey::from_rsa_pem(&std::fs::read(fixture("rs256-private.pem")).unwrap()).unwrap(),
    )
}

fn es256() -> String {
    sign(
        Algorithm::ES256,
        EncodingKey::from_ec_pem(&std::fs::read(fixture("es256-private.pem")).unwrap()).unwrap(),
    )
}

fn hs256() -> String {
    sign(
        Algorithm::HS256,
        EncodingKey::from_secret(SECRET.as_bytes()),
    )
}

async fn accepted(hub: &TestHub, token: String) -> bool {
    match TestClient::try_connect(ConnectOptions::new(hub.ws_url()).token(token)).await {
        Ok(mut c) => {
            c.join("t").await;
            true
        }
        Err(teamhub_client::ClientError::Http { status: 401, .. }) => false,
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test]
async fn rs256_node_accepts_only_rs256() {
    let key = fixture("rs256-public.pem");
    let hub = TestHub::start_exact(&["--jwt-public-key", &key, "--jwt-alg", "RS256"]).await;
    assert!(accepted(&hub, rs256()).await);
    assert!(!accepted(&hub, es256()).await, "another algorithm");
    assert!(
        !accepted(&hub, hs256()).await,
        "HS256 must not be accepted by a public-key node"
    );
}

#[tokio::test]
async fn es256_node_accepts_only_es256() {
    let key = fixture("es256-public.pem");
    let hub = TestHub::start_exact(&["--jwt-public-key", &key, "--jwt-alg", "ES256"]).await;
    assert!(accepted(&hub, es256()).await);
    assert!(!accepted(&hub, rs256()).await);
    assert!(!accepted(&hub, hs256()).await);
}

#[tokio::test]
async fn issuer_and_audience_are_checked_when_configured() {
    let hub = TestHub::start_with(&[
        "--jwt-issuer",
        "https://idp.example",
        "--jwt-audience",
        "teamhub",
    ])
    .await;
    let good = token_with("ann", &[("t", "viewer")], |c| {
        c.iss = Some("https://idp.example".into());
        c.aud = Some("teamhub".into());
    });
    assert!(accepted(&hub, good).await);
    let wrong_iss = token_with("ann", &[("t", "viewer")], |c| {
        c.iss = Some("https://other".into());
        c.aud = Some("teamhub".into());
    });
    assert!(!accepted(&hub, wrong_iss).await);
    assert!(
        !accepted(&hub, hub.token("ann", &[("t", "viewer")])).await,
        "iss and aud are required when configured"
    );
}
