//! Source addresses: `127.0.0.1-127.0.0.8,127.0.1.1` style lists.
//!
//! One source address has about 28,000 ephemeral ports (and a process 20,000 files
//! here), so large runs spread sockets over several loopback addresses. Only loopback
//! addresses are accepted: this tool never sends traffic anywhere else.

use std::net::{IpAddr, Ipv4Addr};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AddrError {
    #[error("{0:?} is not an IPv4 address or range (expected e.g. 127.0.0.1-127.0.0.8)")]
    Invalid(String),
    #[error("{0} is not a loopback address (127.0.0.0/8): load stays on this machine")]
    NotLoopback(Ipv4Addr),
    #[error("range {0}-{1} is empty or longer than 65536 addresses")]
    BadRange(Ipv4Addr, Ipv4Addr),
}

/// Parses a comma-separated list of addresses and inclusive ranges.
pub fn parse_source_addrs(spec: &str) -> Result<Vec<IpAddr>, AddrError> {
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let parse = |s: &str| -> Result<Ipv4Addr, AddrError> {
            let ip: Ipv4Addr = s
                .trim()
                .parse()
                .map_err(|_| AddrError::Invalid(part.to_owned()))?;
            if !ip.is_loopback() {
                return Err(AddrError::NotLoopback(ip));
            }
            Ok(ip)
        };
        match part.split_once('-') {
            None => out.push(IpAddr::V4(parse(part)?)),
            Some((a, b)) => {
                let (a, b) = (parse(a)?, parse(b)?);
                let (lo, hi) = (u32::from(a), u32::from(b));
                if hi < lo || hi - lo >= 65536 {
                    return Err(AddrError::BadRange(a, b));
                }
                out.extend((lo..=hi).map(|n| IpAddr::V4(Ipv4Addr::from(n))));
            }
        }
    }
    if out.is_empty() {
        return Err(AddrError::Invalid(spec.to_owned()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_and_lists() {
        let v = parse_source_addrs("127.0.0.1-127.0.0.3, 127.0.1.9").unwrap();
        let s: Vec<String> = v.iter().map(|a| a.to_string()).collect();
        assert_eq!(s, ["127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.1.9"]);
        assert_eq!(
            parse_source_addrs("127.0.0.255-127.0.1.0").unwrap().len(),
            2
        );
    }

    #[test]
    fn only_loopback() {
        assert!(matches!(
            parse_source_addrs("10.0.0.1"),
            Err(AddrError::NotLoopback(_))
        ));
        assert!(parse_source_addrs("127.0.0.5-127.0.0.1").is_err());
        assert!(parse_source_addrs("nope").is_err());
        assert!(parse_source_addrs("").is_err());
    }
}
