//! Command line, environment and TOML configuration.
//!
//! Every flag has an environment variable of the same name (`--presence-ttl` ->
//! `TEAMHUB_PRESENCE_TTL`) and a key in the optional `--config` TOML file (`presence-ttl`
//! or `presence_ttl`). Precedence: flag, then environment, then file, then default.
//! The file is applied by re-parsing the command line with the file's values appended
//! for exactly the keys that neither a flag nor the environment set, so one parser does
//! all validation and every source gets the same error messages.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::parser::ValueSource;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

use crate::auth::mapping::GroupRoles;
use crate::plans::{PlanBook, Plans, TeamPlans};

/// `--max-token-lifetime` unless set: a week, longer than any identity provider's
/// access tokens and the hub's own (`teamhub token` defaults to an hour).
pub const DEFAULT_MAX_TOKEN_LIFETIME: u64 = 7 * 86400;

#[derive(Debug, Parser)]
#[command(
    name = "teamhub",
    version,
    about = "Real-time collaboration hub: WebSocket gateway, presence, history and activity log"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a node.
    Serve(Box<ServeArgs>),
    /// Print a JWT signed with the configured HS256 secret.
    Token(TokenArgs),
    /// Apply the database schema and exit.
    Migrate(MigrateArgs),
    /// Join teams and print every frame the node sends as one JSON line on stdout,
    /// reconnecting and recovering with `since` after any disconnect.
    Listen(ListenArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum JwtAlg {
    #[value(name = "HS256")]
    Hs256,
    #[value(name = "RS256")]
    Rs256,
    #[value(name = "ES256")]
    Es256,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// How tokens are verified; shared by `serve` and `token`.
#[derive(Debug, Clone, Args)]
pub struct JwtArgs {
    /// HS256 secret. With no secret, public key, JWKS URL or issuer, `serve` runs in
    /// development mode.
    #[arg(long, env = "TEAMHUB_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// Path to a PEM public key (RS256 or ES256, see --jwt-alg).
    #[arg(long, env = "TEAMHUB_JWT_PUBLIC_KEY")]
    pub jwt_public_key: Option<PathBuf>,
    /// Algorithm of --jwt-public-key.
    #[arg(long, env = "TEAMHUB_JWT_ALG", value_enum)]
    pub jwt_alg: Option<JwtAlg>,
    /// When set, tokens must carry this `iss`.
    #[arg(long, env = "TEAMHUB_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// When set, tokens must carry this `aud`.
    #[arg(long, env = "TEAMHUB_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// Seconds of clock skew allowed on `exp`, `nbf` and `iat`.
    #[arg(long, env = "TEAMHUB_JWT_LEEWAY", default_value_t = 5)]
    pub jwt_leeway: u64,
    /// Longest a JWT may live (`exp - iat`, seconds): longer ones, and tokens without
    /// `iat`, are refused, and member revocations older than this are pruned (every
    /// token they refuse has expired). 0 accepts any lifetime and keeps revocations
    /// for good.
    #[arg(long, env = "TEAMHUB_MAX_TOKEN_LIFETIME", default_value_t = DEFAULT_MAX_TOKEN_LIFETIME)]
    pub max_token_lifetime: u64,
    /// JSON Web Key Set of an identity provider: RS256, ES256 and EdDSA tokens are
    /// verified with the key their `kid` names (https, or http on a loopback host).
    #[arg(long, env = "TEAMHUB_JWKS_URL")]
    pub jwks_url: Option<String>,
    /// OpenID issuer: its tokens must carry this `iss`, and without --jwks-url the key
    /// set is found at <issuer>/.well-known/openid-configuration (`jwks_uri`).
    #[arg(long, env = "TEAMHUB_OIDC_ISSUER")]
    pub oidc_issuer: Option<String>,
    /// Seconds between two fetches of the identity provider's key set (a token with an
    /// unknown `kid` also causes one, at most every 10 s).
    #[arg(long, env = "TEAMHUB_JWKS_REFRESH", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    pub jwks_refresh: u64,
    /// Claim of an identity provider's token holding the user id (required: no
    /// fall-back to `sub`; it must be a valid user id).
    #[arg(long, env = "TEAMHUB_USER_CLAIM", default_value = "sub")]
    pub user_claim: String,
    /// Claim of an identity provider's token holding the display name.
    #[arg(long, env = "TEAMHUB_NAME_CLAIM", default_value = "name")]
    pub name_claim: String,
    /// Claim of an identity provider's token holding the team -> role object.
    #[arg(long, env = "TEAMHUB_TEAMS_CLAIM", default_value = "teams")]
    pub teams_claim: String,
    /// Claim of an identity provider's token listing the user's groups.
    #[arg(long, env = "TEAMHUB_GROUPS_CLAIM", default_value = "groups")]
    pub groups_claim: String,
    /// Roles granted through the identity provider's groups, `GROUP=TEAM:ROLE,...`
    /// (the file's `[group-roles]` table: `"GROUP" = "TEAM:ROLE"` or a list); a user's
    /// role in a team is the strongest any source grants.
    #[arg(long, env = "TEAMHUB_GROUP_ROLES", default_value = "", value_parser = parse_group_roles)]
    pub group_roles: GroupRoles,
}

fn parse_group_roles(s: &str) -> Result<GroupRoles, String> {
    s.parse()
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// TOML file with any of these settings (keys as the flag names).
    #[arg(long, env = "TEAMHUB_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to serve HTTP and WebSocket on.
    #[arg(long, env = "TEAMHUB_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// PEM certificate chain: with --tls-key the node serves HTTPS and WSS only, and
    /// reloads the pair for new connections whenever either file changes.
    #[arg(long, env = "TEAMHUB_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "TEAMHUB_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Seconds a client has to finish its TLS handshake and to send each request's
    /// headers; slower ones are cut (slow or half-open handshakes hold nothing longer).
    #[arg(long, env = "TEAMHUB_HANDSHAKE_TIMEOUT", default_value_t = 10)]
    pub handshake_timeout: u64,
    #[command(flatten)]
    pub jwt: JwtArgs,
    /// Redis URL; when set, several nodes act as one hub. In cluster mode a
    /// comma-separated list of seed nodes. `rediss://` speaks TLS.
    #[arg(long, env = "TEAMHUB_REDIS_URL")]
    pub redis_url: Option<String>,
    /// `single` (one Redis server, or a primary behind one address) or `cluster`
    /// (Redis Cluster: each team's keys and traffic on its own shard).
    #[arg(long, env = "TEAMHUB_REDIS_MODE", default_value = "single", value_parser = parse_redis_mode)]
    pub redis_mode: teamhub_redis::Mode,
    /// PEM CA that signs the Redis servers' certificates (a private CA); the system
    /// roots are trusted otherwise. Needs a rediss:// URL.
    #[arg(long, env = "TEAMHUB_REDIS_CA_CERT")]
    pub redis_ca_cert: Option<std::path::PathBuf>,
    /// Prefix of every Redis key and channel: nodes of one cluster share it, and
    /// several clusters (or test runs) can share one Redis with different ones.
    #[arg(long, env = "TEAMHUB_REDIS_KEY_PREFIX", default_value = "teamhub")]
    pub redis_key_prefix: String,
    /// Activity log, patterns and API keys: sqlite://... or postgres://...
    #[arg(
        long,
        env = "TEAMHUB_DATABASE_URL",
        default_value = "sqlite://teamhub.db"
    )]
    pub database_url: String,
    /// File the activity log spills to when its in-memory queue is full (replayed once
    /// the database keeps up, and at the next start after a crash); `none` disables it,
    /// and then a full queue drops events (counted in teamhub_activity_dropped_total).
    #[arg(
        long,
        env = "TEAMHUB_ACTIVITY_SPILL_PATH",
        default_value = "teamhub-activity.spill"
    )]
    pub activity_spill_path: String,
    /// This node's name in metrics, logs and presence (random when unset).
    #[arg(long, env = "TEAMHUB_NODE_ID")]
    pub node_id: Option<String>,
    /// Comma-separated browser origins allowed to open sockets (`*` allows any).
    #[arg(long, env = "TEAMHUB_ALLOWED_ORIGINS")]
    pub allowed_origins: Option<String>,
    /// Seconds after which a dead node's connections leave presence.
    #[arg(long, env = "TEAMHUB_PRESENCE_TTL", default_value_t = 15)]
    pub presence_ttl: u64,
    /// Largest inbound frame in bytes (close 1009 beyond); also the REST body limit.
    #[arg(long, env = "TEAMHUB_MAX_FRAME_BYTES", default_value_t = 65536)]
    pub max_frame_bytes: usize,
    /// Inbound frames per second per connection (bursts of twice that); 0 turns it off.
    #[arg(long, env = "TEAMHUB_RATE_LIMIT", default_value_t = 100)]
    pub rate_limit: u32,
    /// Open sockets one user (a JWT's user or an API key) may hold on this node; the
    /// next handshake is refused with 429. 0 turns the cap off.
    #[arg(long, env = "TEAMHUB_MAX_CONNECTIONS_PER_USER", default_value_t = 100)]
    pub max_connections_per_user: usize,
    /// REST requests per second per caller on this node (the token's user or API key;
    /// without valid credentials, the client IP), bursts of twice that; 0 turns it off.
    #[arg(long, env = "TEAMHUB_API_RATE_LIMIT", default_value_t = 100)]
    pub api_rate_limit: u32,
    /// Teams one connection may join.
    #[arg(long, env = "TEAMHUB_MAX_JOINS", default_value_t = 100)]
    pub max_joins: usize,
    /// Seconds between server pings.
    #[arg(long, env = "TEAMHUB_PING_INTERVAL", default_value_t = 25)]
    pub ping_interval: u64,
    /// Seconds of silence after which a connection is closed.
    #[arg(long, env = "TEAMHUB_IDLE_TIMEOUT", default_value_t = 60)]
    pub idle_timeout: u64,
    /// Messages kept per team for recovery.
    #[arg(long, env = "TEAMHUB_HISTORY_SIZE", default_value_t = 1000)]
    pub history_size: usize,
    /// Seconds a message stays in history.
    #[arg(long, env = "TEAMHUB_HISTORY_TTL", default_value_t = 86400)]
    pub history_ttl: u64,
    /// Outbound frames queued per connection before it is closed with 1013.
    #[arg(long, env = "TEAMHUB_OUTBOX_SIZE", default_value_t = 1024)]
    pub outbox_size: usize,
    /// Comma-separated message type prefixes that are not written to the activity log.
    #[arg(
        long,
        env = "TEAMHUB_EPHEMERAL_PREFIXES",
        default_value = "cursor.,typing."
    )]
    pub ephemeral_prefixes: String,
    /// Plans per team, `TEAM=PLAN,...`; teams not listed are on `free`. A plan sets
    /// activity retention (by default `free` 30 days, `pro` 90, `enterprise` 365) and
    /// quotas; the config file's `[plans.NAME]` tables set them and may define more.
    #[arg(long, env = "TEAMHUB_TEAM_PLANS", default_value = "", value_parser = parse_team_plans)]
    pub team_plans: TeamPlans,
    /// What each plan allows: the built-in plans with the config file's `[plans.NAME]`
    /// tables applied (file only; see `plans.rs`).
    #[arg(skip)]
    pub plans: Plans,
    /// Seconds between two flushes of the usage counts to the database (also flushed
    /// on drain and before a usage request is answered).
    #[arg(long, env = "TEAMHUB_USAGE_FLUSH_INTERVAL", default_value_t = 10)]
    pub usage_flush_interval: u64,
    /// Seconds between two passes of the activity retention job (it also runs at start).
    #[arg(long, env = "TEAMHUB_RETENTION_INTERVAL", default_value_t = 3600)]
    pub retention_interval: u64,
    /// Seconds a drain waits for connections and the activity log before exiting.
    #[arg(long, env = "TEAMHUB_DRAIN_TIMEOUT", default_value_t = 10)]
    pub drain_timeout: u64,
    /// Log format.
    #[arg(long, env = "TEAMHUB_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Seconds a webhook endpoint has to answer a delivery with a 2xx.
    #[arg(long, env = "TEAMHUB_WEBHOOK_TIMEOUT", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub webhook_timeout: u64,
    /// Delays between the attempts of a webhook delivery (one attempt, then one per
    /// delay; each delay gets up to 10% of jitter), e.g. `5s,5m,30m,2h`.
    #[arg(
        long,
        env = "TEAMHUB_WEBHOOK_RETRY_SCHEDULE",
        default_value = "5s,5m,30m,2h,5h,10h,14h,20h,24h",
        value_parser = parse_schedule
    )]
    pub webhook_retry_schedule: RetrySchedule,
    /// Allow webhook URLs whose host is a loopback, private, link-local or unspecified
    /// address (development and tests; never on a shared network).
    #[arg(
        long,
        env = "TEAMHUB_WEBHOOK_ALLOW_PRIVATE",
        num_args = 0..=1,
        default_value_t = false,
        default_missing_value = "true",
        action = clap::ArgAction::Set
    )]
    pub webhook_allow_private: bool,
}

