//! Minting HS256 tokens, for tests and the load generator.
//!
//! Real deployments get tokens from their identity provider; the hub's tests and the
//! load generator share a secret with a hub they started and sign their own. Invalid
//! tokens for negative tests are made by editing [`Claims`] before signing (an unknown
//! role name, an `exp` in the past) or by signing with the wrong secret.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use teamhub_protocol::{Claims, Role, TeamId, UserId};

use crate::ClientError;

/// Signs `claims` with HS256.
pub fn mint_hs256(claims: &Claims, secret: &[u8]) -> Result<String, ClientError> {
    let token = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )?;
    Ok(token)
}

/// Seconds since the Unix epoch, the unit of `exp` and `iat`.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Claims for `user` with a role in each of `teams`, issued now and valid for `ttl`.
///
/// ```
/// use std::time::Duration;
/// use teamhub_client::{claims_for, mint_hs256};
/// use teamhub_client::protocol::Role;
///
/// let claims = claims_for("alice", &[("design", Role::Editor)], Duration::from_secs(3600))?;
/// let token = mint_hs256(&claims, b"secret")?;
/// assert_eq!(token.split('.').count(), 3);
/// # Ok::<(), teamhub_client::ClientError>(())
/// ```
pub fn claims_for(
    user: &str,
    teams: &[(&str, Role)],
    ttl: Duration,
) -> Result<Claims, ClientError> {
    let mut builder = ClaimsBuilder::new(user)?.ttl(ttl);
    for (team, role) in teams {
        builder = builder.team(team, *role)?;
    }
    Ok(builder.build())
}

/// Builds [`Claims`] step by step, for tokens [`claims_for`] does not cover.
#[derive(Debug, Clone)]
pub struct ClaimsBuilder {
    claims: Claims,
}

impl ClaimsBuilder {
    /// Claims for `user`, issued now, expiring in one hour, with no teams.
    pub fn new(user: &str) -> Result<ClaimsBuilder, ClientError> {
        let now = unix_now();
        Ok(ClaimsBuilder {
            claims: Claims {
                sub: UserId::new(user)?,
                name: None,
                teams: Default::default(),
                exp: now + 3600,
                iat: Some(now),
                nbf: None,
                iss: None,
                aud: None,
            },
        })
    }

    /// Grants `role` in `team`.
    pub fn team(self, team: &str, role: Role) -> Result<ClaimsBuilder, ClientError> {
        self.team_role_name(team, role.as_str())
    }

    /// Writes any role name for `team`, e.g. the alias `member` or an unknown role
    /// (which grants nothing).
    pub fn team_role_name(mut self, team: &str, role: &str) -> Result<ClaimsBuilder, ClientError> {
        self.claims
            .teams
            .insert(TeamId::new(team)?, role.to_owned());
        Ok(self)
    }

    pub fn name(mut self, name: impl Into<String>) -> ClaimsBuilder {
        self.claims.name = Some(name.into());
        self
    }

    /// Expires `ttl` after `iat`.
    pub fn ttl(mut self, ttl: Duration) -> ClaimsBuilder {
        self.claims.exp = self.claims.iat.unwrap_or_else(unix_now) + ttl.as_secs();
        self
    }

    /// Sets `exp` directly (Unix seconds), e.g. in the past for expiry tests.
    pub fn expires_at(mut self, exp: u64) -> ClaimsBuilder {
        self.claims.exp = exp;
        self
    }

    pub fn issuer(mut self, iss: impl Into<String>) -> ClaimsBuilder {
        self.claims.iss = Some(iss.into());
        self
    }

    pub fn audience(mut self, aud: impl Into<String>) -> ClaimsBuilder {
        self.claims.aud = Some(serde_json::Value::String(aud.into()));
        self
    }

    pub fn build(self) -> Claims {
        self.claims
    }
}
