//! Token verification: JWTs (HS256, RS256, ES256, and EdDSA from an identity
//! provider's key set) into an [`Identity`].
//!
//! The identity is computed once per connection (and again on `refresh`); permission
//! checks afterwards are a map lookup plus [`teamhub_protocol::permits`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use teamhub_protocol::{Claims, Role, TeamId, UserId};

use crate::config::{JwtAlg, JwtArgs};

pub mod jwks;
pub mod mapping;

use self::jwks::{JwksConfig, KeyCache, KeySource, Lookup};
use self::mapping::{ClaimMapping, Mapped};

/// Why a token was refused. Every variant is a 401 at the handshake and an
/// `unauthorized` error on `refresh`; the text is safe to show the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing token: send Authorization: Bearer <token> or ?token=<token>")]
    Missing,
    #[error("malformed token")]
    Malformed,
    #[error("token expired")]
    Expired,
    #[error("token not valid yet")]
    NotYetValid,
    #[error("bad token signature")]
    BadSignature,
    #[error("token algorithm not accepted")]
    WrongAlgorithm,
    #[error("invalid token claims: {0}")]
    InvalidClaims(String),
    #[error("unknown API key")]
    UnknownApiKey,
    #[error("token signed by a key the identity provider does not publish (no or unknown `kid`)")]
    UnknownKey,
    #[error("the identity provider's key set names this token's `kid` for more than one key")]
    AmbiguousKey,
    #[error("the identity provider's keys have not loaded yet; try again shortly")]
    KeysUnavailable,
}

impl AuthError {
    /// The `reason` label of `teamhub_tokens_refused_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::Malformed => "malformed",
            AuthError::Expired => "expired",
            AuthError::NotYetValid => "not_yet_valid",
            AuthError::BadSignature => "bad_signature",
            AuthError::WrongAlgorithm => "algorithm",
            AuthError::InvalidClaims(_) => "claims",
            AuthError::UnknownApiKey => "api_key",
            AuthError::UnknownKey => "unknown_kid",
            AuthError::AmbiguousKey => "ambiguous_kid",
            AuthError::KeysUnavailable => "keys_unavailable",
        }
    }
}

/// Who a connection or request acts as, and with which role in which team.
#[derive(Debug, Clone)]
pub struct Identity {
    pub user: UserId,
    pub name: Option<String>,
    /// Teams with a known role; unknown role names grant nothing and are left out.
    grants: Arc<BTreeMap<TeamId, Role>>,
    /// Expiry in seconds since the Unix epoch (`u64::MAX` for API keys, which do not
    /// expire but can be deleted).
    pub exp: u64,
    /// Issue time in seconds since the Unix epoch: the JWT's `iat`, or an API key's
    /// creation time. Revocations refuse identities issued before them.
    pub iat: Option<u64>,
    /// The API key this identity comes from, if it is not a JWT.
    pub api_key: Option<Arc<str>>,
}

impl Identity {
    pub fn role_in(&self, team: &str) -> Option<Role> {
        self.grants.get(team).copied()
    }

    pub fn teams(&self) -> impl Iterator<Item = (&TeamId, Role)> {
        self.grants.iter().map(|(t, r)| (t, *r))
    }

    /// The identity of an API key: its role in its one team, as user `apikey:<id>`.
    pub fn for_api_key(id: &str, team: TeamId, role: Role, created_secs: u64) -> Identity {
        let user = UserId::new(&format!("{}{id}", teamhub_persistence::API_KEY_USER_PREFIX))
            .expect("API key ids are short and use the id alphabet");
        Identity {
            user,
            name: None,
            grants: Arc::new(BTreeMap::from([(team, role)])),
            exp: u64::MAX,
            iat: Some(created_secs),
            api_key: Some(id.into()),
        }
    }

    fn from_mapped(m: Mapped) -> Identity {
        Identity {
            user: m.user,
            name: m.name,
            grants: Arc::new(m.grants),
            exp: m.exp,
            iat: m.iat,
            api_key: None,
        }
    }

    fn from_claims(claims: Claims) -> Identity {
        let grants = claims
            .teams
            .iter()
            .filter_map(|(team, role)| Role::parse(role).map(|r| (team.clone(), r)))
            .collect();
        Identity {
            user: claims.sub,
            name: claims.name,
            grants: Arc::new(grants),
            exp: claims.exp,
            iat: claims.iat,
            api_key: None,
        }
    }
}

