//! The identity provider's keys: a JSON Web Key Set fetched by URL (`--jwks-url`) or
//! found through OIDC discovery (`--oidc-issuer`), cached, refreshed in the background
//! and refetched when a token names a key the cache lacks.
//!
//! What the cache promises:
//! - a key is chosen by `kid` and used with one algorithm only: the JWK's own `alg`
//!   when it has one, otherwise the one its type implies (RSA: RS256, EC P-256: ES256,
//!   OKP Ed25519: EdDSA); other key types, curves and algorithms are skipped with a log
//!   line;
//! - fetches are single-flight: one at a time for the node, and a token with an unknown
//!   `kid` causes a fetch only when no other unknown `kid` caused one in the last
//!   `min_refetch` (10 s), so a burst of tokens with a new `kid` makes one request
//!   (the others wait for it), and forged `kid`s cost the provider one request per
//!   10 s at most;
//! - a failed fetch (unreachable, slow beyond `fetch_timeout`, not a key set) changes
//!   nothing: the last set that loaded keeps working; a successful one replaces the set
//!   whole, so a key the provider removed stops working.
//!
//! The set is read on every token through a `std::sync::RwLock` taken only to clone an
//! `Arc`, never across an `.await`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use tokio::time::Instant;

/// Metric names and recording.
pub mod metric {
    /// Gauge: seconds since the key set last loaded (since the node started while it
    /// never has). Set when `/metrics` is read.
    pub const AGE: &str = "teamhub_jwks_age_seconds";
    /// Gauge: keys in the set in use.
    pub const KEYS: &str = "teamhub_jwks_keys";
    /// Counter: fetches of the key set (or of the discovery document) that failed, by
    /// `reason`.
    pub const FETCH_FAILURES: &str = "teamhub_jwks_fetch_failures_total";

    pub fn describe() {
        metrics::describe_gauge!(
            AGE,
            metrics::Unit::Seconds,
            "Seconds since the identity provider's key set last loaded"
        );
        metrics::describe_gauge!(KEYS, "Keys in the identity provider's key set in use");
        metrics::describe_counter!(
            FETCH_FAILURES,
            "Failed fetches of the identity provider's key set, by reason"
        );
    }
}

/// Where the keys come from.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// `--jwks-url`.
    Url(reqwest::Url),
    /// `--oidc-issuer` alone: `jwks_uri` from `<issuer>/.well-known/openid-configuration`.
    Discovery { issuer: String },
}

#[derive(Debug, Clone)]
pub struct JwksConfig {
    pub source: KeySource,
    /// `--jwks-refresh`: how often the set is refetched in the background.
    pub refresh: Duration,
    /// The least time between two fetches an unknown `kid` may cause (10 s).
    pub min_refetch: Duration,
    /// Bound on one request, connecting included.
    pub fetch_timeout: Duration,
}

impl JwksConfig {
    pub const MIN_REFETCH: Duration = Duration::from_secs(10);
    pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
}

/// Largest key set or discovery document accepted.
const MAX_BODY: usize = 1 << 20;

/// One usable key.
pub struct Key {
    pub decoding: DecodingKey,
    /// The one algorithm this key verifies.
    pub alg: Algorithm,
}

/// A loaded set: keys by `kid`.
struct KeySet {
    keys: HashMap<String, Arc<Key>>,
    /// `kid`s the set names more than once: refused rather than guessed.
    ambiguous: HashSet<String>,
}

/// What the cache holds for a `kid`.
pub enum Lookup {
    Found(Arc<Key>),
    /// The set names this `kid` for more than one key.
    Ambiguous,
    /// Not in the set.
    Unknown,
    /// No set has loaded yet.
    NotLoaded,
}

/// Why a fetch failed; the label of `teamhub_jwks_fetch_failures_total`.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("request timed out after {0:?}")]
    Timeout(Duration),
    #[error("unreachable: {0}")]
    Unreachable(String),
    #[error("answered HTTP {0}")]
    Status(u16),
    #[error("not a key set: {0}")]
    Invalid(String),
    #[error("discovery failed: {0}")]
    Discovery(String),
}

