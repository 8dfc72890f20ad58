//! How many rows PostgreSQL read for the worker: per command, in all and by
//! sequential scans.
//!
//! A statement planned as a scan of a table that grows with every command
//! costs little in a short run and a great deal in production; the rates
//! and latencies hide it in their noise, this count does not. (A guard
//! query on the one-statement invite path was such a plan; see
//! docs/decisions/0004-one-statement-invite-batches.md.)

use serde::Serialize;
use sqlx::PgPool;
use std::time::{Duration, Instant};

/// Rows read by the bench database's backends so far (their statistics).
#[derive(Debug, Clone, Copy, Default)]
pub struct RowsRead {
    /// Backends connected besides the bench's own reading connection.
    connected: i64,
    /// Rows read by sequential scans.
    scanned: i64,
    /// Rows read through indexes.
    fetched: i64,
}

/// What the worker's backends read, per command.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct ReadsPerCommand {
    /// Rows read in all (sequential scans and index fetches).
    pub rows: f64,
    /// Rows read by sequential scans.
    pub scanned_rows: f64,
}

/// The counts now, and how many other backends are connected.
pub async fn rows_read(pool: &PgPool) -> Result<RowsRead, sqlx::Error> {
    let (connected, scanned, fetched): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM pg_stat_activity
                 WHERE datname = current_database() AND backend_type = 'client backend'
                   AND pid <> pg_backend_pid()),
                COALESCE(sum(seq_tup_read), 0)::bigint,
                COALESCE(sum(idx_tup_fetch), 0)::bigint
         FROM pg_stat_user_tables",
    )
    .fetch_one(pool)
    .await?;
    Ok(RowsRead {
        connected,
        scanned,
        fetched,
    })
}

/// What was read since `before` (taken before the worker started), per
/// command, once the stopped worker's backends have gone (a backend
/// reports the last of its counts as it exits). `None` if they are still
/// there after 5 s.
pub async fn since(
    pool: &PgPool,
    before: RowsRead,
    commands: usize,
) -> Result<Option<ReadsPerCommand>, sqlx::Error> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let after = loop {
        let now = rows_read(pool).await?;
        if now.connected <= before.connected {
            break now;
        }
        if Instant::now() > deadline {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let per = |n: i64| n as f64 / commands.max(1) as f64;
    Ok(Some(ReadsPerCommand {
        rows: per(after.scanned + after.fetched - before.scanned - before.fetched),
        scanned_rows: per(after.scanned - before.scanned),
    }))
}
