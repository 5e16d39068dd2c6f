//! The SSRF guard: a webhook URL must not lead the node to its own network.
//!
//! A URL's host is resolved and refused when any of its addresses is loopback, private
//! (RFC 1918, `fc00::/7`), link-local (`169.254.0.0/16`, the cloud metadata address
//! `169.254.169.254` among them; `fe80::/10`), unspecified, or otherwise not meant to
//! be reached from a service (`0.0.0.0/8`, shared `100.64.0.0/10`, broadcast,
//! multicast, IPv4-mapped forms of all of these). This happens twice:
//! - when an endpoint is created or its URL changed ([`check_url`]): a refusal is 400;
//! - at every delivery, inside the HTTP client's resolver ([`GuardedResolver`]): the
//!   addresses it checked are the ones the client connects to, so a name that resolves
//!   to a public address at creation and to a private one later (DNS rebinding) is
//!   refused without a second lookup. An IP-literal URL does not go through a
//!   resolver; [`check_literal`] refuses it before the request.
//!
//! The client follows no redirects (a 3xx is a failed attempt) and uses no proxy.
//! `--webhook-allow-private` turns every check off.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Longest wait for the name lookup of a URL being created.
const LOOKUP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Why a URL is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refusal {
    #[error("the URL does not parse: {0}")]
    Malformed(String),
    #[error("the URL must be http:// or https://")]
    Scheme,
    #[error("the URL has no host")]
    NoHost,
    #[error("the host {0} does not resolve")]
    Unresolvable(String),
    #[error("the host resolves to {0}, a loopback, private, link-local or unspecified address")]
    Forbidden(IpAddr),
}

/// Whether a delivery may not connect to `ip`.
pub fn forbidden(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => forbidden_v4(a),
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => forbidden_v4(v4),
            None => forbidden_v6(a),
        },
    }
}

fn forbidden_v4(a: Ipv4Addr) -> bool {
    let [first, second, ..] = a.octets();
    a.is_loopback()
        || a.is_private()
        || a.is_link_local()
        || a.is_unspecified()
        || a.is_broadcast()
        || a.is_multicast()
        || first == 0
        // 100.64.0.0/10, shared address space (carrier-grade NAT, some cloud internals)
        || (first == 100 && (second & 0xc0) == 64)
}

fn forbidden_v6(a: Ipv6Addr) -> bool {
    let first = a.segments()[0];
    a.is_loopback()
        || a.is_unspecified()
        || a.is_multicast()
        // fc00::/7, unique local
        || (first & 0xfe00) == 0xfc00
        // fe80::/10, link-local
        || (first & 0xffc0) == 0xfe80
}

/// Parses a webhook URL and, unless `allow_private`, resolves its host and refuses it
/// when any address is [`forbidden`]. Connects to nothing.
pub async fn check_url(raw: &str, allow_private: bool) -> Result<url::Url, Refusal> {
    let url = url::Url::parse(raw).map_err(|e| Refusal::Malformed(e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Refusal::Scheme);
    }
    let host = url.host().ok_or(Refusal::NoHost)?;
    if allow_private {
        return Ok(url);
    }
    let port = url.port_or_known_default().unwrap_or(443);
    let addrs: Vec<SocketAddr> = match host {
        url::Host::Ipv4(a) => vec![SocketAddr::new(a.into(), port)],
        url::Host::Ipv6(a) => vec![SocketAddr::new(a.into(), port)],
        url::Host::Domain(name) => {
            tokio::time::timeout(LOOKUP_TIMEOUT, tokio::net::lookup_host((name, port)))
                .await
                .ok()
                .and_then(Result::ok)
                .ok_or_else(|| Refusal::Unresolvable(name.to_owned()))?
                .collect()
        }
    };
    if addrs.is_empty() {
        return Err(Refusal::Unresolvable(host.to_string()));
    }
    match addrs.iter().find(|a| forbidden(a.ip())) {
        Some(bad) => Err(Refusal::Forbidden(bad.ip())),
        None => Ok(url),
    }
}

/// Refuses an IP-literal URL whose address is [`forbidden`] (names are checked by the
/// resolver).
pub fn check_literal(url: &url::Url) -> Result<(), Refusal> {
    let ip: IpAddr = match url.host() {
        Some(url::Host::Ipv4(a)) => a.into(),
        Some(url::Host::Ipv6(a)) => a.into(),
        Some(url::Host::Domain(_)) => return Ok(()),
        None => return Err(Refusal::NoHost),
    };
    if forbidden(ip) {
        Err(Refusal::Forbidden(ip))
    } else {
        Ok(())
    }
}

/// The delivery client's resolver: one lookup, whose addresses are checked and then
/// used for the connection.
#[derive(Debug, Clone, Copy)]
pub struct GuardedResolver {
    pub allow_private: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
            if !allow_private && let Some(bad) = addrs.iter().find(|a| forbidden(a.ip())) {
                return Err(Box::new(Refusal::Forbidden(bad.ip()))
                    as Box<dyn std::error::Error + Send + Sync>);
            }
            let addrs: Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

/// The HTTP client deliveries are sent with: rustls, the guarded resolver, no
/// redirects, no proxy, the node's timeout.
pub fn client(
    allow_private: bool,
    timeout: std::time::Duration,
) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .dns_resolver(std::sync::Arc::new(GuardedResolver { allow_private }))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(timeout)
        .connect_timeout(timeout)
        .user_agent(concat!("teamhub-webhooks/", env!("CARGO_PKG_VERSION")))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbidden_ranges() {
        for ip in [
            "127.0.0.1",
            "127.8.9.10",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "0.1.2.3",
            "100.64.0.1",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
        ] {
            assert!(forbidden(ip.parse().unwrap()), "{ip} must be refused");
        }
        for ip in [
            "93.184.216.34",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
        ] {
            assert!(!forbidden(ip.parse().unwrap()), "{ip} is public");
        }
    }

    #[tokio::test]
    async fn urls_refused_before_any_connection() {
        for url in [
            "http://127.0.0.1:1/x",
            "http://localhost:1/x",
            "http://10.0.0.1/x",
            "http://169.254.169.254/latest/meta-data/",
            "http://[::1]:1/",
            "http://[fc00::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://0.0.0.0/",
        ] {
            assert!(
                matches!(check_url(url, false).await, Err(Refusal::Forbidden(_))),
                "{url}"
            );
        }
        assert_eq!(
            check_url("ftp://example.com/", false).await,
            Err(Refusal::Scheme)
        );
        assert!(matches!(
            check_url("not a url", false).await,
            Err(Refusal::Malformed(_))
        ));
        assert!(check_url("http://127.0.0.1:1/x", true).await.is_ok());
        assert!(check_literal(&url::Url::parse("http://10.0.0.1/").unwrap()).is_err());
        assert!(check_literal(&url::Url::parse("http://8.8.8.8/").unwrap()).is_ok());
    }

    #[tokio::test]
    async fn the_resolver_refuses_private_names() {
        let guarded = GuardedResolver {
            allow_private: false,
        };
        let name: Name = "localhost".parse().unwrap();
        assert!(guarded.resolve(name).await.is_err());
        let open = GuardedResolver {
            allow_private: true,
        };
        let name: Name = "localhost".parse().unwrap();
        assert!(open.resolve(name).await.unwrap().next().is_some());
    }
}
