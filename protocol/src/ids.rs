//! Validated identifiers.
//!
//! Team ids, user ids and message types share one alphabet (`[A-Za-z0-9_.:-]`) and a
//! length bound. They are checked once, where they enter (deserialisation or
//! [`TryFrom`]), so the rest of the system never sees an invalid one. The inner string is
//! an `Arc<str>`: the hub clones these into registries and events on hot paths.

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{what} must not be empty")]
    Empty { what: &'static str },
    #[error("{what} is longer than {max} characters")]
    TooLong { what: &'static str, max: usize },
    #[error("{what} may only contain A-Z, a-z, 0-9, '_', '.', ':' and '-'")]
    BadChar { what: &'static str },
}

fn validate(s: &str, what: &'static str, max: usize) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty { what });
    }
    if s.len() > max {
        return Err(IdError::TooLong { what, max });
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
    {
        return Err(IdError::BadChar { what });
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $what:literal, $max:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Arc<str>);

        impl $name {
            /// Longest accepted value, in characters.
            pub const MAX_LEN: usize = $max;

            /// Validates and wraps `s`.
            pub fn new(s: &str) -> Result<Self, IdError> {
                validate(s, $what, $max)?;
                Ok(Self(Arc::from(s)))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<&str> for $name {
            type Error = IdError;
            fn try_from(s: &str) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                validate(&s, $what, $max)?;
                Ok(Self(Arc::from(s)))
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                Self::new(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

id_type!(
    /// A team id: the unit of fan-out, presence, history and permissions.
    TeamId,
    "team id",
    128
);
id_type!(
    /// A user id: a JWT `sub`, or `apikey:<id>` for API keys.
    UserId,
    "user id",
    128
);
id_type!(
    /// The name of a pattern in a team's pattern library (REST paths).
    PatternName,
    "pattern name",
    128
);
id_type!(
    /// A message type such as `chat.message`. Prefixes `presence.`, `pattern.` and
    /// `system.` are reserved for the server (see [`crate::is_reserved_type`]).
    MessageType,
    "message type",
    64
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_contract_alphabet() {
        for ok in ["a", "team-1", "Team_1.x:y", &"a".repeat(128)] {
            assert!(TeamId::new(ok).is_ok(), "{ok}");
        }
        assert!(MessageType::new(&"t".repeat(64)).is_ok());
    }

    #[test]
    fn rejects_everything_else() {
        assert_eq!(TeamId::new(""), Err(IdError::Empty { what: "team id" }));
        assert_eq!(
            TeamId::new(&"a".repeat(129)),
            Err(IdError::TooLong {
                what: "team id",
                max: 128
            })
        );
        assert!(MessageType::new(&"t".repeat(65)).is_err());
        for bad in ["a b", "é", "a/b", "a\"", "a\n", "*"] {
            assert_eq!(
                TeamId::new(bad),
                Err(IdError::BadChar { what: "team id" }),
                "{bad}"
            );
        }
    }

    #[test]
    fn deserialisation_validates() {
        assert!(serde_json::from_str::<UserId>("\"ok\"").is_ok());
        let err = serde_json::from_str::<UserId>("\"not ok\"").unwrap_err();
        assert!(
            err.to_string().contains("user id may only contain"),
            "{err}"
        );
    }
}
