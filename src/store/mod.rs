//! PostgreSQL persistence (sqlx): state, idempotency record, outbox, audit.
//!
//! Every command runs in one transaction opened by the handler; the
//! functions here take that transaction so the state change, the outbox rows
//! and the processed-command row commit together or not at all. The one
//! exception, `closing::write_checked`, writes all of that in a single
//! statement, which is a transaction of its own.

#![cfg(feature = "worker")]

pub mod accounts;
pub mod audit;
pub mod closing;
pub mod email_keys;
pub mod expiry;
pub mod fingerprint;
pub mod outbox;
pub mod payload;
pub mod processed;
pub mod stats;
pub mod tokens;
pub mod users;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgSslMode};
use sqlx::{ConnectOptions, Executor, PgPool};
use std::str::FromStr;
use std::time::Duration;
use thiserror::Error;

/// A database transaction as the store functions take it.
pub type Tx<'a> = sqlx::Transaction<'a, sqlx::Postgres>;

/// A statement with its parameters being bound (for helpers that bind a
/// part of a statement's parameters).
pub(crate) type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// Errors of the store; all of them are worth a retry unless stated.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The database answered with an error or is unreachable.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// Migrations could not be applied.
    #[error(transparent)]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored row does not map to a domain value (a bug or manual edit).
    #[error("corrupt row in {table}: {detail}")]
    Corrupt {
        /// The table.
        table: &'static str,
        /// What did not parse.
        detail: String,
    },
}

impl StoreError {
    /// True when the database is unreachable, restarting or refusing
    /// connections: not the command's fault, so it is waited out, not counted.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Database(e) => match e {
                sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed => true,
                sqlx::Error::Database(db) => db
                    .code()
                    .is_some_and(|c| c.starts_with("08") || c.starts_with("57P")),
                _ => false,
            },
            _ => false,
        }
    }

    pub(crate) fn corrupt(table: &'static str, detail: impl Into<String>) -> StoreError {
        StoreError::Corrupt {
            table,
            detail: detail.into(),
        }
    }
}

/// The migrations embedded in the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Creates the database named in `url` if it does not exist yet.
pub async fn create_database_if_missing(url: &str) -> Result<(), StoreError> {
    let options = PgConnectOptions::from_str(url)?;
    let Some(name) = options.get_database().map(str::to_owned) else {
        return Ok(());
    };
    let mut admin = options.clone().database("postgres").connect().await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&mut admin)
            .await?;
    if !exists {
        let quoted = format!("\"{}\"", name.replace('"', "\"\""));
        let create = sqlx::AssertSqlSafe(format!("CREATE DATABASE {quoted}"));
        match admin.execute(create).await {
            Ok(_) => tracing::info!(database = %name, "created database"),
            // Another replica created it at the same moment.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P04") => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Connects a pool of `max_connections` to `url`.
pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool, StoreError> {
    connect_with_timeouts(
        url,
        max_connections,
        Duration::from_secs(5),
        Duration::from_secs(30),
    )
    .await
}

/// The connection options of `url`. A loopback server reached without an
/// explicit `sslmode` is reached without TLS: the bytes never leave the
/// machine, and encrypting them costs both sides CPU on every statement.
/// Any `sslmode` in the URL is obeyed as written.
pub fn connect_options(url: &str) -> Result<PgConnectOptions, StoreError> {
    let options = PgConnectOptions::from_str(url)?;
    let loopback = options
        .get_host()
        .parse::<std::net::IpAddr>()
        .map(|ip| ip.is_loopback())
        .unwrap_or_else(|_| {
            options.get_host() == "localhost" || options.get_host().starts_with('/')
        });
    if loopback && !url.contains("sslmode=") {
        return Ok(options.ssl_mode(PgSslMode::Disable));
    }
    Ok(options)
}

/// Connects a pool whose sessions give up waiting for a lock after
/// `lock_timeout` and abort statements after `statement_timeout`, so a stuck
/// row or query turns into a retryable error instead of a stuck consumer.
pub async fn connect_with_timeouts(
    url: &str,
    max_connections: u32,
    lock_timeout: Duration,
    statement_timeout: Duration,
) -> Result<PgPool, StoreError> {
    let options = connect_options(url)?.options([
        ("lock_timeout", format!("{}ms", lock_timeout.as_millis())),
        (
            "statement_timeout",
            format!("{}ms", statement_timeout.as_millis()),
        ),
    ]);
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        // No ping before each use (a round trip per transaction, claim and
        // mark): a connection that died is found out by the statement that
        // uses it, which fails as "unavailable" and is retried, and sqlx
        // closes that connection.
        .test_before_acquire(false)
        .connect_with(options)
        .await?;
    Ok(pool)
}

/// Applies pending migrations, then what they leave to the worker: the
/// email key of every user written before there were keys (migration
/// 0005). Each pair of users found with one key is logged as a warning
/// naming both, and returned.
pub async fn apply_migrations(pool: &PgPool) -> Result<Vec<email_keys::Collision>, StoreError> {
    MIGRATOR.run(pool).await?;
    let collisions = email_keys::backfill(pool).await?;
    for c in &collisions {
        tracing::warn!(
            kept_user_id = %c.kept,
            other_user_id = %c.other,
            "two users have one email address: the older keeps it, the other is no longer \
             found by it until someone decides (users.email_key)"
        );
    }
    Ok(collisions)
}

/// Creates the database if needed and applies pending migrations (as
/// [`apply_migrations`] does).
pub async fn migrate(url: &str) -> Result<PgPool, StoreError> {
    create_database_if_missing(url).await?;
    let pool = connect(url, 2).await?;
    apply_migrations(&pool).await?;
    Ok(pool)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(url: &str) -> PgSslMode {
        connect_options(url).expect("a valid URL").get_ssl_mode()
    }

    #[test]
    fn a_loopback_server_without_sslmode_is_reached_without_tls() {
        assert!(matches!(
            mode("postgres://postgres@127.0.0.1:5432/db"),
            PgSslMode::Disable
        ));
        assert!(matches!(
            mode("postgres://postgres@localhost/db"),
            PgSslMode::Disable
        ));
    }

    #[test]
    fn an_explicit_sslmode_and_a_remote_server_keep_tls() {
        assert!(matches!(
            mode("postgres://postgres@127.0.0.1/db?sslmode=require"),
            PgSslMode::Require
        ));
        assert!(matches!(
            mode("postgres://postgres@db.example.com/db"),
            PgSslMode::Prefer
        ));
    }
}
