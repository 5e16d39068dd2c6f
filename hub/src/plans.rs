//! Team plans: what each plan allows (`[plans.NAME]` tables of the config file) and
//! which team is on which plan (`--team-plans`, `[team-plans]`).
//!
//! A plan sets `retention_days` (how long the team's activity is kept),
//! `max_connections` (connections joined to the team at once, across the cluster) and
//! `messages_per_day` (messages published to the team per UTC day, WebSocket and REST
//! together). A key that is missing or 0 is unlimited, with one exception: the three
//! built-in plans keep their default retention (free 30, pro 90, enterprise 365 days)
//! unless their table sets `retention_days`. So by default only retention is set, and
//! a hub has no quotas until its operator writes them.
//!
//! Plans beyond `free`, `pro` and `enterprise` may be defined in the file
//! (`[plans.team-xl]`); a team given a plan that is neither built in nor defined is a
//! configuration error, found before the node starts. Every team not listed is on
//! `free`.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use teamhub_protocol::TeamId;

/// The plan of every team not listed.
pub const DEFAULT_PLAN: &str = "free";

/// A plan's name: `[A-Za-z0-9_-]`, 1 to 64 characters.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PlanName(Arc<str>);

impl PlanName {
    pub fn new(s: &str) -> Result<PlanName, String> {
        let ok = (1..=64).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if ok {
            Ok(PlanName(s.into()))
        } else {
            Err(format!(
                "invalid plan name {s:?}: use letters, digits, '_' and '-' (at most 64)"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn free() -> PlanName {
        PlanName(DEFAULT_PLAN.into())
    }
}

impl fmt::Display for PlanName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What one plan allows; `None` is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlanLimits {
    pub retention_days: Option<u32>,
    pub max_connections: Option<u64>,
    pub messages_per_day: Option<u64>,
}

impl PlanLimits {
    const fn retention(days: u32) -> PlanLimits {
        PlanLimits {
            retention_days: Some(days),
            max_connections: None,
            messages_per_day: None,
        }
    }
}

/// The built-in plans and their defaults.
const BUILT_IN: [(&str, PlanLimits); 3] = [
    ("free", PlanLimits::retention(30)),
    ("pro", PlanLimits::retention(90)),
    ("enterprise", PlanLimits::retention(365)),
];

/// Every plan a team may be on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plans(BTreeMap<PlanName, PlanLimits>);

impl Default for Plans {
    fn default() -> Self {
        Plans(
            BUILT_IN
                .iter()
                .map(|(name, limits)| (PlanName((*name).into()), *limits))
                .collect(),
        )
    }
}

impl Plans {
    /// The built-in plans with the config file's `[plans]` table applied.
    pub fn from_toml(table: &toml::Table) -> Result<Plans, String> {
        let mut plans = Plans::default();
        for (name, value) in table {
            let plan = PlanName::new(name)?;
            let toml::Value::Table(keys) = value else {
                return Err(format!("plans.{name} must be a table"));
            };
            let built_in = plans.0.get(&plan).copied();
            let mut limits = PlanLimits {
                retention_days: built_in.and_then(|b| b.retention_days),
                ..PlanLimits::default()
            };
            for (key, value) in keys {
                let toml::Value::Integer(n) = value else {
                    return Err(format!("plans.{name}.{key} must be a whole number"));
                };
                let n = u64::try_from(*n)
                    .map_err(|_| format!("plans.{name}.{key} must not be negative"))?;
                let n = (n > 0).then_some(n);
                match key.replace('-', "_").as_str() {
                    // 0 keeps activity for good, whatever the built-in default.
                    "retention_days" => {
                        limits.retention_days = n.map(|d| u32::try_from(d).unwrap_or(u32::MAX));
                    }
                    "max_connections" => limits.max_connections = n,
                    "messages_per_day" => limits.messages_per_day = n,
                    _ => {
                        return Err(format!(
                            "plans.{name}: unknown setting {key:?} (expected retention_days, \
                             max_connections or messages_per_day)"
                        ));
                    }
                }
            }
            plans.0.insert(plan, limits);
        }
        Ok(plans)
    }

    pub fn get(&self, plan: &PlanName) -> Option<&PlanLimits> {
        self.0.get(plan)
    }

    /// Whether any plan sets a quota (connections or messages).
    pub fn any_quota(&self) -> bool {
        self.0
            .values()
            .any(|l| l.max_connections.is_some() || l.messages_per_day.is_some())
    }
}

/// The plans set per team; every other team is on `free`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TeamPlans(BTreeMap<TeamId, PlanName>);

impl TeamPlans {
    pub fn plan(&self, team: &TeamId) -> PlanName {
        self.0.get(team).cloned().unwrap_or_else(PlanName::free)
    }

    /// Teams with a plan other than `free`.
    pub fn listed(&self) -> impl Iterator<Item = (&TeamId, &PlanName)> {
        self.0.iter().filter(|(_, p)| p.as_str() != DEFAULT_PLAN)
    }
}

impl FromStr for TeamPlans {
    type Err = String;
    /// `design=pro,acme=enterprise` (spaces around items allowed; empty is none).
    /// Whether each plan exists is checked against the plans by [`PlanBook::new`].
    fn from_str(s: &str) -> Result<TeamPlans, String> {
        let mut plans = BTreeMap::new();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (team, plan) = item
                .split_once('=')
                .ok_or_else(|| format!("{item:?}: expected TEAM=PLAN"))?;
            let team = TeamId::new(team.trim()).map_err(|e| format!("{item:?}: {e}"))?;
            let plan = PlanName::new(plan.trim()).map_err(|e| format!("{item:?}: {e}"))?;
            if plans.insert(team.clone(), plan).is_some() {
                return Err(format!("team {team} is given a plan twice"));
            }
        }
        Ok(TeamPlans(plans))
    }
}

/// The plans and who is on which: what the node consults for retention and quotas.
#[derive(Debug, Clone, Default)]
pub struct PlanBook {
    plans: Plans,
    teams: TeamPlans,
}

impl PlanBook {
    /// Fails when a team is given a plan that does not exist.
    pub fn new(plans: Plans, teams: TeamPlans) -> Result<PlanBook, String> {
        for (team, plan) in &teams.0 {
            if plans.get(plan).is_none() {
                let known: Vec<&str> = plans.0.keys().map(PlanName::as_str).collect();
                return Err(format!(
                    "team {team}: unknown plan {:?}: expected one of {} (or define \
                     [plans.{plan}] in the config file)",
                    plan.as_str(),
                    known.join(", ")
                ));
            }
        }
        Ok(PlanBook { plans, teams })
    }

    /// `team`'s plan and what it allows.
    pub fn of(&self, team: &TeamId) -> (PlanName, PlanLimits) {
        let plan = self.teams.plan(team);
        let limits = self.plans.get(&plan).copied().unwrap_or_default();
        (plan, limits)
    }

    /// What `plan` allows (unlimited when it does not exist).
    pub fn limits(&self, plan: &PlanName) -> PlanLimits {
        self.plans.get(plan).copied().unwrap_or_default()
    }

    pub fn teams(&self) -> &TeamPlans {
        &self.teams
    }

    pub fn plans(&self) -> &Plans {
        &self.plans
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> TeamId {
        TeamId::new(s).unwrap()
    }

    #[test]
    fn team_plans_parse() {
        let plans: TeamPlans = " design=pro, acme = enterprise ,x=free,".parse().unwrap();
        assert_eq!(plans.plan(&t("design")).as_str(), "pro");
        assert_eq!(plans.plan(&t("acme")).as_str(), "enterprise");
        assert_eq!(plans.plan(&t("x")).as_str(), "free");
        assert_eq!(plans.plan(&t("other")).as_str(), "free");
        assert_eq!(plans.listed().count(), 2, "free is not listed");
        assert_eq!("".parse::<TeamPlans>().unwrap(), TeamPlans::default());
        for bad in [
            "design",
            "design=go ld",
            "a b=pro",
            "a=pro,a=free",
            "=pro",
            "a=",
        ] {
            assert!(bad.parse::<TeamPlans>().is_err(), "{bad}");
        }
    }

    #[test]
    fn defaults_set_only_retention() {
        let book = PlanBook::default();
        let days = ["free", "pro", "enterprise"]
            .map(|p| book.limits(&PlanName::new(p).unwrap()).retention_days);
        assert_eq!(days, [Some(30), Some(90), Some(365)]);
        assert!(!book.plans().any_quota());
    }

    #[test]
    fn tables_set_quotas_and_define_plans() {
        let table: toml::Table = toml::from_str(
            "[free]\nmessages_per_day = 1000\nmax_connections = 0\n\
             [pro]\nretention_days = 0\nmax-connections = 50\n\
             [team-xl]\nmessages_per_day = 5\n",
        )
        .unwrap();
        let plans = Plans::from_toml(&table).unwrap();
        let get = |p: &str| *plans.get(&PlanName::new(p).unwrap()).unwrap();
        assert_eq!(
            get("free"),
            PlanLimits {
                retention_days: Some(30),
                max_connections: None,
                messages_per_day: Some(1000)
            },
            "a built-in plan keeps its retention; 0 is unlimited"
        );
        assert_eq!(get("pro").retention_days, None, "0 days keeps forever");
        assert_eq!(get("pro").max_connections, Some(50));
        assert_eq!(
            get("team-xl"),
            PlanLimits {
                retention_days: None,
                max_connections: None,
                messages_per_day: Some(5)
            }
        );
        assert!(plans.any_quota());

        let teams: TeamPlans = "acme=team-xl".parse().unwrap();
        let book = PlanBook::new(plans.clone(), teams).unwrap();
        assert_eq!(book.of(&t("acme")).0.as_str(), "team-xl");
        let err = PlanBook::new(plans, "acme=gold".parse().unwrap()).unwrap_err();
        assert!(err.contains("unknown plan \"gold\""), "{err}");
    }

    #[test]
    fn bad_tables() {
        for bad in [
            "[free]\nmessages_per_day = -1\n",
            "[free]\nmessages_per_day = \"lots\"\n",
            "[free]\nmessages = 1\n",
            "free = 3\n",
            "[\"a b\"]\nmax_connections = 1\n",
        ] {
            let table: toml::Table = toml::from_str(bad).unwrap();
            assert!(Plans::from_toml(&table).is_err(), "{bad}");
        }
    }
}
