//! Test support for crates that must not know sqlx: a PostgreSQL schema of its own
//! per test (behind the `testing` feature).
//!
//! Tests of the hub start real nodes on Postgres; each gets a fresh schema, named in
//! the URL it hands to the node (`options=-c search_path=...`), dropped again when the
//! guard is dropped, also when the test panics. So tests run in parallel on one
//! database without seeing each other's rows.

use sqlx::Connection;
use sqlx::postgres::PgConnection;
use uuid::Uuid;

use crate::error::StoreError;

/// The server the tests use: `TEAMHUB_TEST_DATABASE_URL`, by default
/// `postgres://postgres@127.0.0.1:5432/test`.
pub fn test_database_url() -> String {
    std::env::var("TEAMHUB_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A fresh, empty schema; [`PostgresSchema::url`] connects into it.
#[derive(Debug)]
pub struct PostgresSchema {
    base: String,
    schema: String,
    url: String,
}

impl PostgresSchema {
    /// Creates `teamhub_test_<uuid>` on the server at `base` (a `postgres://` URL).
    pub async fn create(base: &str) -> Result<PostgresSchema, StoreError> {
        let schema = format!("teamhub_test_{}", Uuid::new_v4().simple());
        let mut conn = PgConnection::connect(base)
            .await
            .map_err(|e| StoreError::Unavailable(Box::new(e)))?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(&mut conn)
            .await
            .map_err(|e| StoreError::Unavailable(Box::new(e)))?;
        let _ = conn.close().await;
        let sep = if base.contains('?') { '&' } else { '?' };
        // The schema's name is also the connections' application_name, so dropping the
        // guard can find and end them (see `Drop`).
        let url =
            format!("{base}{sep}application_name={schema}&options=-c%20search_path%3D{schema}");
        Ok(PostgresSchema {
            base: base.to_owned(),
            schema,
            url,
        })
    }

    /// A URL whose connections use this schema.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The schema's name.
    pub fn name(&self) -> &str {
        &self.schema
    }
}

impl Drop for PostgresSchema {
    fn drop(&mut self) {
        // Drop may run inside a runtime that is blocked here: use a thread with its own.
        let (base, schema) = (self.base.clone(), self.schema.clone());
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async move {
                let mut conn = PgConnection::connect(&base).await.ok()?;
                // The nodes of the test may still hold connections in a transaction (an
                // activity batch between INSERT and COMMIT) whose runtime is the one
                // blocked in this drop: they would never commit, and DROP SCHEMA would
                // wait for their locks forever. The test is over, so end them first.
                sqlx::query(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE application_name = $1 AND pid <> pg_backend_pid()",
                )
                .bind(&schema)
                .execute(&mut conn)
                .await
                .ok()?;
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                    "DROP SCHEMA IF EXISTS {schema} CASCADE"
                )))
                .execute(&mut conn)
                .await
                .ok()?;
                conn.close().await.ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(()))) {
            eprintln!("warning: could not drop test schema {}", self.schema);
        }
    }
}

/// A PostgreSQL server of a test's own that accepts only TLS connections (`hostssl` in
/// `pg_hba.conf`), with the server certificate the test gives it; stopped on drop.
///
/// Made with the machine's `initdb` and `pg_ctl` (found with `pg_config --bindir`) in a
/// temporary directory, listening on 127.0.0.1 on a free port. Run as root (as in CI),
/// it runs the server as the `postgres` user, since PostgreSQL refuses to run as root.
#[derive(Debug)]
pub struct LocalTlsPostgres {
    port: u16,
    bindir: std::path::PathBuf,
    data: std::path::PathBuf,
    as_postgres: bool,
    _dir: tempfile::TempDir,
}

impl LocalTlsPostgres {
    /// Starts the server with this certificate and key (PEM) and waits until it accepts
    /// connections. Panics with the server's log when it cannot.
    pub fn start(cert_pem: &str, key_pem: &str) -> LocalTlsPostgres {
        use std::os::unix::fs::PermissionsExt;
        use std::process::Command;

        let bindir = Command::new("pg_config")
            .arg("--bindir")
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().into())
            .unwrap_or_else(|| std::path::PathBuf::from("/usr/lib/postgresql/15/bin"));
        let as_postgres = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
        let dir = tempfile::Builder::new()
            .prefix("teamhub-pg-tls")
            .tempdir()
            .expect("a temporary directory");
        let data = dir.path().join("data");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let pg = LocalTlsPostgres {
            port,
            bindir,
            data,
            as_postgres,
            _dir: dir,
        };
        if as_postgres {
            pg.run("chown", &["-R", "postgres:postgres", &pg.root()]);
            std::fs::set_permissions(pg.root(), std::fs::Permissions::from_mode(0o755))
                .expect("chmod the test directory");
        }
        let data = pg.data.display().to_string();
        pg.run_pg(
            "initdb",
            &["-D", &data, "-A", "trust", "-U", "postgres", "--no-sync"],
        );
        for (name, pem) in [("server.crt", cert_pem), ("server.key", key_pem)] {
            let path = pg.data.join(name);
            std::fs::write(&path, pem).expect("write the server certificate");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .expect("chmod the server key");
        }
        std::fs::write(
            pg.data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostssl all all ::1/128 trust\n",
        )
        .expect("write pg_hba.conf");
        if as_postgres {
            pg.run("chown", &["-R", "postgres:postgres", &data]);
        }
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c ssl=on -c fsync=off \
             -c ssl_cert_file=server.crt -c ssl_key_file=server.key",
            pg.root()
        );
        let log = pg.root() + "/server.log";
        let started = pg
            .command(
                "pg_ctl",
                &[
                    "-D", &data, "-l", &log, "-w", "-t", "60", "-o", &options, "start",
                ],
            )
            .status();
        if !matches!(started, Ok(s) if s.success()) {
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            panic!("the TLS PostgreSQL did not start ({started:?}):\n{log}");
        }
        pg
    }

    fn root(&self) -> String {
        self._dir.path().display().to_string()
    }

    /// `postgres://postgres@localhost:PORT/postgres?` with these parameters appended.
    pub fn url(&self, params: &str) -> String {
        format!(
            "postgres://postgres@localhost:{}/postgres?{params}",
            self.port
        )
    }

    fn command(&self, program: &str, args: &[&str]) -> std::process::Command {
        let path = self.bindir.join(program);
        let mut cmd = if self.as_postgres {
            let mut cmd = std::process::Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(path);
            cmd
        } else {
            std::process::Command::new(path)
        };
        cmd.args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null());
        cmd
    }

    fn run_pg(&self, program: &str, args: &[&str]) {
        let status = self.command(program, args).status();
        assert!(
            matches!(status, Ok(s) if s.success()),
            "{program} {args:?} failed: {status:?}"
        );
    }

    fn run(&self, program: &str, args: &[&str]) {
        let status = std::process::Command::new(program).args(args).status();
        assert!(
            matches!(status, Ok(s) if s.success()),
            "{program} {args:?} failed: {status:?}"
        );
    }
}

impl Drop for LocalTlsPostgres {
    fn drop(&mut self) {
        let data = self.data.display().to_string();
        let _ = self
            .command("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"])
            .status();
    }
}
