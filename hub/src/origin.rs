//! Which browser origins may open sockets, and telling the operator which ones were
//! refused.
//!
//! A refused origin is the commonest first-run mistake (the page opened at
//! `http://localhost:8080` while `127.0.0.1:8080` is allowed), and a browser shows the
//! page nothing of it. So the first refusal of each origin is logged at info with the
//! allowed list; later ones only count in the metric, so a page retrying in a loop
//! does not flood the log.

use std::collections::HashSet;
use std::sync::Mutex;

/// Distinct refused origins remembered (and logged at info). An attacker can send any
/// `Origin` header, so the set is bounded; past it, new origins are logged at debug.
const REMEMBERED: usize = 64;

/// An origin is cut to this many characters in the log and in the remembered set.
const MAX_ORIGIN_CHARS: usize = 200;

/// The node's browser-origin rule.
#[derive(Debug)]
pub struct OriginPolicy {
    allowed: Allowed,
    /// Origins already logged. A std mutex: it is held for one insert, never across
    /// an `.await`.
    refused: Mutex<HashSet<String>>,
}

#[derive(Debug)]
enum Allowed {
    Any,
    /// Lower-case-insensitive exact origins, without a trailing `/`.
    List(Vec<String>),
}

impl OriginPolicy {
    /// Every origin is allowed (development mode, or `--allowed-origins '*'`).
    pub fn any() -> Self {
        Self::with(Allowed::Any)
    }

    /// Only these origins (each without a trailing `/`); an empty list refuses every
    /// browser.
    pub fn list(origins: Vec<String>) -> Self {
        Self::with(Allowed::List(origins))
    }

    fn with(allowed: Allowed) -> Self {
        OriginPolicy {
            allowed,
            refused: Mutex::new(HashSet::new()),
        }
    }

    /// Whether a request with this `Origin` may open a socket. `None` (no Origin
    /// header: IDE plugins, services) is always allowed.
    pub fn allows(&self, origin: Option<&str>) -> bool {
        match (&self.allowed, origin) {
            (_, None) | (Allowed::Any, _) => true,
            (Allowed::List(list), Some(o)) => list
                .iter()
                .any(|a| a.eq_ignore_ascii_case(o.trim_end_matches('/'))),
        }
    }

    /// [`OriginPolicy::allows`] for a handshake: a refusal is logged, once per origin.
    pub fn admit(&self, origin: Option<&str>) -> bool {
        let allowed = self.allows(origin);
        if let (false, Some(origin)) = (allowed, origin) {
            self.note_refused(origin);
        }
        allowed
    }

    /// The allowed origins as the log shows them.
    pub fn describe(&self) -> String {
        match &self.allowed {
            Allowed::Any => "*".to_owned(),
            Allowed::List(list) if list.is_empty() => {
                "none (set --allowed-origins to let browsers connect)".to_owned()
            }
            Allowed::List(list) => list.join(","),
        }
    }

    fn note_refused(&self, origin: &str) {
        let origin: String = origin.chars().take(MAX_ORIGIN_CHARS).collect();
        let first = {
            let mut seen = self.refused.lock().unwrap_or_else(|p| p.into_inner());
            if seen.contains(&origin) {
                return;
            }
            let room = seen.len() < REMEMBERED;
            if room {
                seen.insert(origin.clone());
            }
            room
        };
        if first {
            tracing::info!(
                %origin,
                allowed = %self.describe(),
                "refused a browser origin (logged once per origin); add it to --allowed-origins to let it connect"
            );
        } else {
            tracing::debug!(%origin, "refused a browser origin");
        }
    }

    #[cfg(test)]
    fn remembered(&self) -> usize {
        self.refused.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_origin_is_allowed_and_the_list_is_exact_and_case_insensitive() {
        let p = OriginPolicy::list(vec!["http://127.0.0.1:8080".into()]);
        assert!(p.allows(None));
        assert!(p.allows(Some("http://127.0.0.1:8080")));
        assert!(p.allows(Some("HTTP://127.0.0.1:8080/")));
        assert!(!p.allows(Some("http://localhost:8080")));
        assert!(OriginPolicy::any().allows(Some("http://anything")));
        assert!(!OriginPolicy::list(Vec::new()).allows(Some("http://127.0.0.1:8080")));
    }

    #[test]
    fn refused_origins_are_remembered_once_each_and_bounded() {
        let p = OriginPolicy::list(vec!["http://a".into()]);
        assert!(!p.admit(Some("http://b")));
        assert!(!p.admit(Some("http://b")));
        assert!(p.admit(Some("http://a")));
        assert_eq!(p.remembered(), 1);
        for i in 0..REMEMBERED * 2 {
            p.admit(Some(&format!("http://x{i}")));
        }
        assert_eq!(p.remembered(), REMEMBERED);
        p.admit(Some(&"h".repeat(10_000)));
        assert!(
            p.refused
                .lock()
                .unwrap()
                .iter()
                .all(|o| o.len() <= MAX_ORIGIN_CHARS)
        );
    }

    #[test]
    fn the_description_says_what_is_allowed() {
        assert_eq!(OriginPolicy::any().describe(), "*");
        assert_eq!(
            OriginPolicy::list(vec!["http://a".into(), "http://b".into()]).describe(),
            "http://a,http://b"
        );
        assert!(
            OriginPolicy::list(Vec::new())
                .describe()
                .contains("--allowed-origins")
        );
    }
}