/// The delays between webhook attempts (`--webhook-retry-schedule`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySchedule(pub Vec<Duration>);

/// Parses a comma-separated list of durations (`500ms` too, for tests; an empty
/// string: no retries).
fn parse_schedule(s: &str) -> Result<RetrySchedule, String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| match p.strip_suffix("ms") {
            Some(ms) => ms
                .parse::<u64>()
                .ok()
                .filter(|ms| *ms > 0)
                .map(Duration::from_millis)
                .ok_or_else(|| format!("invalid delay {p:?}")),
            None => parse_duration(p),
        })
        .collect::<Result<_, _>>()
        .map(RetrySchedule)
}

#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    /// The token's `sub`.
    #[arg(long)]
    pub user: String,
    /// `TEAM=ROLE`, repeatable.
    #[arg(long = "team", value_name = "TEAM=ROLE", required = true)]
    pub teams: Vec<String>,
    /// Display name (`name` claim).
    #[arg(long)]
    pub name: Option<String>,
    /// Lifetime, e.g. `90s`, `15m`, `1h`, `7d`.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub ttl: Duration,
    #[arg(long, env = "TEAMHUB_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    #[arg(long, env = "TEAMHUB_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    #[arg(long, env = "TEAMHUB_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct ListenArgs {
    /// The node's base URL, e.g. ws://127.0.0.1:8080 (`/ws` is appended).
    #[arg(long, env = "TEAMHUB_URL", default_value = "ws://127.0.0.1:8080")]
    pub url: String,
    /// A JWT or an API key (`thk_...`).
    #[arg(long, env = "TEAMHUB_TOKEN", hide_env_values = true)]
    pub token: String,
    /// A team to join, repeatable.
    #[arg(long = "team", value_name = "TEAM", required = true)]
    pub teams: Vec<String>,
    /// Print only messages whose type starts with one of these prefixes
    /// (comma-separated or repeated, e.g. `--types pattern.,chat.`); other frames
    /// (replies, presence, errors) are always printed.
    #[arg(long, value_delimiter = ',')]
    pub types: Vec<String>,
    /// First reconnect delay ceiling, in milliseconds (doubles per failure, with jitter).
    #[arg(long, default_value_t = 250)]
    pub backoff_initial_ms: u64,
    /// Largest reconnect delay, in milliseconds.
    #[arg(long, default_value_t = 30_000)]
    pub backoff_max_ms: u64,
    /// PEM CA to trust for a wss:// URL instead of the system roots (a private CA).
    #[arg(long, env = "TEAMHUB_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct MigrateArgs {
    #[arg(
        long,
        env = "TEAMHUB_DATABASE_URL",
        default_value = "sqlite://teamhub.db"
    )]
    pub database_url: String,
}

