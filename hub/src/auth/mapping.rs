//! Claim mapping for identity provider tokens: which claims hold the user id, the
//! display name and the team -> role object, and which of the provider's groups grant
//! which roles (`--user-claim`, `--name-claim`, `--teams-claim`, `--groups-claim`,
//! `--group-roles`). A user's role in a team is the strongest any of them grants.

use std::collections::BTreeMap;
use std::str::FromStr;

use serde_json::{Map, Value};
use teamhub_protocol::{Role, TeamId, UserId};

use super::AuthError;

/// `--group-roles`: for each group, the roles its members get (`GROUP=TEAM:ROLE,...`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupRoles(BTreeMap<String, Vec<(TeamId, Role)>>);

impl FromStr for GroupRoles {
    type Err = String;

    /// `GROUP=TEAM:ROLE` items separated by commas; a group may be named several times.
    /// The role is after the last `:` (team ids may hold `:`), the group before the
    /// first `=`.
    fn from_str(s: &str) -> Result<Self, String> {
        let mut map: BTreeMap<String, Vec<(TeamId, Role)>> = BTreeMap::new();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (group, grant) = item
                .split_once('=')
                .ok_or_else(|| format!("{item:?}: expected GROUP=TEAM:ROLE"))?;
            let (team, role) = grant
                .rsplit_once(':')
                .ok_or_else(|| format!("{item:?}: expected GROUP=TEAM:ROLE"))?;
            let group = group.trim();
            if group.is_empty() {
                return Err(format!("{item:?}: the group is empty"));
            }
            let team = TeamId::new(team.trim()).map_err(|e| format!("{item:?}: {e}"))?;
            let role = Role::parse(role.trim()).ok_or_else(|| {
                format!(
                    "{item:?}: unknown role {role:?} (owner, admin, editor, viewer; member and developer mean editor)"
                )
            })?;
            map.entry(group.to_owned()).or_default().push((team, role));
        }
        Ok(GroupRoles(map))
    }
}

/// Which claims an identity provider's token is read from.
#[derive(Debug, Clone)]
pub struct ClaimMapping {
    pub user: String,
    pub name: String,
    pub teams: String,
    pub groups: String,
    pub group_roles: GroupRoles,
}

/// What a provider's token says once mapped.
pub struct Mapped {
    pub user: UserId,
    pub name: Option<String>,
    pub grants: BTreeMap<TeamId, Role>,
    pub exp: u64,
    pub iat: Option<u64>,
}