/// Whether a bearer token is an API key rather than a JWT.
pub fn is_api_key(token: &str) -> bool {
    token.starts_with(API_KEY_PREFIX)
}

/// What every API key starts with.
pub const API_KEY_PREFIX: &str = "thk_";

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Verifies tokens with every configured source; can also sign them when one is a
/// secret.
///
/// Sources, any of which may be configured together: the HS256 secret, the PEM public
/// key (RS256 or ES256) and the identity provider's key set ([`jwks`]). A token's
/// header picks the candidates: HS256 goes to the secret; RS256, ES256 and EdDSA to the
/// PEM key when its algorithm matches, and then, if its signature does not verify
/// there, to the key set by `kid`.
pub struct Authenticator {
    secret: Option<DecodingKey>,
    encoding: Option<EncodingKey>,
    /// `--jwt-public-key` and its algorithm.
    pem: Option<(DecodingKey, Algorithm)>,
    /// The identity provider's keys (`--jwks-url`, `--oidc-issuer`).
    idp: Option<KeyCache>,
    /// The `iss` the identity provider's tokens must carry: `--oidc-issuer`, else
    /// `--jwt-issuer`.
    idp_issuer: Option<String>,
    /// Which claims of the identity provider's tokens hold what.
    mapping: ClaimMapping,
    leeway: u64,
    /// `--max-token-lifetime`, when not 0.
    max_lifetime: Option<u64>,
    issuer: Option<String>,
    audience: Option<String>,
    development: bool,
}

impl Authenticator {
    /// Builds the authenticator from the configuration. With no source configured this
    /// is development mode: a random secret that lives as long as the process. Nothing
    /// is fetched here: [`Authenticator::start_refresh`] starts the key set's fetches.
    pub fn from_args(args: &JwtArgs) -> anyhow::Result<Authenticator> {
        let mut secret = None;
        let mut encoding = None;
        if let Some(s) = &args.jwt_secret {
            if args.jwt_public_key.is_none() && args.jwt_alg.is_some_and(|a| a != JwtAlg::Hs256) {
                anyhow::bail!(
                    "--jwt-secret is an HS256 secret; --jwt-alg (the algorithm of --jwt-public-key) must be HS256 or unset"
                );
            }
            if s.len() < 16 {
                anyhow::bail!(
                    "--jwt-secret is too short: use at least 16 characters (32 random bytes recommended)"
                );
            }
            secret = Some(DecodingKey::from_secret(s.as_bytes()));
            encoding = Some(EncodingKey::from_secret(s.as_bytes()));
        }
        let pem = match &args.jwt_public_key {
            None => None,
            Some(path) => {
                let pem = std::fs::read(path)
                    .with_context(|| format!("reading --jwt-public-key {}", path.display()))?;
                let (key, alg) = match args.jwt_alg {
                    Some(JwtAlg::Rs256) => (DecodingKey::from_rsa_pem(&pem), Algorithm::RS256),
                    Some(JwtAlg::Es256) => (DecodingKey::from_ec_pem(&pem), Algorithm::ES256),
                    _ => anyhow::bail!("--jwt-public-key needs --jwt-alg RS256 or ES256"),
                };
                let key =
                    key.with_context(|| format!("parsing PEM public key {}", path.display()))?;
                Some((key, alg))
            }
        };
        let idp = idp_source(args)?
            .map(|source| {
                KeyCache::new(JwksConfig {
                    source,
                    refresh: Duration::from_secs(args.jwks_refresh.max(1)),
                    min_refetch: JwksConfig::MIN_REFETCH,
                    fetch_timeout: JwksConfig::FETCH_TIMEOUT,
                })
            })
            .transpose()
            .context("building the identity provider's HTTP client")?;
        let development = secret.is_none() && pem.is_none() && idp.is_none();
        if development {
            let random: [u8; 32] = rand::random();
            secret = Some(DecodingKey::from_secret(&random));
            encoding = Some(EncodingKey::from_secret(&random));
        }
        Ok(Authenticator {
            secret,
            encoding,
            pem,
            idp,
            idp_issuer: args.oidc_issuer.clone().or_else(|| args.jwt_issuer.clone()),
            mapping: ClaimMapping {
                user: args.user_claim.clone(),
                name: args.name_claim.clone(),
                teams: args.teams_claim.clone(),
                groups: args.groups_claim.clone(),
                group_roles: args.group_roles.clone(),
            },
            leeway: args.jwt_leeway,
            max_lifetime: (args.max_token_lifetime > 0).then_some(args.max_token_lifetime),
            issuer: args.jwt_issuer.clone(),
            audience: args.jwt_audience.clone(),
            development,
        })
    }

