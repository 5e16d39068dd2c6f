//! The key set cache against a local identity provider: an axum server on port 0 that
//! serves a key set made from the test keys in `hub/tests/fixtures` and counts fetches.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};

use super::*;
use crate::auth::{AuthError, Authenticator, now_secs};
use crate::config::JwtArgs;

/// The test keys: RSA, EC P-256, Ed25519 (PKCS#8 PEM).
fn private_key(alg: Algorithm) -> EncodingKey {
    match alg {
        Algorithm::RS256 => {
            EncodingKey::from_rsa_pem(include_bytes!("../../../tests/fixtures/rs256-private.pem"))
                .unwrap()
        }
        Algorithm::ES256 => {
            EncodingKey::from_ec_pem(include_bytes!("../../../tests/fixtures/es256-private.pem"))
                .unwrap()
        }
        Algorithm::EdDSA => EncodingKey::from_ed_pem(include_bytes!(
            "../../../tests/fixtures/ed25519-private.pem"
        ))
        .unwrap(),
        other => panic!("no test key for {other:?}"),
    }
}

/// The public JWK of a test key under `kid`, with or without its `alg`.
fn jwk(alg: Algorithm, kid: &str, pin_alg: bool) -> serde_json::Value {
    let mut jwk = Jwk::from_encoding_key(&private_key(alg), alg).unwrap();
    jwk.common.key_id = Some(kid.into());
    if !pin_alg {
        jwk.common.key_algorithm = None;
    }
    serde_json::to_value(jwk).unwrap()
}

fn set(keys: &[serde_json::Value]) -> String {
    serde_json::json!({ "keys": keys }).to_string()
}

/// A token for `ann` (viewer of `t`) signed with the test key of `key_alg`, its header
/// naming `header_alg` and `kid`.
fn token_as(key_alg: Algorithm, header_alg: Algorithm, kid: &str, iss: Option<&str>) -> String {
    let now = now_secs();
    let mut claims = serde_json::json!({
        "sub": "ann", "exp": now + 600, "iat": now, "teams": {"t": "viewer"}
    });
    if let Some(iss) = iss {
        claims["iss"] = iss.into();
    }
    let mut header = Header::new(header_alg);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(&header, &claims, &private_key(key_alg)).unwrap()
}

fn token(alg: Algorithm, kid: &str) -> String {
    token_as(alg, alg, kid, None)
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Serve,
    Down,
    NotJson,
    Hang,
}

struct Idp {
    jwks: Mutex<String>,
    mode: Mutex<Mode>,
    jwks_fetches: AtomicUsize,
    discovery_fetches: AtomicUsize,
    discovery_down: Mutex<bool>,
    issuer: Mutex<String>,
}

/// A local identity provider: `/jwks` and `/.well-known/openid-configuration`.
struct TestIdp {
    state: Arc<Idp>,
    base: String,
}