impl ClaimMapping {
    /// Maps verified claims (signature, `exp`, `nbf`, `iss`, `aud` already checked).
    pub fn map(&self, claims: &Map<String, Value>) -> Result<Mapped, AuthError> {
        let bad = |m: String| AuthError::InvalidClaims(m);
        let user = match claims.get(&self.user) {
            None => return Err(bad(format!("missing `{}`", self.user))),
            Some(Value::String(s)) => UserId::new(s)
                .map_err(|_| bad(format!("`{}` is not a valid user id", self.user)))?,
            Some(_) => return Err(bad(format!("`{}` is not a string", self.user))),
        };
        let name = claims
            .get(&self.name)
            .and_then(Value::as_str)
            .map(str::to_owned);
        let mut grants: BTreeMap<TeamId, Role> = BTreeMap::new();
        let mut grant = |team: TeamId, role: Role| {
            let slot = grants.entry(team).or_insert(role);
            *slot = (*slot).max(role);
        };
        match claims.get(&self.teams) {
            None | Some(Value::Null) => {}
            Some(Value::Object(teams)) => {
                for (team, role) in teams {
                    let team = TeamId::new(team)
                        .map_err(|_| bad(format!("malformed `{}`: team {team:?}", self.teams)))?;
                    let role = role
                        .as_str()
                        .ok_or_else(|| bad(format!("malformed `{}`", self.teams)))?;
                    if let Some(role) = Role::parse(role) {
                        grant(team, role);
                    }
                }
            }
            Some(_) => return Err(bad(format!("malformed `{}`", self.teams))),
        }
        let groups: Vec<&str> = match claims.get(&self.groups) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(g)) => vec![g.as_str()],
            Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
            Some(_) => return Err(bad(format!("malformed `{}`", self.groups))),
        };
        for group in groups {
            for (team, role) in self.group_roles.0.get(group).into_iter().flatten() {
                grant(team.clone(), *role);
            }
        }
        let exp = claims
            .get("exp")
            .and_then(Value::as_u64)
            .ok_or_else(|| bad("missing `exp`".into()))?;
        let iat = match claims.get("iat") {
            None => None,
            Some(v) => Some(v.as_u64().ok_or_else(|| bad("malformed `iat`".into()))?),
        };
        Ok(Mapped {
            user,
            name,
            grants,
            exp,
            iat,
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn mapping(group_roles: &str) -> ClaimMapping {
        ClaimMapping {
            user: "sub".into(),
            name: "name".into(),
            teams: "teams".into(),
            groups: "groups".into(),
            group_roles: group_roles.parse().unwrap(),
        }
    }

    fn map(m: &ClaimMapping, claims: Value) -> Result<Mapped, AuthError> {
        m.map(claims.as_object().unwrap())
    }

    #[test]
    fn group_roles_parse() {
        let g: GroupRoles = "eng=design:editor, eng=ops:viewer,admins=a:b:owner"
            .parse()
            .unwrap();
        assert_eq!(g.0["eng"].len(), 2);
        assert_eq!(g.0["admins"], [(TeamId::new("a:b").unwrap(), Role::Owner)]);
        assert_eq!("".parse::<GroupRoles>().unwrap(), GroupRoles::default());
        for bad in [
            "eng",
            "eng=design",
            "=design:editor",
            "eng=design:wizard",
            "eng=bad team:viewer",
        ] {
            assert!(bad.parse::<GroupRoles>().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_strongest_role_wins_across_the_teams_claim_and_groups() {
        let m = mapping("eng=design:editor,leads=design:admin,eng=ops:viewer");
        let got = map(
            &m,
            json!({"sub":"ann","exp":9,"teams":{"design":"viewer","x":"wizard"},"groups":["eng","leads","other"]}),
        )
        .unwrap();
        assert_eq!(got.grants[&TeamId::new("design").unwrap()], Role::Admin);
        assert_eq!(got.grants[&TeamId::new("ops").unwrap()], Role::Viewer);
        assert!(
            !got.grants.contains_key("x"),
            "an unknown role grants nothing"
        );
        // No teams claim and no group that grants anything: valid, joins nothing.
        let none = map(&m, json!({"sub":"ann","exp":9,"groups":"nobody"})).unwrap();
        assert!(none.grants.is_empty());
    }

    #[test]
    fn the_user_claim_is_required_and_checked() {
        let m = ClaimMapping {
            user: "uid".into(),
            name: "display".into(),
            ..mapping("")
        };
        let got = map(
            &m,
            json!({"uid":"ann.b","display":"Ann B","sub":"x","exp":9}),
        )
        .unwrap();
        assert_eq!(
            (got.user.as_str(), got.name.as_deref()),
            ("ann.b", Some("Ann B"))
        );
        for claims in [
            json!({"sub":"ann","exp":9}),
            json!({"uid":"ann@example.com","exp":9}),
            json!({"uid":7,"exp":9}),
            json!({"uid":"ann","exp":9,"teams":["design"]}),
            json!({"uid":"ann","exp":9,"teams":{"bad team":"viewer"}}),
            json!({"uid":"ann","exp":9,"groups":{"a":1}}),
        ] {
            assert!(
                matches!(map(&m, claims.clone()), Err(AuthError::InvalidClaims(_))),
                "{claims}"
            );
        }
    }
}
