//! JWT claims of the contract (section 1).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{Role, TeamId, UserId};

/// The claims of a teamhub JWT.
///
/// `teams` maps team ids to role names as written in the token; a name that is not a
/// known role grants nothing (see [`Claims::role_in`]) but does not make the token
/// invalid. A `teams` claim that is not an object of strings, or has an invalid team id
/// as a key, fails to deserialise and so rejects the token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: UserId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub teams: BTreeMap<TeamId, String>,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<serde_json::Value>,
}

impl Claims {
    /// The role these claims grant in `team`, if any.
    pub fn role_in(&self, team: &str) -> Option<Role> {
        self.teams.get(team).and_then(|r| Role::parse(r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_teams_claims_do_not_parse() {
        let base = |teams: &str| format!(r#"{{"sub":"u","exp":1,"teams":{teams}}}"#);
        assert!(serde_json::from_str::<Claims>(&base(r#"{"t":"admin"}"#)).is_ok());
        for bad in [
            r#"["t"]"#,
            r#""t""#,
            r#"{"t":1}"#,
            r#"{"bad team":"admin"}"#,
            "null",
        ] {
            assert!(serde_json::from_str::<Claims>(&base(bad)).is_err(), "{bad}");
        }
        assert!(serde_json::from_str::<Claims>(r#"{"sub":"u","exp":1}"#).is_err());
    }

    #[test]
    fn unknown_roles_grant_nothing() {
        let c: Claims =
            serde_json::from_str(r#"{"sub":"u","exp":1,"teams":{"a":"wizard","b":"member"}}"#)
                .unwrap();
        assert_eq!(c.role_in("a"), None);
        assert_eq!(c.role_in("b"), Some(Role::Editor));
        assert_eq!(c.role_in("c"), None);
    }
}
