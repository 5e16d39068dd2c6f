//! Roles and the permission table of the contract (section 1).
//!
//! [`permits`] is the single answer to "may this role do that"; the WebSocket and REST
//! paths both call it, so the table cannot drift between them.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A role in one team. The derived order is the strength: `Viewer < Editor < Admin < Owner`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    Viewer,
    Editor,
    Admin,
    Owner,
}

impl Role {
    /// Parses a role name. `member` and `developer` are aliases of `editor`; anything
    /// unknown is `None` and grants nothing.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "viewer" => Some(Role::Viewer),
            "editor" | "member" | "developer" => Some(Role::Editor),
            "admin" => Some(Role::Admin),
            "owner" => Some(Role::Owner),
            _ => None,
        }
    }

    /// The canonical name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Editor => "editor",
            Role::Admin => "admin",
            Role::Owner => "owner",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Role {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Role {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Role::parse(&s).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown role {s:?} (expected owner, admin, editor or viewer)"
            ))
        })
    }
}

/// Something a caller may try to do in a team.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Join the team channel (and so receive its messages).
    Join,
    ReadPresence,
    ReadHistory,
    /// Read the team's pattern library.
    ReadPatterns,
    Publish,
    WritePattern,
    DeletePattern,
    ReadActivity,
    ManageApiKeys,
    RevokeMembers,
    /// Read the team's usage per day (and its plan's quotas).
    ReadUsage,
    ManageWebhooks,
}

impl Action {
    /// The weakest role allowed to perform this action.
    pub const fn min_role(self) -> Role {
        match self {
            Action::Join | Action::ReadPresence | Action::ReadHistory | Action::ReadPatterns => {
                Role::Viewer
            }
            Action::Publish | Action::WritePattern => Role::Editor,
            Action::DeletePattern
            | Action::ReadActivity
            | Action::ManageApiKeys
            | Action::RevokeMembers
            | Action::ReadUsage
            | Action::ManageWebhooks => Role::Admin,
        }
    }
}

/// Whether a caller holding `role` in a team (or none) may perform `action` there.
#[inline]
pub fn permits(role: Option<Role>, action: Action) -> bool {
    matches!(role, Some(r) if r >= action.min_role())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Action; 12] = [
        Action::Join,
        Action::ReadPresence,
        Action::ReadHistory,
        Action::ReadPatterns,
        Action::Publish,
        Action::WritePattern,
        Action::DeletePattern,
        Action::ReadActivity,
        Action::ManageApiKeys,
        Action::RevokeMembers,
        Action::ReadUsage,
        Action::ManageWebhooks,
    ];

    /// The table of section 1, written out row by row.
    #[test]
    fn permission_table() {
        let expect = |a: Action| -> [bool; 4] {
            match a {
                Action::Join
                | Action::ReadPresence
                | Action::ReadHistory
                | Action::ReadPatterns => [true; 4],
                Action::Publish | Action::WritePattern => [false, true, true, true],
                _ => [false, false, true, true],
            }
        };
        for a in ALL {
            let got =
                [Role::Viewer, Role::Editor, Role::Admin, Role::Owner].map(|r| permits(Some(r), a));
            assert_eq!(got, expect(a), "{a:?}");
            assert!(!permits(None, a), "no role grants nothing: {a:?}");
        }
    }

    #[test]
    fn aliases_and_unknown_roles() {
        assert_eq!(Role::parse("member"), Some(Role::Editor));
        assert_eq!(Role::parse("developer"), Some(Role::Editor));
        assert_eq!(Role::parse("Owner"), None, "role names are case-sensitive");
        assert_eq!(Role::parse("superuser"), None);
        assert!(
            Role::Owner > Role::Admin && Role::Admin > Role::Editor && Role::Editor > Role::Viewer
        );
    }
}