impl FetchError {
    fn reason(&self) -> &'static str {
        match self {
            FetchError::Timeout(_) => "timeout",
            FetchError::Unreachable(_) => "unreachable",
            FetchError::Status(_) => "status",
            FetchError::Invalid(_) => "invalid",
            FetchError::Discovery(_) => "discovery",
        }
    }
}

/// The key set cache; cheap to clone.
#[derive(Clone)]
pub struct KeyCache {
    inner: Arc<Inner>,
}

struct Inner {
    config: JwksConfig,
    client: reqwest::Client,
    set: RwLock<Option<Arc<KeySet>>>,
    /// Held for the whole of a fetch: fetches are single-flight.
    fetching: tokio::sync::Mutex<()>,
    /// When an unknown `kid` last caused a fetch (under `fetching`).
    last_refetch: std::sync::Mutex<Option<Instant>>,
    /// When a set last loaded, or when the cache was made.
    loaded_at: std::sync::Mutex<(Instant, bool)>,
    /// The last `jwks_uri` discovery gave, used while discovery fails.
    discovered: std::sync::Mutex<Option<reqwest::Url>>,
    /// Counts the sets loaded, for whoever waits for the next one.
    loads: tokio::sync::watch::Sender<u64>,
}

impl KeyCache {
    pub fn new(config: JwksConfig) -> anyhow::Result<KeyCache> {
        let client = reqwest::Client::builder()
            .timeout(config.fetch_timeout)
            .connect_timeout(config.fetch_timeout)
            .user_agent(concat!("teamhub/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(KeyCache {
            inner: Arc::new(Inner {
                config,
                client,
                set: RwLock::new(None),
                fetching: tokio::sync::Mutex::new(()),
                last_refetch: std::sync::Mutex::new(None),
                loaded_at: std::sync::Mutex::new((Instant::now(), false)),
                discovered: std::sync::Mutex::new(None),
                loads: tokio::sync::watch::Sender::new(0),
            }),
        })
    }

    /// Where the keys come from: a URL, or discovery from an issuer.
    pub fn source(&self) -> &KeySource {
        &self.inner.config.source
    }