    /// Replaces the identity provider's key set cache (tests inject their intervals).
    #[cfg(test)]
    pub(crate) fn with_key_cache(mut self, cache: KeyCache) -> Self {
        self.idp = Some(cache);
        self.development = false;
        self
    }

    /// Starts fetching the identity provider's key set, at once and then every
    /// `--jwks-refresh`; the task ends with the authenticator. Nothing without one.
    pub fn start_refresh(&self) {
        if let Some(idp) = &self.idp {
            idp.spawn_refresh();
        }
    }

    /// The identity provider's key set cache, when one is configured.
    pub fn key_cache(&self) -> Option<&KeyCache> {
        self.idp.as_ref()
    }

    /// Sets the gauges read at each `/metrics` request.
    pub fn record_metrics(&self) {
        if let Some(idp) = &self.idp {
            idp.record_metrics();
        }
    }

    /// `required`: `exp` and `sub` for the hub's own tokens; `exp` for the identity
    /// provider's, whose user claim the mapping requires.
    fn validation(&self, alg: Algorithm, issuer: Option<&str>, required: &[&str]) -> Validation {
        let mut validation = Validation::new(alg);
        validation.leeway = self.leeway;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(required);
        if let Some(iss) = issuer {
            validation.set_issuer(&[iss]);
            validation.required_spec_claims.insert("iss".into());
        }
        match &self.audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                validation.required_spec_claims.insert("aud".into());
            }
            None => validation.validate_aud = false,
        }
        validation
    }

    /// The longest lifetime a token may have, when bounded (`--max-token-lifetime`).
    pub fn max_lifetime(&self) -> Option<u64> {
        self.max_lifetime
    }

    /// True when no key was configured and a random secret is in use.
    pub fn is_development(&self) -> bool {
        self.development
    }

    /// Verifies a JWT, refetching the identity provider's key set once (within its
    /// bound) when the token names a `kid` the cache lacks. The one entry point of the
    /// handshake, `refresh` and REST; refusals are counted by reason.
    pub async fn authenticate(&self, token: &str) -> Result<Identity, AuthError> {
        let mut result = self.verify(token);
        if let (Err(AuthError::UnknownKey | AuthError::KeysUnavailable), Some(idp)) =
            (&result, &self.idp)
            && let Some(kid) = jsonwebtoken::decode_header(token).ok().and_then(|h| h.kid)
        {
            idp.refetch_for(&kid).await;
            result = self.verify(token);
        }
        if let Err(e) = &result {
            metrics::counter!(crate::metrics::TOKENS_REFUSED, "reason" => e.reason()).increment(1);
        }
        result
    }

    /// Verifies a JWT with the keys at hand (no fetch). API keys (`thk_...`) are not
    /// JWTs: they are looked up in the key store by [`crate::node::Node::identify`],
    /// and refused here.
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        if is_api_key(token) {
            return Err(AuthError::UnknownApiKey);
        }
        let header = jsonwebtoken::decode_header(token).map_err(map_error)?;
        let identity = match header.alg {
            Algorithm::HS256 => {
                let key = self.secret.as_ref().ok_or(AuthError::WrongAlgorithm)?;
                self.decode(token, key, Algorithm::HS256, self.issuer.as_deref())?
            }
            alg @ (Algorithm::RS256 | Algorithm::ES256 | Algorithm::EdDSA) => {
                let pem = self
                    .pem
                    .as_ref()
                    .filter(|(_, a)| *a == alg)
                    .map(|(key, _)| self.decode(token, key, alg, self.issuer.as_deref()));
                match (pem, &self.idp) {
                    (Some(Err(AuthError::BadSignature)), Some(idp)) | (None, Some(idp)) => {
                        return self.verify_idp(idp, &header, token);
                    }
                    (Some(result), _) => result?,
                    (None, None) => return Err(AuthError::WrongAlgorithm),
                }
            }
            _ => return Err(AuthError::WrongAlgorithm),
        };
        self.check_times(identity.exp, identity.iat)?;
        Ok(Identity::from_claims(identity))
    }

    /// A token for the identity provider's key set: the key its `kid` names, with
    /// that key's one algorithm.
    fn verify_idp(
        &self,
        idp: &KeyCache,
        header: &Header,
        token: &str,
    ) -> Result<Identity, AuthError> {
        let Some(kid) = &header.kid else {
            return Err(AuthError::UnknownKey);
        };
        let key = match idp.lookup(kid) {
            Lookup::Found(key) => key,
            Lookup::Ambiguous => return Err(AuthError::AmbiguousKey),
            Lookup::Unknown => return Err(AuthError::UnknownKey),
            Lookup::NotLoaded => return Err(AuthError::KeysUnavailable),
        };
        if key.alg != header.alg {
            return Err(AuthError::WrongAlgorithm);
        }
        let validation = self.validation(key.alg, self.idp_issuer.as_deref(), &["exp"]);
        let claims = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
            token,
            &key.decoding,
            &validation,
        )
        .map_err(map_error)?
        .claims;
        let mapped = self.mapping.map(&claims)?;
        self.check_times(mapped.exp, mapped.iat)?;
        Ok(Identity::from_mapped(mapped))
    }

    fn decode(
        &self,
        token: &str,
        key: &DecodingKey,
        alg: Algorithm,
        issuer: Option<&str>,
    ) -> Result<Claims, AuthError> {
        jsonwebtoken::decode::<Claims>(token, key, &self.validation(alg, issuer, &["exp", "sub"]))
            .map(|data| data.claims)
            .map_err(map_error)
    }

    /// `iat` and the lifetime bound, whatever the source.
    fn check_times(&self, exp: u64, iat: Option<u64>) -> Result<(), AuthError> {
        if let Some(iat) = iat
            && iat > now_secs() + self.leeway
        {
            return Err(AuthError::InvalidClaims("`iat` is in the future".into()));
        }
        // A bound on lifetimes is what lets revocations be pruned: a token without
        // `iat`, or one living longer, could outlive the revocation that refuses it.
        if let Some(max) = self.max_lifetime {
            let Some(iat) = iat else {
                return Err(AuthError::InvalidClaims(
                    "missing `iat` (required with --max-token-lifetime)".into(),
                ));
            };
            let lifetime = exp.saturating_sub(iat);
            if lifetime > max {
                return Err(AuthError::InvalidClaims(format!(
                    "lives {lifetime} s, longer than the node's --max-token-lifetime of {max} s"
                )));
            }
        }
        Ok(())
    }

    /// Signs a token, when this node holds a secret (HS256 or development mode).
    pub fn mint(
        &self,
        user: &UserId,
        name: Option<String>,
        teams: BTreeMap<TeamId, String>,
        ttl_secs: u64,
    ) -> Option<String> {
        let key = self.encoding.as_ref()?;
        let now = now_secs();
        let claims = Claims {
            sub: user.clone(),
            name,
            teams,
            exp: now + ttl_secs,
            iat: Some(now),
            nbf: None,
            iss: self.issuer.clone(),
            aud: self.audience.clone().map(serde_json::Value::String),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, key).ok()
    }
}

