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