impl TestIdp {
    async fn start(jwks: String) -> TestIdp {
        let state = Arc::new(Idp {
            jwks: Mutex::new(jwks),
            mode: Mutex::new(Mode::Serve),
            jwks_fetches: AtomicUsize::new(0),
            discovery_fetches: AtomicUsize::new(0),
            discovery_down: Mutex::new(false),
            issuer: Mutex::new(String::new()),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        *state.issuer.lock().unwrap() = base.clone();
        let app = Router::new()
            .route("/jwks", get(serve_jwks))
            .route("/.well-known/openid-configuration", get(serve_discovery))
            .with_state(state.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        TestIdp { state, base }
    }

    fn url(&self) -> reqwest::Url {
        format!("{}/jwks", self.base).parse().unwrap()
    }

    fn serve(&self, jwks: String) {
        *self.state.jwks.lock().unwrap() = jwks;
    }

    fn mode(&self, mode: Mode) {
        *self.state.mode.lock().unwrap() = mode;
    }

    fn fetches(&self) -> usize {
        self.state.jwks_fetches.load(Ordering::SeqCst)
    }
}

async fn serve_jwks(State(idp): State<Arc<Idp>>) -> Response {
    idp.jwks_fetches.fetch_add(1, Ordering::SeqCst);
    let mode = *idp.mode.lock().unwrap();
    match mode {
        Mode::Serve => {
            let body = idp.jwks.lock().unwrap().clone();
            ([("content-type", "application/json")], body).into_response()
        }
        Mode::Down => StatusCode::SERVICE_UNAVAILABLE.into_response(),
        Mode::NotJson => "<html>maintenance</html>".into_response(),
        Mode::Hang => std::future::pending().await,
    }
}

async fn serve_discovery(State(idp): State<Arc<Idp>>) -> Response {
    idp.discovery_fetches.fetch_add(1, Ordering::SeqCst);
    if *idp.discovery_down.lock().unwrap() {
        return StatusCode::BAD_GATEWAY.into_response();
    }
    let issuer = idp.issuer.lock().unwrap().clone();
    axum::Json(serde_json::json!({
        "issuer": issuer,
        "jwks_uri": format!("{issuer}/jwks"),
        "authorization_endpoint": format!("{issuer}/authorize"),
    }))
    .into_response()
}

fn config(source: KeySource, min_refetch: Duration, fetch_timeout: Duration) -> JwksConfig {
    JwksConfig {
        source,
        refresh: Duration::from_secs(300),
        min_refetch,
        fetch_timeout,
    }
}

fn jwt_args() -> JwtArgs {
    JwtArgs {
        jwt_secret: None,
        jwt_public_key: None,
        jwt_alg: None,
        jwt_issuer: None,
        jwt_audience: None,
        jwt_leeway: 5,
        max_token_lifetime: 3600,
        jwks_url: None,
        oidc_issuer: None,
        jwks_refresh: 300,
        user_claim: "sub".into(),
        name_claim: "name".into(),
        teams_claim: "teams".into(),
        groups_claim: "groups".into(),
        group_roles: Default::default(),
    }
}

/// An authenticator on the test IdP's key set by URL, with the given refetch bound.
fn auth_on(idp: &TestIdp, min_refetch: Duration) -> (Authenticator, KeyCache) {
    let cache = KeyCache::new(config(
        KeySource::Url(idp.url()),
        min_refetch,
        Duration::from_secs(5),
    ))
    .unwrap();
    let auth = Authenticator::from_args(&JwtArgs {
        jwks_url: Some(idp.url().to_string()),
        ..jwt_args()
    })
    .unwrap()
    .with_key_cache(cache.clone());
    (auth, cache)
}

const BOUND: Duration = JwksConfig::MIN_REFETCH;

#[tokio::test]
async fn keys_are_chosen_by_kid_each_with_one_algorithm() {
    let idp = TestIdp::start(set(&[
        jwk(Algorithm::RS256, "rsa", true),
        jwk(Algorithm::ES256, "ec", false),
        jwk(Algorithm::EdDSA, "ed", true),
    ]))
    .await;
    let (auth, cache) = auth_on(&idp, BOUND);
    assert!(!auth.is_development(), "a key set is a configured source");
    assert_eq!(cache.refresh().await.unwrap(), 3);
    for (alg, kid) in [
        (Algorithm::RS256, "rsa"),
        (Algorithm::ES256, "ec"),
        (Algorithm::EdDSA, "ed"),
    ] {
        let id = auth.authenticate(&token(alg, kid)).await.unwrap();
        assert_eq!(id.user.as_str(), "ann");
        assert_eq!(id.role_in("t"), Some(teamhub_protocol::Role::Viewer));
    }
    // The RSA key under the EC key's kid: the key's algorithm decides.
    assert_eq!(
        auth.verify(&token_as(Algorithm::RS256, Algorithm::RS256, "ec", None))
            .unwrap_err(),
        AuthError::WrongAlgorithm
    );
    // Signed by the EC key but presented under the RSA kid: the RSA key verifies RS256
    // only.
    assert_eq!(
        auth.verify(&token_as(Algorithm::ES256, Algorithm::ES256, "rsa", None))
            .unwrap_err(),
        AuthError::WrongAlgorithm
    );
    // No kid at all.
    let now = now_secs();
    let no_kid = jsonwebtoken::encode(
        &Header::new(Algorithm::RS256),
        &serde_json::json!({"sub":"ann","exp":now+60,"iat":now,"teams":{}}),
        &private_key(Algorithm::RS256),
    )
    .unwrap();
    assert_eq!(
        auth.authenticate(&no_kid).await.unwrap_err(),
        AuthError::UnknownKey
    );
    // Without a secret, HS256 is refused.
    let hs = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &serde_json::json!({"sub":"ann","exp":now+60,"iat":now,"teams":{}}),
        &EncodingKey::from_secret(b"0123456789abcdef0123456789abcdef"),
    )
    .unwrap();
    assert_eq!(auth.verify(&hs).unwrap_err(), AuthError::WrongAlgorithm);
}

#[tokio::test]
async fn unsupported_keys_are_skipped_and_the_rest_load() {
    let mut enc = jwk(Algorithm::RS256, "enc", true);
    enc["use"] = "enc".into();
    let idp = TestIdp::start(set(&[
        jwk(Algorithm::RS256, "good", true),
        serde_json::json!({"kty": "oct", "kid": "sym", "k": "c2VjcmV0LXNlY3JldA"}),
        serde_json::json!({"kty": "XYZ", "kid": "weird"}),
        serde_json::json!({"kty": "EC", "kid": "p384", "crv": "P-384", "x": "AA", "y": "AA"}),
        {
            let mut k = jwk(Algorithm::RS256, "rs384", true);
            k["alg"] = "RS384".into();
            k
        },
        {
            let mut k = jwk(Algorithm::RS256, "mismatch", true);
            k["alg"] = "ES256".into();
            k
        },
        enc,
        serde_json::json!({"kty": "RSA"}),
        serde_json::json!("not an object"),
    ]))
    .await;
    let (auth, cache) = auth_on(&idp, BOUND);
    assert_eq!(cache.refresh().await.unwrap(), 1, "only the good key loads");
    assert!(
        auth.authenticate(&token(Algorithm::RS256, "good"))
            .await
            .is_ok()
    );
    for kid in ["rs384", "mismatch", "enc"] {
        assert_eq!(
            auth.verify(&token(Algorithm::RS256, kid)).unwrap_err(),
            AuthError::UnknownKey,
            "{kid}"
        );
    }
}

#[tokio::test]
async fn a_kid_named_twice_is_refused_and_the_others_work() {
    let idp = TestIdp::start(set(&[
        jwk(Algorithm::RS256, "dup", true),
        jwk(Algorithm::ES256, "dup", true),
        jwk(Algorithm::EdDSA, "dup", true),
        jwk(Algorithm::EdDSA, "ed", true),
    ]))
    .await;
    let (auth, cache) = auth_on(&idp, Duration::ZERO);
    cache.refresh().await.unwrap();
    let fetches = idp.fetches();
    assert_eq!(
        auth.authenticate(&token(Algorithm::RS256, "dup"))
            .await
            .unwrap_err(),
        AuthError::AmbiguousKey
    );
    assert_eq!(
        idp.fetches(),
        fetches,
        "an ambiguous kid is not unknown: no refetch"
    );
    assert!(
        auth.authenticate(&token(Algorithm::EdDSA, "ed"))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn a_burst_of_tokens_with_a_new_kid_causes_one_fetch() {
    let idp = TestIdp::start(set(&[jwk(Algorithm::RS256, "k1", true)])).await;
    let (auth, cache) = auth_on(&idp, BOUND);
    cache.refresh().await.unwrap();
    assert_eq!(idp.fetches(), 1);
    // The provider rotates in a new key; the first tokens signed with it arrive at once.
    idp.serve(set(&[
        jwk(Algorithm::RS256, "k1", true),
        jwk(Algorithm::ES256, "k2", true),
    ]));
    let auth = Arc::new(auth);
    let burst: Vec<_> = (0..32)
        .map(|_| {
            let auth = auth.clone();
            tokio::spawn(async move { auth.authenticate(&token(Algorithm::ES256, "k2")).await })
        })
        .collect();
    for t in burst {
        assert!(
            t.await.unwrap().is_ok(),
            "every token of the burst is accepted"
        );
    }
    assert_eq!(idp.fetches(), 2, "the whole burst caused one fetch");
    // Within 10 s of that fetch another unknown kid is refused without a fetch.
    let burst: Vec<_> = (0..8)
        .map(|i| {
            let auth = auth.clone();
            tokio::spawn(async move {
                auth.authenticate(&token(Algorithm::ES256, &format!("k{}", 3 + i)))
                    .await
            })
        })
        .collect();
    for t in burst {
        assert_eq!(t.await.unwrap().unwrap_err(), AuthError::UnknownKey);
    }
    assert_eq!(idp.fetches(), 2, "no fetch within the bound");
}

#[tokio::test]
async fn without_the_bound_each_unknown_kid_would_fetch() {
    // The control for the test above: with the interval injected as zero, unknown kids
    // fetch every time, so the count of 2 there is the bound's doing.
    let idp = TestIdp::start(set(&[jwk(Algorithm::RS256, "k1", true)])).await;
    let (auth, cache) = auth_on(&idp, Duration::ZERO);
    cache.refresh().await.unwrap();
    for n in 0..3 {
        assert_eq!(
            auth.authenticate(&token(Algorithm::RS256, "nope"))
                .await
                .unwrap_err(),
            AuthError::UnknownKey
        );
        assert_eq!(idp.fetches(), 2 + n);
    }
}

#[tokio::test]
async fn an_outage_keeps_the_last_set_and_a_removed_key_stops_at_the_next_fetch() {
    let idp = TestIdp::start(set(&[
        jwk(Algorithm::RS256, "old", true),
        jwk(Algorithm::EdDSA, "new", true),
    ]))
    .await;
    let (auth, cache) = auth_on(&idp, Duration::ZERO);
    cache.refresh().await.unwrap();
    let age_before = cache.age();

    idp.mode(Mode::Down);
    assert!(matches!(
        cache.refresh().await,
        Err(FetchError::Status(503))
    ));
    idp.mode(Mode::NotJson);
    assert!(matches!(cache.refresh().await, Err(FetchError::Invalid(_))));
    assert!(
        cache.age() >= age_before,
        "a failed fetch does not count as a load"
    );
    for (alg, kid) in [(Algorithm::RS256, "old"), (Algorithm::EdDSA, "new")] {
        assert!(
            auth.authenticate(&token(alg, kid)).await.is_ok(),
            "{kid} still works through the outage"
        );
    }

    idp.mode(Mode::Serve);
    idp.serve(set(&[jwk(Algorithm::EdDSA, "new", true)]));
    assert!(
        auth.verify(&token(Algorithm::RS256, "old")).is_ok(),
        "until the next fetch"
    );
    assert_eq!(cache.refresh().await.unwrap(), 1);
    assert_eq!(
        auth.authenticate(&token(Algorithm::RS256, "old"))
            .await
            .unwrap_err(),
        AuthError::UnknownKey
    );
    assert!(
        auth.authenticate(&token(Algorithm::EdDSA, "new"))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn a_set_that_never_loaded_refuses_idp_tokens_and_the_node_keeps_trying() {
    let idp = TestIdp::start(set(&[jwk(Algorithm::RS256, "k1", true)])).await;
    idp.mode(Mode::NotJson);
    let (auth, cache) = auth_on(&idp, BOUND);
    assert!(matches!(cache.refresh().await, Err(FetchError::Invalid(_))));
    assert!(!cache.loaded());
    for fetches in [2, 2] {
        assert_eq!(
            auth.authenticate(&token(Algorithm::RS256, "k1"))
                .await
                .unwrap_err(),
            AuthError::KeysUnavailable,
        );
        assert_eq!(
            idp.fetches(),
            fetches,
            "one refetch, then none within the bound"
        );
    }
    // The provider recovers; the background refresh retries a failed fetch.
    idp.mode(Mode::Serve);
    let mut loads = cache.loads();
    let task = cache.spawn_refresh();
    tokio::time::timeout(Duration::from_secs(10), loads.wait_for(|n| *n == 1))
        .await
        .expect("the background task loads the set")
        .unwrap();
    assert!(cache.loaded());
    assert!(
        auth.authenticate(&token(Algorithm::RS256, "k1"))
            .await
            .is_ok()
    );
    task.abort();
}

#[tokio::test]
async fn a_hanging_provider_is_bounded_by_the_fetch_timeout() {
    let idp = TestIdp::start(set(&[jwk(Algorithm::RS256, "k1", true)])).await;
    let cache = KeyCache::new(config(
        KeySource::Url(idp.url()),
        Duration::ZERO,
        Duration::from_millis(300),
    ))
    .unwrap();
    cache.refresh().await.unwrap();
    let auth = Authenticator::from_args(&JwtArgs {
        jwks_url: Some(idp.url().to_string()),
        ..jwt_args()
    })
    .unwrap()
    .with_key_cache(cache.clone());
    idp.mode(Mode::Hang);
    let result = tokio::time::timeout(Duration::from_secs(5), cache.refresh())
        .await
        .expect("the fetch gives up on its own");
    assert!(matches!(result, Err(FetchError::Timeout(_))), "{result:?}");
    // A token with an unknown kid waits at most one bounded fetch, and known keys
    // keep working meanwhile.
    let refused = tokio::time::timeout(
        Duration::from_secs(5),
        auth.authenticate(&token(Algorithm::RS256, "k9")),
    )
    .await
    .expect("bounded");
    assert_eq!(refused.unwrap_err(), AuthError::UnknownKey);
    assert!(
        auth.authenticate(&token(Algorithm::RS256, "k1"))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn discovery_finds_the_key_set_and_tokens_must_carry_the_issuer() {
    let idp = TestIdp::start(set(&[jwk(Algorithm::ES256, "k1", true)])).await;
    let issuer = idp.base.clone();
    let auth = Authenticator::from_args(&JwtArgs {
        oidc_issuer: Some(issuer.clone()),
        ..jwt_args()
    })
    .unwrap();
    assert!(!auth.is_development());
    let cache = auth.key_cache().unwrap().clone();
    assert!(matches!(cache.source(), KeySource::Discovery { .. }));
    cache.refresh().await.unwrap();
    assert_eq!(idp.state.discovery_fetches.load(Ordering::SeqCst), 1);
    assert_eq!(idp.fetches(), 1);

    let good = token_as(Algorithm::ES256, Algorithm::ES256, "k1", Some(&issuer));
    assert!(auth.authenticate(&good).await.is_ok());
    let other = token_as(
        Algorithm::ES256,
        Algorithm::ES256,
        "k1",
        Some("https://evil"),
    );
    assert!(matches!(
        auth.verify(&other).unwrap_err(),
        AuthError::InvalidClaims(m) if m.contains("iss")
    ));
    let none = token_as(Algorithm::ES256, Algorithm::ES256, "k1", None);
    assert!(matches!(
        auth.verify(&none).unwrap_err(),
        AuthError::InvalidClaims(m) if m.contains("iss")
    ));

    // Discovery fails later: the last jwks_uri it gave is still used.
    *idp.state.discovery_down.lock().unwrap() = true;
    idp.serve(set(&[
        jwk(Algorithm::ES256, "k1", true),
        jwk(Algorithm::EdDSA, "k2", true),
    ]));
    assert_eq!(cache.refresh().await.unwrap(), 2);
    assert!(
        auth.authenticate(&token_as(
            Algorithm::EdDSA,
            Algorithm::EdDSA,
            "k2",
            Some(&issuer)
        ))
        .await
        .is_ok()
    );
}

#[tokio::test]
async fn discovery_that_never_worked_is_a_failed_fetch() {
    let idp = TestIdp::start(set(&[jwk(Algorithm::ES256, "k1", true)])).await;
    *idp.state.discovery_down.lock().unwrap() = true;
    let cache = KeyCache::new(config(
        KeySource::Discovery {
            issuer: idp.base.clone(),
        },
        BOUND,
        Duration::from_secs(5),
    ))
    .unwrap();
    assert!(matches!(
        cache.refresh().await,
        Err(FetchError::Discovery(_))
    ));
    assert!(!cache.loaded());
    assert_eq!(idp.fetches(), 0);
}

#[tokio::test]
async fn every_source_at_once() {
    let idp = TestIdp::start(set(&[jwk(Algorithm::EdDSA, "ed", true)])).await;
    let dir = tempfile::tempdir().unwrap();
    let pem = dir.path().join("rs256-public.pem");
    std::fs::write(
        &pem,
        include_bytes!("../../../tests/fixtures/rs256-public.pem"),
    )
    .unwrap();
    const SECRET: &str = "0123456789abcdef0123456789abcdef";
    let auth = Authenticator::from_args(&JwtArgs {
        jwt_secret: Some(SECRET.into()),
        jwt_public_key: Some(pem),
        jwt_alg: Some(crate::config::JwtAlg::Rs256),
        jwks_url: Some(idp.url().to_string()),
        ..jwt_args()
    })
    .unwrap();
    auth.key_cache().unwrap().refresh().await.unwrap();
    let now = now_secs();
    let claims = serde_json::json!({"sub":"ann","exp":now+60,"iat":now,"teams":{"t":"editor"}});
    let hs = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    let pem_token = jsonwebtoken::encode(
        &Header::new(Algorithm::RS256),
        &claims,
        &private_key(Algorithm::RS256),
    )
    .unwrap();
    for t in [hs, pem_token, token(Algorithm::EdDSA, "ed")] {
        assert_eq!(auth.authenticate(&t).await.unwrap().user.as_str(), "ann");
    }
    // An ES256 token: not the PEM key's algorithm, nor that of the key its kid names.
    assert_eq!(
        auth.authenticate(&token(Algorithm::ES256, "ed"))
            .await
            .unwrap_err(),
        AuthError::WrongAlgorithm
    );
    assert!(
        auth.mint(&"ann".try_into().unwrap(), None, Default::default(), 60)
            .is_some()
    );
}

#[test]
fn plain_http_only_on_loopback() {
    let with = |url: &str| {
        Authenticator::from_args(&JwtArgs {
            jwks_url: Some(url.into()),
            ..jwt_args()
        })
        .map(|_| ())
    };
    assert!(with("https://idp.example/jwks").is_ok());
    assert!(with("http://127.0.0.1:9/jwks").is_ok());
    assert!(with("http://localhost:9/jwks").is_ok());
    let err = with("http://idp.example/jwks").unwrap_err().to_string();
    assert!(err.contains("https"), "{err}");
    assert!(with("not a url").is_err());
    let err = Authenticator::from_args(&JwtArgs {
        oidc_issuer: Some("http://idp.example".into()),
        ..jwt_args()
    })
    .map(|_| ())
    .unwrap_err()
    .to_string();
    assert!(err.contains("https"), "{err}");
}

#[tokio::test]
async fn provider_tokens_are_mapped_by_the_claim_flags_and_the_hub_s_own_are_not() {
    let idp = TestIdp::start(set(&[jwk(Algorithm::ES256, "k1", true)])).await;
    const SECRET: &str = "0123456789abcdef0123456789abcdef";
    let auth = Authenticator::from_args(&JwtArgs {
        jwt_secret: Some(SECRET.into()),
        jwks_url: Some(idp.url().to_string()),
        user_claim: "preferred_username".into(),
        name_claim: "given_name".into(),
        teams_claim: "hub_teams".into(),
        groups_claim: "roles".into(),
        group_roles: "design-leads=design:admin,staff=design:viewer,staff=ops:editor"
            .parse()
            .unwrap(),
        ..jwt_args()
    })
    .unwrap();
    auth.key_cache().unwrap().refresh().await.unwrap();
    let now = now_secs();
    let sign = |claims: serde_json::Value| {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some("k1".into());
        jsonwebtoken::encode(&header, &claims, &private_key(Algorithm::ES256)).unwrap()
    };
    let id = auth
        .authenticate(&sign(serde_json::json!({
            "sub": "00u1a2b3", "preferred_username": "ann", "given_name": "Ann",
            "exp": now + 60, "iat": now,
            "roles": ["staff", "design-leads", "unmapped"], "hub_teams": {"ops": "viewer"}
        })))
        .await
        .unwrap();
    assert_eq!((id.user.as_str(), id.name.as_deref()), ("ann", Some("Ann")));
    use teamhub_protocol::Role;
    assert_eq!(
        id.role_in("design"),
        Some(Role::Admin),
        "the strongest group wins"
    );
    assert_eq!(
        id.role_in("ops"),
        Some(Role::Editor),
        "a group beats a weaker claim"
    );
    // No team at all: still a valid token.
    let nobody =
        sign(serde_json::json!({"preferred_username": "bob", "exp": now + 60, "iat": now}));
    assert_eq!(auth.authenticate(&nobody).await.unwrap().teams().count(), 0);
    // Without the user claim, `sub` is not used in its place.
    let sub_only = sign(serde_json::json!({"sub": "ann", "exp": now + 60, "iat": now}));
    assert!(matches!(
        auth.authenticate(&sub_only).await.unwrap_err(),
        AuthError::InvalidClaims(m) if m.contains("preferred_username")
    ));
    let bad_id = sign(
        serde_json::json!({"preferred_username": "ann@example.com", "exp": now + 60, "iat": now}),
    );
    assert!(matches!(
        auth.authenticate(&bad_id).await.unwrap_err(),
        AuthError::InvalidClaims(_)
    ));
    // The hub's own tokens keep `sub` and `teams`.
    let own = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &serde_json::json!({"sub":"carl","exp":now+60,"iat":now,"teams":{"t":"owner"}}),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    let carl = auth.authenticate(&own).await.unwrap();
    assert_eq!(
        (carl.user.as_str(), carl.role_in("t")),
        ("carl", Some(Role::Owner))
    );
}