fn map_error(e: jsonwebtoken::errors::Error) -> AuthError {
    match e.kind() {
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::InvalidSignature => AuthError::BadSignature,
        ErrorKind::InvalidAlgorithm
        | ErrorKind::InvalidAlgorithmName
        | ErrorKind::MissingAlgorithm => AuthError::WrongAlgorithm,
        ErrorKind::InvalidToken | ErrorKind::Base64(_) | ErrorKind::Utf8(_) => AuthError::Malformed,
        ErrorKind::Json(err) => AuthError::InvalidClaims(err.to_string()),
        ErrorKind::MissingRequiredClaim(c) => AuthError::InvalidClaims(format!("missing `{c}`")),
        ErrorKind::InvalidIssuer => AuthError::InvalidClaims("wrong `iss`".into()),
        ErrorKind::InvalidAudience => AuthError::InvalidClaims("wrong `aud`".into()),
        ErrorKind::InvalidClaimFormat(c) => AuthError::InvalidClaims(format!("malformed `{c}`")),
        _ => AuthError::Malformed,
    }
}

/// Where the identity provider's keys come from, if anywhere: `--jwks-url`, else
/// discovery from `--oidc-issuer`. Both must be https, or http on a loopback host.
fn idp_source(args: &JwtArgs) -> anyhow::Result<Option<KeySource>> {
    if let Some(issuer) = &args.oidc_issuer {
        let url = jwks::discovery_url(issuer)
            .with_context(|| format!("--oidc-issuer {issuer:?} is not a URL"))?;
        check_transport(&url, "--oidc-issuer")?;
    }
    match (&args.jwks_url, &args.oidc_issuer) {
        (Some(url), _) => {
            let url = reqwest::Url::parse(url)
                .with_context(|| format!("--jwks-url {url:?} is not a URL"))?;
            check_transport(&url, "--jwks-url")?;
            Ok(Some(KeySource::Url(url)))
        }
        (None, Some(issuer)) => Ok(Some(KeySource::Discovery {
            issuer: issuer.clone(),
        })),
        (None, None) => Ok(None),
    }
}

