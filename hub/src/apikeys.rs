//! API keys: creation (shown once), listing, deletion, and turning a presented key into
//! an [`Identity`].
//!
//! A key is `thk_` followed by 32 random bytes in unpadded base64url (43 characters):
//! 256 bits from the operating system's CSPRNG-seeded generator. Only its SHA-256 is
//! stored, as lower-case hex; with that much entropy a fast hash is safe (nothing to
//! brute-force), and a lookup is one indexed equality. Keys are checked against the
//! database on every handshake and request, so a deletion stops new uses on every node
//! sharing the database at once; live sockets are closed through the control channel.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use teamhub_persistence::{ActivityEvent, ApiKeyRecord};
use teamhub_protocol::{Action, ErrorCode, Role, TeamId};

use crate::auth::{API_KEY_PREFIX, AuthError, Identity};
use crate::control::Command;
use crate::error::OpError;
use crate::node::{ClientInfo, Node};

/// Characters of a key shown in listings: `thk_` and the first 8 of the secret.
const SHOWN_PREFIX: usize = API_KEY_PREFIX.len() + 8;
/// Length of the secret part: base64url of 32 bytes, unpadded.
const SECRET_LEN: usize = 43;
/// Longest accepted key name.
pub const MAX_NAME_CHARS: usize = 128;

/// A key as created: the stored record and the plaintext, which is shown only once.
#[derive(Debug)]
pub struct CreatedKey {
    pub record: ApiKeyRecord,
    pub key: String,
}

/// Lower-case hex SHA-256 of a key, as stored.
pub fn hash(key: &str) -> String {
    format!("{:x}", Sha256::digest(key.as_bytes()))
}

/// Whether `token` has the shape of a key this hub issues (checked before any lookup).
fn well_formed(token: &str) -> bool {
    token.strip_prefix(API_KEY_PREFIX).is_some_and(|secret| {
        secret.len() == SECRET_LEN
            && secret
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

fn generate() -> String {
    let secret: [u8; 32] = rand::random();
    format!("{API_KEY_PREFIX}{}", URL_SAFE_NO_PAD.encode(secret))
}

fn metadata(value: serde_json::Value) -> Result<Box<serde_json::value::RawValue>, OpError> {
    serde_json::value::to_raw_value(&value)
        .map_err(|e| OpError::new(ErrorCode::Internal, format!("encoding metadata: {e}")))
}

impl Node {
    /// The identity of a presented API key: `unauthorized` when it is malformed or
    /// unknown (deleted), `unavailable` when the store cannot answer.
    pub(crate) async fn identify_api_key(&self, token: &str) -> Result<Identity, OpError> {
        if !well_formed(token) {
            return Err(AuthError::Malformed.into());
        }
        let record = self
            .keys
            .find_by_hash(&hash(token))
            .await
            .map_err(OpError::from)?
            .ok_or(AuthError::UnknownApiKey)?;
        let created = u64::try_from(record.created_at.unix_timestamp()).unwrap_or(0);
        Ok(Identity::for_api_key(
            &record.id,
            record.team,
            record.role,
            created,
        ))
    }

    /// Creates a key of `role` in `team`. The caller must be an admin there, and the
    /// key can be no stronger than the caller.
    pub async fn create_api_key(
        &self,
        caller: &Identity,
        team: &TeamId,
        name: &str,
        role: Role,
        client: &ClientInfo,
    ) -> Result<CreatedKey, OpError> {
        let own = self.authorize(caller, team, Action::ManageApiKeys)?;
        if role > own {
            return Err(OpError::forbidden(format!(
                "a key's role can be no stronger than yours ({own}) in team {team}"
            )));
        }
        let name = name.trim();
        if name.is_empty()
            || name.chars().count() > MAX_NAME_CHARS
            || name.chars().any(char::is_control)
        {
            return Err(OpError::bad_request(format!(
                "name must be 1 to {MAX_NAME_CHARS} characters without control characters"
            )));
        }
        let key = generate();
        let record = ApiKeyRecord {
            id: uuid::Uuid::now_v7().simple().to_string(),
            team: team.clone(),
            name: name.to_owned(),
            role,
            prefix: key[..SHOWN_PREFIX].to_owned(),
            created_by: caller.user.clone(),
            created_at: teamhub_persistence::now_utc(),
        };
        self.keys
            .create(&record, &hash(&key))
            .await
            .map_err(OpError::from)?;
        let meta = metadata(serde_json::json!({
            "id": record.id, "name": record.name, "role": role, "prefix": record.prefix,
        }))?;
        self.activity.record(
            ActivityEvent::new(team.clone(), caller.user.clone(), "apikey.created")
                .with_resource("api_key", record.id.as_str())
                .with_metadata(meta)
                .with_client(client.ip, client.user_agent.clone()),
        );
        Ok(CreatedKey { record, key })
    }

    pub async fn list_api_keys(
        &self,
        caller: &Identity,
        team: &TeamId,
    ) -> Result<Vec<ApiKeyRecord>, OpError> {
        self.authorize(caller, team, Action::ManageApiKeys)?;
        Ok(self.keys.list(team).await?)
    }

    /// Deletes a key: it stops authenticating at once (the store is shared), and every
    /// node closes the sockets that authenticated with it.
    pub async fn delete_api_key(
        &self,
        caller: &Identity,
        team: &TeamId,
        id: &str,
        client: &ClientInfo,
    ) -> Result<(), OpError> {
        self.authorize(caller, team, Action::ManageApiKeys)?;
        let Some(record) = self.keys.delete(team, id).await? else {
            return Err(OpError::new(
                ErrorCode::NotFound,
                format!("team {team} has no API key {id:?}"),
            ));
        };
        self.broadcast(Command::KeyDeleted {
            team: team.clone(),
            id: record.id.clone(),
        })
        .await;
        let meta = metadata(serde_json::json!({
            "id": record.id, "name": record.name, "role": record.role, "prefix": record.prefix,
        }))?;
        self.activity.record(
            ActivityEvent::new(team.clone(), caller.user.clone(), "apikey.deleted")
                .with_resource("api_key", record.id.as_str())
                .with_metadata(meta)
                .with_client(client.ip, client.user_agent.clone()),
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_well_formed_and_distinct() {
        let (a, b) = (generate(), generate());
        assert!(well_formed(&a), "{a}");
        assert_ne!(a, b);
        assert_eq!(a.len(), API_KEY_PREFIX.len() + SECRET_LEN);
        assert_eq!(hash(&a).len(), 64);
        assert!(!well_formed("thk_short"));
        assert!(!well_formed(&format!("thk_{}", "!".repeat(SECRET_LEN))));
        assert!(!well_formed(&a[1..]));
    }
}
