//! Minted tokens verify the way the hub verifies them.

use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, errors::ErrorKind};
use teamhub_client::protocol::{Claims, Role};
use teamhub_client::token::unix_now;
use teamhub_client::{ClaimsBuilder, ClientError, claims_for, mint_hs256};

const SECRET: &[u8] = b"test-secret-of-reasonable-length";

fn verify(token: &str, secret: &[u8]) -> Result<Claims, jsonwebtoken::errors::Error> {
    let validation = Validation::new(Algorithm::HS256);
    decode::<Claims>(token, &DecodingKey::from_secret(secret), &validation).map(|d| d.claims)
}

#[test]
fn claims_for_grants_each_team_for_the_ttl() {
    let claims = claims_for(
        "alice",
        &[("design", Role::Editor), ("ops", Role::Viewer)],
        Duration::from_secs(600),
    )
    .unwrap();
    let decoded = verify(&mint_hs256(&claims, SECRET).unwrap(), SECRET).unwrap();
    assert_eq!(decoded, claims);
    assert_eq!(decoded.sub.as_str(), "alice");
    assert_eq!(decoded.role_in("design"), Some(Role::Editor));
    assert_eq!(decoded.role_in("ops"), Some(Role::Viewer));
    let iat = decoded.iat.unwrap();
    assert_eq!(decoded.exp, iat + 600);
    assert!(iat.abs_diff(unix_now()) <= 1);
}

#[test]
fn the_wrong_secret_does_not_verify() {
    let claims = claims_for("alice", &[], Duration::from_secs(60)).unwrap();
    let token = mint_hs256(&claims, SECRET).unwrap();
    let err = verify(&token, b"another-secret-entirely").unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::InvalidSignature);
}

#[test]
fn the_builder_makes_negative_test_tokens() {
    let claims = ClaimsBuilder::new("bob")
        .unwrap()
        .name("Bob")
        .team_role_name("design", "wizard")
        .unwrap()
        .team_role_name("ops", "member")
        .unwrap()
        .expires_at(unix_now() - 3600)
        .build();
    assert_eq!(
        claims.role_in("design"),
        None,
        "unknown roles grant nothing"
    );
    assert_eq!(claims.role_in("ops"), Some(Role::Editor));
    assert_eq!(claims.name.as_deref(), Some("Bob"));
    let err = verify(&mint_hs256(&claims, SECRET).unwrap(), SECRET).unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::ExpiredSignature);
}

#[test]
fn invalid_ids_are_refused() {
    assert!(matches!(
        claims_for("not valid", &[], Duration::from_secs(1)),
        Err(ClientError::InvalidId(_))
    ));
    assert!(matches!(
        claims_for("u", &[("bad team", Role::Owner)], Duration::from_secs(1)),
        Err(ClientError::InvalidId(_))
    ));
}