/// Keys fetched in clear text could be replaced on the way: https only, except on a
/// loopback host (development and tests).
fn check_transport(url: &reqwest::Url, flag: &str) -> anyhow::Result<()> {
    let loopback = match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    match url.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        _ => anyhow::bail!("{flag} {url} must be an https URL (http only on a loopback host)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(secret: &str) -> JwtArgs {
        JwtArgs {
            jwt_secret: Some(secret.into()),
            jwt_public_key: None,
            jwt_alg: None,
            jwt_issuer: None,
            jwt_audience: None,
            jwt_leeway: 5,
            max_token_lifetime: 0,
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

    fn sign(claims: serde_json::Value, secret: &str, alg: Algorithm) -> String {
        jsonwebtoken::encode(
            &Header::new(alg),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn a_lifetime_bound_needs_iat_and_refuses_longer_tokens() {
        let auth = Authenticator::from_args(&JwtArgs {
            max_token_lifetime: 3600,
            ..args(SECRET)
        })
        .unwrap();
        let now = now_secs();
        let token = |claims| sign(claims, SECRET, Algorithm::HS256);
        let ok = token(serde_json::json!({"sub":"ann","exp":now+3600,"iat":now,"teams":{}}));
        assert!(auth.verify(&ok).is_ok());
        let long = token(serde_json::json!({"sub":"ann","exp":now+3601,"iat":now,"teams":{}}));
        let err = auth.verify(&long).unwrap_err().to_string();
        assert!(err.contains("max-token-lifetime"), "{err}");
        let no_iat = token(serde_json::json!({"sub":"ann","exp":now+60,"teams":{}}));
        let err = auth.verify(&no_iat).unwrap_err().to_string();
        assert!(err.contains("`iat`"), "{err}");
        // Unbounded (0): both are accepted.
        let unbounded = Authenticator::from_args(&args(SECRET)).unwrap();
        assert!(unbounded.verify(&long).is_ok() && unbounded.verify(&no_iat).is_ok());
    }

    #[test]
    fn accepts_a_good_token_and_drops_unknown_roles() {
        let auth = Authenticator::from_args(&args(SECRET)).unwrap();
        let t = sign(
            serde_json::json!({"sub":"ann","exp":now_secs()+60,"teams":{"a":"member","b":"wizard"}}),
            SECRET,
            Algorithm::HS256,
        );
        let id = auth.verify(&t).unwrap();
        assert_eq!(id.role_in("a"), Some(Role::Editor));
        assert_eq!(id.role_in("b"), None);
    }

    #[test]
    fn rejections() {
        fn err(r: Result<Identity, AuthError>) -> AuthError {
            r.expect_err("token must be refused")
        }
        let auth = Authenticator::from_args(&args(SECRET)).unwrap();
        let now = now_secs();
        let ok = serde_json::json!({"sub":"ann","exp":now+60,"teams":{}});
        assert_eq!(err(auth.verify("")), AuthError::Missing);
        assert_eq!(err(auth.verify("abc")), AuthError::Malformed);
        assert_eq!(
            err(auth.verify(&sign(
                ok.clone(),
                "another-secret-of-32-characters!",
                Algorithm::HS256
            ))),
            AuthError::BadSignature
        );
        assert_eq!(
            err(auth.verify(&sign(ok.clone(), SECRET, Algorithm::HS384))),
            AuthError::WrongAlgorithm
        );
        assert_eq!(
            err(auth.verify(&sign(
                serde_json::json!({"sub":"a","exp":now-6,"teams":{}}),
                SECRET,
                Algorithm::HS256
            ))),
            AuthError::Expired
        );
        assert!(
            auth.verify(&sign(
                serde_json::json!({"sub":"a","exp":now-3,"teams":{}}),
                SECRET,
                Algorithm::HS256
            ))
            .is_ok(),
            "within leeway"
        );
        assert!(matches!(
            auth.verify(&sign(
                serde_json::json!({"sub":"a","teams":{}}),
                SECRET,
                Algorithm::HS256
            )),
            Err(AuthError::InvalidClaims(_))
        ));
        assert!(matches!(
            auth.verify(&sign(
                serde_json::json!({"sub":"a","exp":now+60,"teams":["a"]}),
                SECRET,
                Algorithm::HS256
            )),
            Err(AuthError::InvalidClaims(_))
        ));
        assert!(matches!(
            auth.verify(&sign(
                serde_json::json!({"sub":"a","exp":now+60,"teams":{},"iat":now+600}),
                SECRET,
                Algorithm::HS256
            )),
            Err(AuthError::InvalidClaims(_))
        ));
        assert_eq!(
            err(auth.verify(&sign(
                serde_json::json!({"sub":"a","exp":now+60,"teams":{},"nbf":now+600}),
                SECRET,
                Algorithm::HS256
            ))),
            AuthError::NotYetValid
        );
        // alg: none, hand-made.
        let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJhIiwiZXhwIjo5OTk5OTk5OTk5LCJ0ZWFtcyI6e319.";
        assert!(auth.verify(none).is_err());
    }

    #[test]
    fn issuer_and_audience_when_configured() {
        let mut a = args(SECRET);
        a.jwt_issuer = Some("idp".into());
        a.jwt_audience = Some("teamhub".into());
        let auth = Authenticator::from_args(&a).unwrap();
        let exp = now_secs() + 60;
        let good = sign(
            serde_json::json!({"sub":"a","exp":exp,"teams":{},"iss":"idp","aud":"teamhub"}),
            SECRET,
            Algorithm::HS256,
        );
        assert!(auth.verify(&good).is_ok());
        let bad = sign(
            serde_json::json!({"sub":"a","exp":exp,"teams":{},"iss":"other","aud":"teamhub"}),
            SECRET,
            Algorithm::HS256,
        );
        assert!(auth.verify(&bad).is_err());
        let missing = sign(
            serde_json::json!({"sub":"a","exp":exp,"teams":{}}),
            SECRET,
            Algorithm::HS256,
        );
        assert!(auth.verify(&missing).is_err());
        let minted = auth
            .mint(&UserId::new("a").unwrap(), None, BTreeMap::new(), 60)
            .unwrap();
        assert!(
            auth.verify(&minted).is_ok(),
            "minted tokens carry the configured iss/aud"
        );
    }

    mod fuzz {
        use proptest::prelude::*;

        use super::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// Any bearer string: an identity or an `AuthError`, never a panic.
            #[test]
            fn any_token_text_is_refused_cleanly(token in any::<String>()) {
                let auth = Authenticator::from_args(&args(SECRET)).unwrap();
                prop_assert!(auth.verify(&token).is_err());
            }

            /// Correctly signed claims of any shape: accepted only with a valid `sub`
            /// and `exp` in the future, otherwise refused with a reason.
            #[test]
            fn any_signed_claims_are_accepted_or_refused(
                sub in prop::option::of("\\PC{0,8}|[a-z]{1,8}"),
                exp_delta in -1000i64..100_000,
                iat_delta in prop::option::of(-100_000i64..1000),
                teams in prop::collection::btree_map("\\PC{0,6}|[a-z]{1,6}", "\\PC{0,6}|viewer|editor|admin|owner", 0..4),
                extra in prop::option::of(any::<i64>()),
            ) {
                let now = now_secs() as i64;
                let mut claims = serde_json::json!({"exp": now + exp_delta, "teams": teams});
                if let Some(sub) = &sub {
                    claims["sub"] = serde_json::json!(sub);
                }
                if let Some(d) = iat_delta {
                    claims["iat"] = serde_json::json!(now + d);
                }
                if let Some(x) = extra {
                    claims["nbf"] = serde_json::json!(x);
                }
                let auth = Authenticator::from_args(&JwtArgs { max_token_lifetime: 3600, ..args(SECRET) }).unwrap();
                let token = sign(claims, SECRET, Algorithm::HS256);
                if let Ok(identity) = auth.verify(&token) {
                    prop_assert!(UserId::new(identity.user.as_str()).is_ok());
                    prop_assert!(exp_delta > -5, "an expired token was accepted");
                }
            }
        }
    }
}