    /// Fetches at once and then every `refresh` (sooner after a failure) for as long as
    /// the cache exists.
    pub fn spawn_refresh(&self) -> tokio::task::JoinHandle<()> {
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            loop {
                let Some(inner) = weak.upgrade() else { return };
                let cache = KeyCache { inner };
                let next = match cache.refresh().await {
                    Ok(_) => cache.inner.config.refresh,
                    Err(_) => cache
                        .inner
                        .config
                        .min_refetch
                        .max(Duration::from_secs(1))
                        .min(cache.inner.config.refresh),
                };
                drop(cache);
                tokio::time::sleep(next).await;
            }
        })
    }

    pub fn lookup(&self, kid: &str) -> Lookup {
        let set = self.inner.set.read().expect("key set lock").clone();
        match set {
            None => Lookup::NotLoaded,
            Some(set) => match set.keys.get(kid) {
                Some(key) => Lookup::Found(key.clone()),
                None if set.ambiguous.contains(kid) => Lookup::Ambiguous,
                None => Lookup::Unknown,
            },
        }
    }

    /// Fetches the set now (after any fetch under way), whatever the last attempt.
    pub async fn refresh(&self) -> Result<usize, FetchError> {
        let _flight = self.inner.fetching.lock().await;
        self.fetch_locked().await
    }

    /// For a token whose `kid` the cache lacks: waits for a fetch under way, or makes
    /// one unless one was attempted within `min_refetch`.
    pub async fn refetch_for(&self, kid: &str) {
        let _flight = self.inner.fetching.lock().await;
        if matches!(self.lookup(kid), Lookup::Found(_) | Lookup::Ambiguous) {
            return;
        }
        let allowed = {
            let mut last = self.inner.last_refetch.lock().expect("lock");
            let allowed = !last.is_some_and(|t| t.elapsed() < self.inner.config.min_refetch);
            if allowed {
                *last = Some(Instant::now());
            }
            allowed
        };
        if allowed {
            let _ = self.fetch_locked().await;
        }
    }

    /// Seconds since a set last loaded (or since the cache was made).
    pub fn age(&self) -> Duration {
        self.inner.loaded_at.lock().expect("lock").0.elapsed()
    }

    /// Changes each time a set loads (the number of sets loaded so far).
    pub fn loads(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.loads.subscribe()
    }

    /// Whether a set has ever loaded.
    pub fn loaded(&self) -> bool {
        self.inner.loaded_at.lock().expect("lock").1
    }

    /// Sets the age gauge (read at each `/metrics` request).
    pub fn record_metrics(&self) {
        metrics::gauge!(metric::AGE).set(self.age().as_secs_f64());
    }

    /// One fetch; the caller holds `fetching`.
    async fn fetch_locked(&self) -> Result<usize, FetchError> {
        let result = match self.jwks_url().await {
            Ok(url) => self.fetch_set(&url).await.map(|set| (url, set)),
            Err(e) => Err(e),
        };
        match result {
            Ok((url, set)) => {
                let count = set.keys.len();
                let kids: Vec<&str> = {
                    let mut k: Vec<&str> = set.keys.keys().map(String::as_str).collect();
                    k.sort_unstable();
                    k
                };
                tracing::debug!(%url, keys = ?kids, "identity provider key set loaded");
                if count == 0 {
                    tracing::warn!(%url, "identity provider key set has no usable key");
                }
                metrics::gauge!(metric::KEYS).set(count as f64);
                *self.inner.set.write().expect("key set lock") = Some(Arc::new(set));
                *self.inner.loaded_at.lock().expect("lock") = (Instant::now(), true);
                self.inner.loads.send_modify(|n| *n += 1);
                Ok(count)
            }
            Err(e) => {
                let kept = if self.loaded() {
                    "the last key set that loaded stays in use"
                } else {
                    "no key set has loaded yet: identity provider tokens are refused"
                };
                tracing::warn!(error = %e, "fetching the identity provider key set failed; {kept}");
                metrics::counter!(metric::FETCH_FAILURES, "reason" => e.reason()).increment(1);
                Err(e)
            }
        }
    }

    /// The key set's URL: configured, or discovered (the last discovered one while
    /// discovery fails).
    async fn jwks_url(&self) -> Result<reqwest::Url, FetchError> {
        let issuer = match &self.inner.config.source {
            KeySource::Url(url) => return Ok(url.clone()),
            KeySource::Discovery { issuer } => issuer,
        };
        match self.discover(issuer).await {
            Ok(url) => {
                *self.inner.discovered.lock().expect("lock") = Some(url.clone());
                Ok(url)
            }
            Err(e) => {
                let last = self.inner.discovered.lock().expect("lock").clone();
                match last {
                    Some(url) => {
                        tracing::warn!(error = %e, %url, "OIDC discovery failed; using the jwks_uri it gave last");
                        metrics::counter!(metric::FETCH_FAILURES, "reason" => e.reason())
                            .increment(1);
                        Ok(url)
                    }
                    None => Err(FetchError::Discovery(e.to_string())),
                }
            }
        }
    }

    async fn discover(&self, issuer: &str) -> Result<reqwest::Url, FetchError> {
        #[derive(serde::Deserialize)]
        struct Discovery {
            issuer: Option<String>,
            jwks_uri: String,
        }
        let url = discovery_url(issuer)
            .map_err(|e| FetchError::Discovery(format!("issuer is not a URL: {e}")))?;
        let body = self.get(&url).await?;
        let doc: Discovery = serde_json::from_slice(&body).map_err(|e| {
            FetchError::Invalid(format!("{url} is not an OpenID configuration: {e}"))
        })?;
        if doc.issuer.as_deref() != Some(issuer) {
            tracing::warn!(
                configured = issuer,
                published = doc.issuer.as_deref().unwrap_or(""),
                "the OpenID configuration names another issuer; tokens must still carry the configured one"
            );
        }
        reqwest::Url::parse(&doc.jwks_uri)
            .map_err(|e| FetchError::Invalid(format!("jwks_uri {:?}: {e}", doc.jwks_uri)))
    }

    async fn fetch_set(&self, url: &reqwest::Url) -> Result<KeySet, FetchError> {
        let body = self.get(url).await?;
        parse_set(&body).map_err(|e| FetchError::Invalid(format!("{url}: {e}")))
    }

    /// A bounded GET: the client's timeout covers the whole exchange.
    async fn get(&self, url: &reqwest::Url) -> Result<Vec<u8>, FetchError> {
        let timeout = self.inner.config.fetch_timeout;
        let transport = |e: reqwest::Error| {
            if e.is_timeout() {
                FetchError::Timeout(timeout)
            } else {
                FetchError::Unreachable(format!("{url}: {e}"))
            }
        };
        let mut response = self
            .inner
            .client
            .get(url.clone())
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(transport)?;
        if !response.status().is_success() {
            return Err(FetchError::Status(response.status().as_u16()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(transport)? {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(FetchError::Invalid(format!(
                    "{url}: larger than {MAX_BODY} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

/// `<issuer>/.well-known/openid-configuration` (a trailing `/` of the issuer dropped).
pub fn discovery_url(issuer: &str) -> Result<reqwest::Url, url::ParseError> {
    reqwest::Url::parse(&format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    ))
}

/// Parses a key set. The document must be a JSON object with a `keys` list; each key
/// that cannot be used is skipped with a log line, and a `kid` named twice is refused.
fn parse_set(body: &[u8]) -> Result<KeySet, String> {
    #[derive(serde::Deserialize)]
    struct Raw {
        keys: Vec<serde_json::Value>,
    }
    let raw: Raw =
        serde_json::from_slice(body).map_err(|e| format!("not JSON with `keys`: {e}"))?;
    let mut keys: HashMap<String, Arc<Key>> = HashMap::new();
    let mut ambiguous = HashSet::new();
    for value in raw.keys {
        let kid = value.get("kid").and_then(|k| k.as_str()).map(str::to_owned);
        let Some(kid) = kid else {
            tracing::warn!(
                "identity provider key without `kid` skipped: tokens choose keys by kid"
            );
            continue;
        };
        let key = match usable(value) {
            Ok(Some(key)) => key,
            Ok(None) => continue,
            Err(why) => {
                tracing::warn!(kid, "identity provider key skipped: {why}");
                continue;
            }
        };
        if ambiguous.contains(&kid) || keys.remove(&kid).is_some() {
            tracing::error!(
                kid,
                "the identity provider key set names kid {kid:?} for more than one key; tokens with it are refused"
            );
            ambiguous.insert(kid);
            continue;
        }
        keys.insert(kid, Arc::new(key));
    }
    Ok(KeySet { keys, ambiguous })
}

/// The key and its one algorithm; `None` for a key that is not for signatures.
fn usable(value: serde_json::Value) -> Result<Option<Key>, String> {
    let jwk: Jwk = serde_json::from_value(value).map_err(|e| format!("not a JWK: {e}"))?;
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return Ok(None);
    }
    let implied = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => Algorithm::ES256,
        AlgorithmParameters::EllipticCurve(p) => {
            return Err(format!("curve {:?} is not accepted (P-256 only)", p.curve));
        }
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
            Algorithm::EdDSA
        }
        AlgorithmParameters::OctetKeyPair(p) => {
            return Err(format!(
                "curve {:?} is not accepted (Ed25519 only)",
                p.curve
            ));
        }
        AlgorithmParameters::OctetKey(_) => {
            return Err("symmetric (`oct`) keys are not accepted".into());
        }
        AlgorithmParameters::Other(p) => {
            let kty = p.fields.get("kty").and_then(|k| k.as_str()).unwrap_or("?");
            return Err(format!("key type {kty:?} is not accepted (RSA, EC, OKP)"));
        }
        _ => return Err("key type is not accepted".into()),
    };
    let alg = match jwk.common.key_algorithm {
        None => implied,
        Some(KeyAlgorithm::RS256) => Algorithm::RS256,
        Some(KeyAlgorithm::ES256) => Algorithm::ES256,
        Some(KeyAlgorithm::EdDSA) => Algorithm::EdDSA,
        Some(other) => {
            return Err(format!(
                "algorithm {other:?} is not accepted (RS256, ES256, EdDSA)"
            ));
        }
    };
    if alg != implied {
        return Err(format!("algorithm {alg:?} does not fit the key's type"));
    }
    let decoding = DecodingKey::from_jwk(&jwk).map_err(|e| format!("unusable key: {e}"))?;
    Ok(Some(Key { decoding, alg }))
}

#[cfg(test)]
mod tests;
