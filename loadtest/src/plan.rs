//! Which socket goes where: team, server URL, source address, publisher or not.
//!
//! Socket `i` is in team `i % teams`; the first `publishers` sockets of each team
//! publish. A child process of a `--processes` run takes whole teams (team `t` goes to
//! child `t % K`), so every team's publishers and receivers live in one process and
//! its accounting needs nothing from the others.

use std::net::IpAddr;

/// One child's share of a run: `index` of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slice {
    pub index: usize,
    pub count: usize,
}

impl std::str::FromStr for Slice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (i, k) = s.split_once('/').ok_or("expected INDEX/COUNT")?;
        let index: usize = i.parse().map_err(|_| "bad index")?;
        let count: usize = k.parse().map_err(|_| "bad count")?;
        if count == 0 || index >= count {
            return Err("index must be below count".into());
        }
        Ok(Slice { index, count })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketSpec {
    /// Global socket index (stable across children): names the user.
    pub index: usize,
    pub team: usize,
    /// Global publisher index, for publishers.
    pub publisher: Option<u32>,
    pub url: String,
    pub bind: Option<IpAddr>,
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub sockets: Vec<SocketSpec>,
    pub teams: usize,
    pub publishers_per_team: usize,
    /// Publishers in the whole run (all children): the aggregate rate is split by it.
    pub total_publishers: usize,
}

impl Plan {
    pub fn new(
        sockets: usize,
        teams: usize,
        publishers_per_team: usize,
        urls: &[String],
        addrs: &[IpAddr],
        slice: Option<Slice>,
    ) -> Plan {
        let teams = teams.max(1);
        let mut out = Vec::new();
        let mut seen_in_team = vec![0usize; teams];
        let mine = |team: usize| slice.is_none_or(|s| team % s.count == s.index);
        // A child uses its own share of the source addresses when there are enough.
        let my_addrs: Vec<IpAddr> = match slice {
            Some(s) if addrs.len() >= s.count => addrs
                .iter()
                .enumerate()
                .filter(|(j, _)| j % s.count == s.index)
                .map(|(_, a)| *a)
                .collect(),
            _ => addrs.to_vec(),
        };
        let mut total_publishers = 0;
        for i in 0..sockets {
            let team = i % teams;
            let rank = seen_in_team[team];
            seen_in_team[team] += 1;
            let publisher =
                (rank < publishers_per_team).then(|| (team * publishers_per_team + rank) as u32);
            total_publishers += usize::from(publisher.is_some());
            if !mine(team) {
                continue;
            }
            let local = out.len();
            out.push(SocketSpec {
                index: i,
                team,
                publisher,
                url: urls[i % urls.len()].clone(),
                bind: (!my_addrs.is_empty()).then(|| my_addrs[local % my_addrs.len()]),
            });
        }
        Plan {
            sockets: out,
            teams,
            publishers_per_team,
            total_publishers,
        }
    }

    /// Sockets per team in this plan (this child's share).
    pub fn team_sizes(&self) -> Vec<usize> {
        let mut sizes = vec![0; self.teams];
        for s in &self.sockets {
            sizes[s.team] += 1;
        }
        sizes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn urls() -> Vec<String> {
        vec!["ws://a/ws".into(), "ws://b/ws".into()]
    }

    #[test]
    fn teams_publishers_urls_round_robin() {
        let addrs: Vec<IpAddr> = vec!["127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap()];
        let p = Plan::new(10, 3, 1, &urls(), &addrs, None);
        assert_eq!(p.sockets.len(), 10);
        assert_eq!(p.team_sizes(), [4, 3, 3]);
        assert_eq!(p.total_publishers, 3);
        let pubs: Vec<_> = p.sockets.iter().filter_map(|s| s.publisher).collect();
        assert_eq!(pubs, [0, 1, 2]);
        assert_eq!(p.sockets[1].url, "ws://b/ws");
        assert_eq!(p.sockets[1].bind, Some(addrs[1]));
    }

    #[test]
    fn children_take_whole_teams_and_their_own_addresses() {
        let addrs: Vec<IpAddr> = (1..=4)
            .map(|n| format!("127.0.0.{n}").parse().unwrap())
            .collect();
        let all = Plan::new(100, 10, 2, &urls(), &addrs, None);
        let mut total = 0;
        for index in 0..3 {
            let child = Plan::new(100, 10, 2, &urls(), &addrs, Some(Slice { index, count: 3 }));
            assert!(child.sockets.iter().all(|s| s.team % 3 == index));
            assert_eq!(child.total_publishers, all.total_publishers);
            total += child.sockets.len();
        }
        assert_eq!(total, 100);
        let c1 = Plan::new(
            100,
            10,
            2,
            &urls(),
            &addrs,
            Some(Slice { index: 1, count: 2 }),
        );
        assert!(c1.sockets.iter().all(|s| {
            let b = s.bind.unwrap().to_string();
            b == "127.0.0.2" || b == "127.0.0.4"
        }));
    }

    #[test]
    fn slices_parse() {
        assert_eq!("1/4".parse::<Slice>(), Ok(Slice { index: 1, count: 4 }));
        assert!("4/4".parse::<Slice>().is_err());
        assert!("x".parse::<Slice>().is_err());
    }
}
