//! How a node reaches Redis: one value, parsed once, shared by the broker, presence and
//! control, so they cannot disagree about the server, the mode, TLS or the timeouts.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::RedisError;

/// One Redis server (or a primary behind one address), or a Redis Cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    #[default]
    Single,
    Cluster,
}

impl FromStr for Mode {
    type Err = RedisError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "single" => Ok(Mode::Single),
            "cluster" => Ok(Mode::Cluster),
            other => Err(RedisError::Config(format!(
                "redis mode {other:?}: expected \"single\" or \"cluster\""
            ))),
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Single => "single",
            Mode::Cluster => "cluster",
        })
    }
}

/// Everything needed to connect.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    pub mode: Mode,
    /// One URL in single mode; the seed nodes in cluster mode. `rediss://` means TLS.
    pub urls: Vec<String>,
    /// A PEM CA that signs the servers' certificates (a private CA); the system roots
    /// are trusted when unset.
    pub ca_cert: Option<PathBuf>,
    /// Longest wait for one command's answer before it counts as unavailable.
    pub op_timeout: Duration,
    /// Longest wait for one connection attempt.
    pub connect_timeout: Duration,
}

/// The timeouts every user of the layer gets unless a node is configured otherwise.
pub const OP_TIMEOUT: Duration = Duration::from_secs(3);
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

impl RedisConfig {
    /// `urls` as given on the command line: one URL, or in cluster mode a
    /// comma-separated list of seed nodes. Malformed input is an error here, before
    /// anything connects.
    pub fn new(mode: Mode, urls: &str) -> Result<Self, RedisError> {
        let urls: Vec<String> = urls
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(str::to_owned)
            .collect();
        if urls.is_empty() {
            return Err(RedisError::Config("no redis URL given".into()));
        }
        if mode == Mode::Single && urls.len() > 1 {
            return Err(RedisError::Config(format!(
                "{} redis URLs given in single mode; a list of seed nodes needs --redis-mode cluster",
                urls.len()
            )));
        }
        let mut tls = None;
        for url in &urls {
            let secure = match url.split_once("://").map(|(scheme, _)| scheme) {
                Some("redis") => false,
                Some("rediss") => true,
                _ => {
                    return Err(RedisError::Config(format!(
                        "redis URL {}: expected redis:// or rediss://",
                        redact(url)
                    )));
                }
            };
            if tls.is_some_and(|t| t != secure) {
                return Err(RedisError::Config(
                    "redis URLs mix redis:// and rediss://; use one scheme for every node".into(),
                ));
            }
            tls = Some(secure);
            redis::IntoConnectionInfo::into_connection_info(url.as_str())
                .map_err(|e| RedisError::Config(format!("redis URL {}: {e}", redact(url))))?;
        }
        Ok(RedisConfig {
            mode,
            urls,
            ca_cert: None,
            op_timeout: OP_TIMEOUT,
            connect_timeout: CONNECT_TIMEOUT,
        })
    }

    /// A single server at `url`, with the default timeouts.
    pub fn single(url: &str) -> Result<Self, RedisError> {
        Self::new(Mode::Single, url)
    }

    pub fn with_ca_cert(mut self, path: Option<PathBuf>) -> Self {
        self.ca_cert = path;
        self
    }

    /// Whether the URLs ask for TLS.
    pub fn tls(&self) -> bool {
        self.urls.iter().any(|u| u.starts_with("rediss://"))
    }

    /// The URLs without passwords, for messages.
    pub fn shown(&self) -> String {
        self.urls
            .iter()
            .map(|u| redact(u))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// A URL with its password replaced, for logs and errors.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.split_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***@{host}"),
            None if userinfo.is_empty() => url.to_owned(),
            // `redis://password@host` is not a form the client reads; shown as is minus it.
            None => format!("{scheme}://***@{host}"),
        },
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_before_connecting() {
        let c = RedisConfig::new(Mode::Cluster, "redis://a:1, redis://b:2,").unwrap();
        assert_eq!(c.urls, ["redis://a:1", "redis://b:2"]);
        assert!(!c.tls());
        let err = RedisConfig::new(Mode::Single, "redis://a:1,redis://b:2").unwrap_err();
        assert!(err.to_string().contains("--redis-mode cluster"), "{err}");
        let err = RedisConfig::new(Mode::Single, "http://a:1").unwrap_err();
        assert!(err.to_string().contains("redis://"), "{err}");
        let err = RedisConfig::new(Mode::Cluster, "redis://a:1,rediss://b:2").unwrap_err();
        assert!(err.to_string().contains("mix"), "{err}");
        assert!(RedisConfig::new(Mode::Single, " ").is_err());
        assert!(RedisConfig::single("rediss://h:6380").unwrap().tls());
        assert!("CLUSTER".parse::<Mode>().unwrap() == Mode::Cluster);
        assert!("sentinel".parse::<Mode>().is_err());
    }

    #[test]
    fn passwords_are_not_shown() {
        assert_eq!(redact("redis://u:secret@h:1/0"), "redis://u:***@h:1/0");
        assert_eq!(redact("redis://h:1"), "redis://h:1");
        assert_eq!(redact("rediss://:pw@h"), "rediss://:***@h");
    }
}
