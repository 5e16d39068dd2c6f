//! Tokens from an identity provider, end to end: a local provider (an axum server on
//! port 0 serving a key set and an OpenID configuration) and a real node.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use teamhub_client::ConnectOptions;
use teamhub_protocol::{ClientOp, ErrorCode, Refresh, ReplyBody};

use crate::harness::*;

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn private_key(alg: Algorithm) -> EncodingKey {
    match alg {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(&fixture("rs256-private.pem")),
        Algorithm::ES256 => EncodingKey::from_ec_pem(&fixture("es256-private.pem")),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(&fixture("ed25519-private.pem")),
        other => panic!("no test key for {other:?}"),
    }
    .unwrap()
}

fn jwk(alg: Algorithm, kid: &str) -> serde_json::Value {
    let mut jwk = Jwk::from_encoding_key(&private_key(alg), alg).unwrap();
    jwk.common.key_id = Some(kid.into());
    serde_json::to_value(jwk).unwrap()
}

fn idp_token(user: &str, alg: Algorithm, kid: &str, iss: Option<&str>) -> String {
    let now = teamhub::auth::now_secs();
    let mut claims = serde_json::json!({
        "sub": user, "name": "Ann", "exp": now + 600, "iat": now, "teams": {"t": "editor"}
    });
    if let Some(iss) = iss {
        claims["iss"] = iss.into();
    }
    let mut header = Header::new(alg);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(&header, &claims, &private_key(alg)).unwrap()
}

struct Provider {
    keys: Mutex<Vec<serde_json::Value>>,
    up: AtomicBool,
    fetches: AtomicUsize,
    issuer: String,
}

struct TestIdp {
    state: Arc<Provider>,
    base: String,
}

impl TestIdp {
    async fn start(keys: Vec<serde_json::Value>) -> TestIdp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Provider {
            keys: Mutex::new(keys),
            up: AtomicBool::new(true),
            fetches: AtomicUsize::new(0),
            issuer: base.clone(),
        });
        let app = Router::new()
            .route("/jwks", get(jwks))
            .route("/.well-known/openid-configuration", get(discovery))
            .with_state(state.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        TestIdp { state, base }
    }

    fn jwks_url(&self) -> String {
        format!("{}/jwks", self.base)
    }
}

async fn jwks(State(p): State<Arc<Provider>>) -> Response {
    p.fetches.fetch_add(1, Ordering::SeqCst);
    if !p.up.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let keys = p.keys.lock().unwrap().clone();
    axum::Json(serde_json::json!({ "keys": keys })).into_response()
}

async fn discovery(State(p): State<Arc<Provider>>) -> Response {
    axum::Json(serde_json::json!({
        "issuer": p.issuer,
        "jwks_uri": format!("{}/jwks", p.issuer),
    }))
    .into_response()
}

