//! The `teamhub` binary: `serve`, `token`, `migrate`, `listen`.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::{Context, bail};
use teamhub::auth::Authenticator;
use teamhub::config::{
    Cli, Command, JwtArgs, ListenArgs, LogFormat, MigrateArgs, ServeArgs, TokenArgs,
};
use teamhub_protocol::{Role, TeamId, UserId};

fn main() -> ExitCode {
    let cli = match Cli::load() {
        Ok(cli) => cli,
        Err(e) => {
            eprintln!("teamhub: {e:#}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("teamhub: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve(*args).await,
            Command::Token(args) => token(args),
            Command::Migrate(args) => migrate(args).await,
            Command::Listen(args) => listen(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("teamhub: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(format: LogFormat) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour_logs())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// Colour escapes only when a person reads stderr on a terminal: in a file, a pipe or a
/// log collector they are noise (`\x1b[2m` in every line). `NO_COLOR` (any non-empty
/// value, see no-color.org) turns colour off on a terminal too.
fn colour_logs() -> bool {
    use std::io::IsTerminal;
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    !no_color && std::io::stderr().is_terminal()
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    init_tracing(args.log_format);
    let running = teamhub::start(&args).await?;
    if running.node.auth.is_development() {
        development_banner(&running);
    }
    let node = running.node.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        node.start_drain();
    });
    let report = running.wait().await?;
    tracing::info!(
        sessions_left = report.sessions_left,
        activity_rows = report.activity_written,
        "stopped"
    );
    Ok(())
}

fn development_banner(running: &teamhub::Running) {
    let team = TeamId::new("demo").expect("static id");
    let user = UserId::new("dev").expect("static id");
    let teams = BTreeMap::from([(team, Role::Owner.as_str().to_owned())]);
    let token = running
        .node
        .auth
        .mint(&user, Some("Developer".into()), teams, 24 * 3600)
        .unwrap_or_default();
    let addr = running.addr;
    let (http, ws) = match running.scheme() {
        "https" => ("https", "wss"),
        _ => ("http", "ws"),
    };
    tracing::warn!(
        "DEVELOPMENT MODE: no --jwt-secret, --jwt-public-key, --jwks-url or --oidc-issuer, so tokens are signed with a random secret that dies with this process. Do not use in production."
    );
    eprintln!(
        "\n  teamhub is running in DEVELOPMENT MODE on {http}://{addr}\n\n  \
         token (user dev, owner of team demo, 24h):\n    {token}\n\n  \
         demo page:  {http}://{addr}/?token={token}\n  \
         websocket:  {ws}://{addr}/ws?token=<token>\n"
    );
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

fn token(args: TokenArgs) -> anyhow::Result<()> {
    let Some(secret) = args.jwt_secret.clone() else {
        bail!(
            "no secret: set --jwt-secret or TEAMHUB_JWT_SECRET (the same one `teamhub serve` uses)"
        );
    };
    let auth = Authenticator::from_args(&JwtArgs {
        jwt_secret: Some(secret),
        jwt_public_key: None,
        jwt_alg: None,
        jwt_issuer: args.jwt_issuer.clone(),
        jwt_audience: args.jwt_audience.clone(),
        jwt_leeway: 5,
        max_token_lifetime: 0,
        jwks_url: None,
        oidc_issuer: None,
        jwks_refresh: 300,
        user_claim: "sub".into(),
        name_claim: "name".into(),
        teams_claim: "teams".into(),
        groups_claim: "groups".into(),
        group_roles: Default::default(),
    })?;
    if args.ttl.as_secs() > teamhub::config::DEFAULT_MAX_TOKEN_LIFETIME {
        eprintln!(
            "warning: this token lives longer than 7 days; nodes refuse it unless started with a larger --max-token-lifetime (or 0)"
        );
    }
    let user = UserId::new(&args.user).with_context(|| format!("--user {:?}", args.user))?;
    let mut teams = BTreeMap::new();
    for spec in &args.teams {
        let Some((team, role)) = spec.split_once('=') else {
            bail!("--team {spec:?}: expected TEAM=ROLE, e.g. --team design=editor");
        };
        let team = TeamId::new(team).with_context(|| format!("--team {spec:?}"))?;
        if Role::parse(role).is_none() {
            bail!(
                "--team {spec:?}: unknown role {role:?} (owner, admin, editor, viewer; member and developer mean editor)"
            );
        }
        teams.insert(team, role.to_owned());
    }
    let token = auth
        .mint(&user, args.name.clone(), teams, args.ttl.as_secs())
        .context("signing the token")?;
    println!("{token}");
    Ok(())
}

async fn migrate(args: MigrateArgs) -> anyhow::Result<()> {
    let db = teamhub_persistence::connect(&args.database_url)
        .await
        .with_context(|| format!("opening {}", teamhub::bootstrap::redact(&args.database_url)))?;
    db.migrate().await.context("applying migrations")?;
    db.close().await;
    eprintln!(
        "schema of {} is up to date",
        teamhub::bootstrap::redact(&args.database_url)
    );
    Ok(())
}

async fn listen(args: ListenArgs) -> anyhow::Result<()> {
    let ws_url = teamhub::listen::socket_url(&args.url)?;
    let teams = args
        .teams
        .iter()
        .map(|t| TeamId::new(t).with_context(|| format!("--team {t:?}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let config = teamhub::listen::ListenConfig {
        ws_url,
        token: args.token,
        teams,
        types: args.types.into_iter().filter(|t| !t.is_empty()).collect(),
        backoff_initial: std::time::Duration::from_millis(args.backoff_initial_ms.max(1)),
        backoff_max: std::time::Duration::from_millis(args.backoff_max_ms.max(1)),
        tls: args
            .ca_cert
            .as_ref()
            .map(teamhub_client::TlsConfig::with_ca_file)
            .transpose()
            .context("--ca-cert")?,
    };
    teamhub::listen::run(config, shutdown_signal())
        .await
        .map_err(anyhow::Error::from)
}
