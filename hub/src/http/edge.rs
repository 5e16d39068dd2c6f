//! What every REST request goes through before its handler: the caller is identified
//! once, counted against the REST rate limit (`--api-rate-limit`) and, when it names a
//! team in its path, counted as an API call of that team (usage metering).
//!
//! The caller is the token's user (a JWT's `sub`, or `apikey:<id>`); a request without
//! valid credentials counts against its client IP. The identity found here is handed
//! to the handler through a task-local ([`authenticate`] reads it), so an API key is
//! looked up in the database once per request, not twice, and handlers keep calling
//! [`authenticate`] as before.

use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use teamhub_protocol::{ErrorCode, TeamId, UserId};

use super::ApiError;
use super::ws::bearer;
use crate::auth::{AuthError, Identity};
use crate::error::OpError;
use crate::metrics;
use crate::node::Node;

/// Who a request counts against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CallerKey {
    User(UserId),
    Ip(IpAddr),
}

/// The REST rate limit of one node: `rate` requests per second per caller, bursts of
/// twice that; `None` when turned off.
pub struct ApiLimiter<C: Clock = DefaultClock> {
    limiter: Option<Keyed<C>>,
}

/// governor's keyed limiter over `C`, without middleware.
type Keyed<C> = RateLimiter<
    CallerKey,
    DefaultKeyedStateStore<CallerKey>,
    C,
    NoOpMiddleware<<C as Clock>::Instant>,
>;

impl ApiLimiter<DefaultClock> {
    pub fn new(rate: u32) -> Self {
        Self::with_clock(rate, DefaultClock::default())
    }
}

impl<C: Clock> ApiLimiter<C> {
    pub fn with_clock(rate: u32, clock: C) -> Self {
        let limiter = NonZeroU32::new(rate).map(|rate| {
            let burst = rate.saturating_mul(NonZeroU32::MIN.saturating_add(1));
            let quota = Quota::per_second(rate).allow_burst(burst);
            RateLimiter::new(quota, DefaultKeyedStateStore::default(), clock)
        });
        ApiLimiter { limiter }
    }

    /// `Err(wait)` when `key` is over the limit: how long until its next request fits.
    pub fn check(&self, key: &CallerKey) -> Result<(), Duration> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        limiter
            .check_key(key)
            .map_err(|not_until| not_until.wait_time_from(limiter.clock().now()))
    }

    /// Forgets callers whose bucket is full again (they would start afresh anyway), so
    /// the map does not grow with every client IP ever seen.
    pub fn prune(&self) {
        if let Some(limiter) = &self.limiter {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}

/// How often [`ApiLimiter::prune`] runs.
pub const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// The `Retry-After` value for a wait: whole seconds, rounded up, at least 1.
pub fn retry_after_secs(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

/// The caller a request was identified as, for its handler.
#[derive(Clone)]
struct Identified {
    token: String,
    identity: Result<Identity, OpError>,
}

tokio::task_local! {
    static CALLER: Option<Identified>;
}

/// The middleware on every `/api/v1` route.
pub async fn edge(
    State(node): State<Arc<Node>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    let identified = match bearer(request.headers()) {
        Some(token) => {
            let identity = node.identify(&token).await;
            Some(Identified { token, identity })
        }
        None => None,
    };
    let key = match &identified {
        Some(Identified {
            identity: Ok(id), ..
        }) => {
            // Counted whatever the answer, a refusal below included (the contract's
            // `api_calls`).
            if let Some(team) = team_in_path(request.uri().path()) {
                node.usage.api_call(&team);
            }
            CallerKey::User(id.user.clone())
        }
        _ => CallerKey::Ip(peer.ip()),
    };
    if let Err(wait) = node.api_limiter.check(&key) {
        metrics::counter_inc(metrics::API_RATE_LIMITED);
        let secs = retry_after_secs(wait);
        let mut response = ApiError::new(
            ErrorCode::RateLimited,
            format!("too many requests; retry in {secs} s"),
        )
        .into_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        return response;
    }
    CALLER.scope(identified, next.run(request)).await
}

/// `{team}` of `/api/v1/teams/{team}/...`, when it is a valid team id.
fn team_in_path(path: &str) -> Option<TeamId> {
    let rest = path.strip_prefix("/api/v1/teams/")?;
    let raw = rest.split('/').next()?;
    let decoded = percent_decode(raw)?;
    TeamId::new(&decoded).ok()
}

fn percent_decode(raw: &str) -> Option<String> {
    if !raw.contains('%') {
        return Some(raw.to_owned());
    }
    url::form_urlencoded::parse(format!("x={}", raw.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
}

/// The identity behind a REST request's bearer token (a JWT or an API key): the one
/// [`edge`] found for this request, or, outside it, a fresh look-up.
pub async fn authenticate(node: &Node, headers: &HeaderMap) -> Result<Identity, ApiError> {
    let token = bearer(headers)
        .ok_or(AuthError::Missing)
        .map_err(|e| ApiError::new(ErrorCode::Unauthorized, e.to_string()))?;
    let known = CALLER
        .try_with(|c| c.clone())
        .ok()
        .flatten()
        .filter(|c| c.token == token);
    match known {
        Some(c) => c.identity.map_err(ApiError::from),
        None => node.identify(&token).await.map_err(ApiError::from),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    #[test]
    fn burst_of_twice_the_rate_per_caller_then_the_wait() {
        let clock = FakeRelativeClock::default();
        let limiter = ApiLimiter::with_clock(2, clock.clone());
        let ann = CallerKey::User(UserId::new("ann").unwrap());
        let ip = CallerKey::Ip("127.0.0.1".parse().unwrap());
        for _ in 0..4 {
            assert_eq!(limiter.check(&ann), Ok(()));
        }
        let wait = limiter.check(&ann).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500), "one request per 1/rate s");
        assert_eq!(retry_after_secs(wait), 1);
        assert_eq!(limiter.check(&ip), Ok(()), "callers are counted apart");
        clock.advance(Duration::from_millis(500));
        assert_eq!(limiter.check(&ann), Ok(()));
        assert!(limiter.check(&ann).is_err());
    }

    #[test]
    fn zero_turns_it_off() {
        let limiter = ApiLimiter::new(0);
        let ann = CallerKey::User(UserId::new("ann").unwrap());
        assert!((0..10_000).all(|_| limiter.check(&ann).is_ok()));
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(3)), 3);
    }

    #[test]
    fn teams_in_paths() {
        let t = |s: &str| team_in_path(s).map(|t| t.as_str().to_owned());
        assert_eq!(
            t("/api/v1/teams/design/messages").as_deref(),
            Some("design")
        );
        assert_eq!(t("/api/v1/teams/a%3Ab/usage").as_deref(), Some("a:b"));
        assert_eq!(t("/api/v1/teams/a%20b/usage"), None, "not a team id");
        assert_eq!(t("/api/v1/openapi.json"), None);
        assert_eq!(t("/api/v1/teams/"), None);
    }
}