fn parse_team_plans(s: &str) -> Result<TeamPlans, String> {
    s.parse()
}

/// Parses `90s`, `15m`, `1h`, `7d` or a plain number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: expected e.g. 90s, 15m, 1h, 7d"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86400,
        _ => return Err(format!("invalid duration unit in {s:?}: use s, m, h or d")),
    };
    if secs == 0 {
        return Err("duration must be positive".into());
    }
    Ok(Duration::from_secs(secs))
}

impl ServeArgs {
    /// The plans and each team's, checked against each other.
    pub fn plan_book(&self) -> anyhow::Result<PlanBook> {
        PlanBook::new(self.plans.clone(), self.team_plans.clone()).map_err(anyhow::Error::msg)
    }
}

impl Cli {
    /// Parses the process arguments, applying `--config` for `serve`.
    pub fn load() -> anyhow::Result<Cli> {
        Self::load_from(std::env::args_os())
    }

    pub fn load_from<I: IntoIterator<Item = OsString>>(args: I) -> anyhow::Result<Cli> {
        let cli = Self::load_unchecked(args)?;
        if let Command::Serve(serve) = &cli.command {
            serve.plan_book()?;
        }
        Ok(cli)
    }

    fn load_unchecked<I: IntoIterator<Item = OsString>>(args: I) -> anyhow::Result<Cli> {
        let argv: Vec<OsString> = args.into_iter().collect();
        let matches = Cli::command().get_matches_from(argv.clone());
        let cli = Cli::from_arg_matches(&matches)?;
        let Command::Serve(serve) = &cli.command else {
            return Ok(cli);
        };
        let Some(path) = serve.config.clone() else {
            return Ok(cli);
        };
        let Some(("serve", sub)) = matches.subcommand() else {
            return Ok(cli);
        };

        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        let table: toml::Table = toml::from_str(&text)
            .with_context(|| format!("parsing config file {}", path.display()))?;
        let known: Vec<String> = Cli::command()
            .find_subcommand("serve")
            .map(|c| c.get_arguments().map(|a| a.get_id().to_string()).collect())
            .unwrap_or_default();
        let mut extra: Vec<OsString> = Vec::new();
        let mut plans = Plans::default();
        for (key, value) in table {
            let id = key.replace('-', "_");
            if id == "plans" {
                let toml::Value::Table(table) = &value else {
                    bail!(
                        "config file {}: plans must be tables [plans.NAME]",
                        path.display()
                    );
                };
                plans = Plans::from_toml(table)
                    .map_err(|e| anyhow::anyhow!("config file {}: {e}", path.display()))?;
                continue;
            }
            if id == "config" || !known.contains(&id) {
                bail!("config file {}: unknown setting {key:?}", path.display());
            }
            let explicit = matches!(
                sub.value_source(&id),
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            );
            if explicit {
                continue;
            }
            let value = match value {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                toml::Value::Array(items) => items
                    .iter()
                    .map(|v| {
                        v.as_str()
                            .map(str::to_owned)
                            .unwrap_or_else(|| v.to_string())
                    })
                    .collect::<Vec<_>>()
                    .join(","),
                // `[team-plans]` with `design = "pro"`: the same as "design=pro"; a list
                // (`[group-roles]` with `eng = ["a:editor", "b:viewer"]`) repeats the key.
                toml::Value::Table(entries) => entries
                    .iter()
                    .flat_map(|(k, v)| match v {
                        toml::Value::Array(items) => items
                            .iter()
                            .map(|i| format!("{k}={}", i.as_str().unwrap_or_default()))
                            .collect::<Vec<_>>(),
                        v => vec![format!("{k}={}", v.as_str().unwrap_or_default())],
                    })
                    .collect::<Vec<_>>()
                    .join(","),
                other => bail!(
                    "config file {}: {key} has an unsupported value {other}",
                    path.display()
                ),
            };
            extra.push(format!("--{}={value}", id.replace('_', "-")).into());
        }
        let mut argv = argv;
        argv.extend(extra);
        let matches = Cli::command()
            .try_get_matches_from(argv)
            .with_context(|| format!("in config file {}", path.display()))?;
        let mut cli = Cli::from_arg_matches(&matches)?;
        if let Command::Serve(serve) = &mut cli.command {
            serve.plans = plans;
        }
        Ok(cli)
    }
}

