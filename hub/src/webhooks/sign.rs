//! Standard Webhooks (version 1) signatures: `v1,<base64 HMAC-SHA256>` of
//! `"<webhook-id>.<webhook-timestamp>.<body>"`, keyed by the base64-decoded part of a
//! `whsec_` secret. `tests` checks the specification's own example.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// What every secret starts with.
pub const SECRET_PREFIX: &str = "whsec_";
/// Random bytes in a new secret (the specification asks for 24 to 64).
pub const SECRET_BYTES: usize = 32;

/// A new secret: `whsec_` and the standard base64 of 32 random bytes.
pub fn generate_secret() -> String {
    let key: [u8; SECRET_BYTES] = rand::random();
    format!("{SECRET_PREFIX}{}", STANDARD.encode(key))
}

/// The signing key of a `whsec_` secret; `None` when it does not decode.
pub fn key_of(secret: &str) -> Option<Vec<u8>> {
    STANDARD
        .decode(secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret))
        .ok()
}

/// One signature entry: `v1,<base64>`.
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    // HMAC takes keys of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts any key length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// The `webhook-signature` header: one entry per secret, space-separated.
pub fn header(secrets: &[&str], id: &str, timestamp: i64, body: &[u8]) -> String {
    secrets
        .iter()
        .filter_map(|s| key_of(s))
        .map(|key| sign(&key, id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether `header` holds a valid `v1` signature by `secret` (constant-time compare).
pub fn verify(secret: &str, id: &str, timestamp: i64, body: &[u8], header: &str) -> bool {
    let Some(key) = key_of(secret) else {
        return false;
    };
    header.split(' ').any(|entry| {
        let Some(sig) = entry.strip_prefix("v1,") else {
            return false;
        };
        let Ok(sig) = STANDARD.decode(sig) else {
            return false;
        };
        let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC accepts any key length");
        mac.update(format!("{id}.{timestamp}.").as_bytes());
        mac.update(body);
        mac.verify_slice(&sig).is_ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // The example of the Standard Webhooks specification (and its libraries' tests).
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TS: i64 = 1614265330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn specification_example() {
        assert_eq!(header(&[SECRET], ID, TS, BODY), SIGNATURE);
        assert!(verify(SECRET, ID, TS, BODY, SIGNATURE));
        assert!(!verify(SECRET, ID, TS + 1, BODY, SIGNATURE));
        assert!(!verify(SECRET, "msg_other", TS, BODY, SIGNATURE));
        assert!(!verify(
            SECRET,
            ID,
            TS,
            br#"{"test": 2432232315}"#,
            SIGNATURE
        ));
    }

    #[test]
    fn two_secrets_two_entries() {
        let other = generate_secret();
        let h = header(&[SECRET, &other], ID, TS, BODY);
        let entries: Vec<&str> = h.split(' ').collect();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0], SIGNATURE);
        assert!(verify(&other, ID, TS, BODY, &h));
        assert!(verify(SECRET, ID, TS, BODY, &h));
        assert!(!verify(&generate_secret(), ID, TS, BODY, &h));
    }

    #[test]
    fn generated_secrets() {
        let s = generate_secret();
        assert!(s.starts_with(SECRET_PREFIX));
        assert_eq!(key_of(&s).unwrap().len(), SECRET_BYTES);
        assert_ne!(s, generate_secret());
    }
}