async fn refused_status(hub: &TestHub, token: String) -> Option<u16> {
    match TestClient::try_connect(ConnectOptions::new(hub.ws_url()).token(token)).await {
        Ok(_) => None,
        Err(teamhub_client::ClientError::Http { status, .. }) => Some(status),
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test]
async fn jwks_token_connects_joins_publishes_and_refreshes_after_a_rotation() {
    let idp = TestIdp::start(vec![jwk(Algorithm::RS256, "k1")]).await;
    let hub = TestHub::start_exact(&["--jwks-url", &idp.jwks_url()]).await;
    assert!(!hub.node.auth.is_development());

    let token = idp_token("ann", Algorithm::RS256, "k1", None);
    let mut ann = TestClient::connect(ConnectOptions::new(hub.ws_url()).token(token)).await;
    ann.join("t").await;
    ann.publish(
        "t",
        "chat.message",
        serde_json::json!({"text": "hi"}),
        false,
    )
    .await;

    // The provider rotates in an EdDSA key; a refresh with a token it signed makes the
    // node refetch the set.
    idp.state
        .keys
        .lock()
        .unwrap()
        .push(jwk(Algorithm::EdDSA, "k2"));
    let id = ann
        .send(ClientOp::Refresh(Refresh {
            token: idp_token("ann", Algorithm::EdDSA, "k2", None),
        }))
        .await;
    assert!(matches!(ann.expect_reply(id).await, ReplyBody::Refresh(_)));
    // Another user's token from the same provider does not refresh this connection.
    let id = ann
        .send(ClientOp::Refresh(Refresh {
            token: idp_token("bob", Algorithm::EdDSA, "k2", None),
        }))
        .await;
    ann.expect_error(Some(id), ErrorCode::Unauthorized).await;
    // A kid the provider does not publish: 401 at the handshake.
    let before = hub.metric("teamhub_tokens_refused_total").await;
    assert_eq!(
        refused_status(&hub, idp_token("ann", Algorithm::RS256, "k9", None)).await,
        Some(401)
    );
    let page = reqwest::get(hub.http("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metric_sum(
            &page,
            "teamhub_tokens_refused_total",
            "reason=\"unknown_kid\""
        ) >= 1.0,
        "{page}"
    );
    assert!(metric_sum(&page, "teamhub_tokens_refused_total", "") > before);
    assert!(
        page.contains("teamhub_jwks_age_seconds"),
        "the key set's age is exported"
    );
    ann.roundtrip().await;
}

#[tokio::test]
async fn oidc_issuer_discovers_the_keys_and_tokens_must_carry_it() {
    let idp = TestIdp::start(vec![jwk(Algorithm::ES256, "k1")]).await;
    let hub = TestHub::start_with(&["--oidc-issuer", &idp.base]).await;
    let good = idp_token("ann", Algorithm::ES256, "k1", Some(&idp.base));
    let mut ann = TestClient::connect(ConnectOptions::new(hub.ws_url()).token(good)).await;
    ann.join("t").await;
    for iss in [None, Some("https://other.example")] {
        assert_eq!(
            refused_status(&hub, idp_token("ann", Algorithm::ES256, "k1", iss)).await,
            Some(401),
            "iss {iss:?}"
        );
    }
    // The secret keeps working beside the provider, and refresh takes either source.
    let mut hs = hub.connect("ann", &[("t", "viewer")]).await;
    let id = hs
        .send(ClientOp::Refresh(Refresh {
            token: idp_token("ann", Algorithm::ES256, "k1", Some(&idp.base)),
        }))
        .await;
    assert!(matches!(hs.expect_reply(id).await, ReplyBody::Refresh(_)));
}

#[tokio::test]
async fn a_node_whose_key_set_never_loaded_starts_refuses_and_keeps_trying() {
    let idp = TestIdp::start(vec![jwk(Algorithm::RS256, "k1")]).await;
    idp.state.up.store(false, Ordering::SeqCst);
    let hub = TestHub::start_exact(&["--jwks-url", &idp.jwks_url(), "--jwks-refresh", "1"]).await;
    let token = || idp_token("ann", Algorithm::RS256, "k1", None);
    assert_eq!(refused_status(&hub, token()).await, Some(401));
    assert!(hub.metric("teamhub_jwks_fetch_failures_total").await >= 1.0);
    // The provider comes back: the node's next retry loads the set.
    idp.state.up.store(true, Ordering::SeqCst);
    tokio::time::timeout(WAIT, async {
        while refused_status(&hub, token()).await.is_some() {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the node loads the key set once the provider answers");
}

#[tokio::test]
async fn groups_of_the_provider_grant_roles_through_the_mapping() {
    let idp = TestIdp::start(vec![jwk(Algorithm::EdDSA, "k1")]).await;
    let hub = TestHub::start_exact(&[
        "--jwks-url",
        &idp.jwks_url(),
        "--user-claim",
        "preferred_username",
        "--group-roles",
        "staff=t:viewer,writers=t:editor",
    ])
    .await;
    let now = teamhub::auth::now_secs();
    let sign = |claims: serde_json::Value| {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some("k1".into());
        jsonwebtoken::encode(&header, &claims, &private_key(Algorithm::EdDSA)).unwrap()
    };
    let token = sign(serde_json::json!({
        "sub": "00u-opaque", "preferred_username": "ann", "exp": now + 600, "iat": now,
        "groups": ["staff", "writers"]
    }));
    let mut ann = TestClient::connect(ConnectOptions::new(hub.ws_url()).token(token)).await;
    ann.join("t").await;
    // Publishing needs editor: the stronger of the two groups' roles.
    ann.publish("t", "chat.message", serde_json::json!({}), false)
        .await;
    let without_user = sign(serde_json::json!({"sub": "ann", "exp": now + 600, "iat": now}));
    assert_eq!(refused_status(&hub, without_user).await, Some(401));
}