fn parse_redis_mode(s: &str) -> Result<teamhub_redis::Mode, String> {
    s.parse()
        .map_err(|e: teamhub_redis::RedisError| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve(args: &[&str]) -> ServeArgs {
        let argv = std::iter::once("teamhub")
            .chain(args.iter().copied())
            .map(OsString::from);
        match Cli::load_from(argv).unwrap().command {
            Command::Serve(s) => *s,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn defaults_match_the_contract() {
        let s = serve(&["serve"]);
        assert_eq!(s.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(s.database_url, "sqlite://teamhub.db");
        assert_eq!(
            (
                s.presence_ttl,
                s.max_frame_bytes,
                s.jwt.jwt_leeway,
                s.rate_limit
            ),
            (15, 65536, 5, 100)
        );
        assert_eq!((s.max_connections_per_user, s.api_rate_limit), (100, 100));
        assert_eq!(
            (s.jwt.jwks_url.as_deref(), s.jwt.oidc_issuer.as_deref()),
            (None, None)
        );
        assert_eq!(s.jwt.jwks_refresh, 300);
        let argv = ["teamhub", "serve", "--jwks-refresh", "0"].map(OsString::from);
        assert!(
            Cli::try_parse_from(argv).is_err(),
            "a refresh of 0 s is refused"
        );
    }

    #[test]
    fn file_values_apply_below_flags() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hub.toml");
        std::fs::write(
            &path,
            "presence-ttl = 3\nrate_limit = 7\nallowed-origins = [\"https://a\", \"https://b\"]\n",
        )
        .unwrap();
        let s = serve(&[
            "serve",
            "--config",
            path.to_str().unwrap(),
            "--rate-limit",
            "9",
        ]);
        assert_eq!(s.presence_ttl, 3);
        assert_eq!(s.rate_limit, 9, "a flag beats the file");
        assert_eq!(s.allowed_origins.as_deref(), Some("https://a,https://b"));
    }

    #[test]
    fn webhook_flags() {
        let s = serve(&["serve"]);
        assert_eq!(s.webhook_timeout, 10);
        assert_eq!(s.webhook_retry_schedule.0.len(), 9);
        assert_eq!(s.webhook_retry_schedule.0[1], Duration::from_secs(300));
        assert!(!s.webhook_allow_private);
        let s = serve(&[
            "serve",
            "--webhook-retry-schedule",
            "200ms,1s",
            "--webhook-allow-private",
        ]);
        assert_eq!(
            s.webhook_retry_schedule.0,
            [Duration::from_millis(200), Duration::from_secs(1)]
        );
        assert!(s.webhook_allow_private);
        let s = serve(&["serve", "--webhook-allow-private", "false"]);
        assert!(!s.webhook_allow_private);
        assert!(parse_schedule("5x").is_err());
    }

    #[test]
    fn team_plans_from_flags_environment_forms_and_file() {
        use teamhub_protocol::TeamId;
        let t = |s: &str| TeamId::new(s).unwrap();
        let plan = |s: &ServeArgs, team: &str| s.team_plans.plan(&t(team)).to_string();
        let s = serve(&["serve"]);
        assert_eq!(plan(&s, "any"), "free");
        assert_eq!(s.retention_interval, 3600);
        let s = serve(&["serve", "--team-plans", "design=pro,acme=enterprise"]);
        assert_eq!(plan(&s, "design"), "pro");
        assert_eq!(plan(&s, "acme"), "enterprise");

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hub.toml");
        std::fs::write(
            &path,
            "[team-plans]\ndesign = \"pro\"\nacme = \"enterprise\"\n",
        )
        .unwrap();
        let s = serve(&["serve", "--config", path.to_str().unwrap()]);
        assert_eq!(plan(&s, "design"), "pro");
        assert_eq!(plan(&s, "acme"), "enterprise");
        std::fs::write(&path, "team_plans = \"design=enterprise\"\n").unwrap();
        let s = serve(&["serve", "--config", path.to_str().unwrap()]);
        assert_eq!(plan(&s, "design"), "enterprise");

        let argv = ["teamhub", "serve", "--team-plans", "design=gold"].map(OsString::from);
        let err = Cli::load_from(argv).unwrap_err().to_string();
        assert!(err.contains("unknown plan \"gold\""), "{err}");
    }

    #[test]
    fn plans_tables_in_the_file() {
        use crate::plans::PlanName;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hub.toml");
        std::fs::write(
            &path,
            "team-plans = \"acme=gold\"\n[plans.free]\nmessages_per_day = 100\n\
             [plans.gold]\nmax_connections = 7\n",
        )
        .unwrap();
        let s = serve(&["serve", "--config", path.to_str().unwrap()]);
        let book = s.plan_book().unwrap();
        let free = book.limits(&PlanName::new("free").unwrap());
        assert_eq!(
            (free.retention_days, free.messages_per_day),
            (Some(30), Some(100))
        );
        let (plan, gold) = book.of(&teamhub_protocol::TeamId::new("acme").unwrap());
        assert_eq!((plan.as_str(), gold.max_connections), ("gold", Some(7)));

        std::fs::write(&path, "[plans.free]\nmessages = 1\n").unwrap();
        let argv = ["teamhub", "serve", "--config", path.to_str().unwrap()].map(OsString::from);
        let err = Cli::load_from(argv).unwrap_err().to_string();
        assert!(err.contains("unknown setting \"messages\""), "{err}");
    }

    #[test]
    fn group_roles_from_flag_and_file_table() {
        let s = serve(&["serve", "--group-roles", "eng=design:editor"]);
        assert_eq!(s.jwt.group_roles, "eng=design:editor".parse().unwrap());
        assert_eq!(s.jwt.user_claim, "sub");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hub.toml");
        std::fs::write(
            &path,
            "user-claim = \"uid\"\n[group-roles]\n\"Design Leads\" = \"design:admin\"\neng = [\"design:editor\", \"ops:viewer\"]\n",
        )
        .unwrap();
        let s = serve(&["serve", "--config", path.to_str().unwrap()]);
        assert_eq!(s.jwt.user_claim, "uid");
        assert_eq!(
            s.jwt.group_roles,
            "Design Leads=design:admin,eng=design:editor,eng=ops:viewer"
                .parse()
                .unwrap()
        );
        let argv = ["teamhub", "serve", "--group-roles", "eng=design:wizard"].map(OsString::from);
        assert!(Cli::try_parse_from(argv).is_err());
    }

    #[test]
    fn unknown_file_keys_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hub.toml");
        std::fs::write(&path, "presence_tll = 3\n").unwrap();
        let argv = ["teamhub", "serve", "--config", path.to_str().unwrap()].map(OsString::from);
        let err = Cli::load_from(argv).unwrap_err().to_string();
        assert!(err.contains("unknown setting \"presence_tll\""), "{err}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86400)));
        assert!(parse_duration("1w").is_err());
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("x").is_err());
    }
}
