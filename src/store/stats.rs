//! Figures for the gauges: users by status (summed from the net changes
//! the `users` triggers record, folded as they are read), outbox backlog.

use sqlx::{PgPool, Row};

use super::StoreError;
use super::outbox::{due_emails, due_publications};

/// Point-in-time figures the telemetry exports as gauges.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// (status, count) for every status present.
    pub users: Vec<(String, i64)>,
    /// Outbox rows not yet delivered nor failed.
    pub outbox_pending: i64,
    /// Age of the oldest pending row, in seconds (0 when none).
    pub outbox_oldest_age_seconds: f64,
}

/// Reads the current figures.
pub async fn read(pool: &PgPool) -> Result<Stats, StoreError> {
    // Users by status are the sum of the net changes the triggers of
    // migration 0004 record (not a count of every user, which would read
    // the whole table each time). First fold those rows into one per
    // status: each row is deleted by one fold only, and its value written
    // back in the same transaction, so folds by several replicas at once
    // keep the sums; when every status has one row already it writes
    // nothing (an idle worker rewrites no rows). Then sum in a statement of
    // its own, whose snapshot sees any concurrent fold whole or not at all.
    sqlx::query(
        "WITH folded AS (
             DELETE FROM user_status_changes
             WHERE EXISTS (SELECT FROM user_status_changes GROUP BY status HAVING count(*) > 1)
             RETURNING status, delta)
         INSERT INTO user_status_changes (status, delta)
         SELECT status, sum(delta) FROM folded GROUP BY status HAVING sum(delta) <> 0",
    )
    .execute(pool)
    .await?;
    let users = sqlx::query(
        "SELECT status, sum(delta)::bigint AS n FROM user_status_changes GROUP BY status",
    )
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(|r| Ok((r.try_get("status")?, r.try_get("n")?)))
    .collect::<Result<Vec<_>, sqlx::Error>>()?;
    // One part per lane, each through its index of due rows, so neither
    // reads the delivered rows kept for a week.
    let row = sqlx::query(concat!(
        "SELECT COALESCE(sum(n), 0)::bigint AS n,
                COALESCE(EXTRACT(EPOCH FROM now() - min(oldest))::float8, 0) AS age
         FROM (SELECT count(*) AS n, min(created_at) AS oldest FROM outbox WHERE ",
        due_emails!(),
        " UNION ALL SELECT count(*), min(created_at) FROM outbox WHERE ",
        due_publications!(),
        ") AS lanes"
    ))
    .fetch_one(pool)
    .await?;
    Ok(Stats {
        users,
        outbox_pending: row.try_get("n")?,
        outbox_oldest_age_seconds: row.try_get("age")?,
    })
}

/// Deletes idempotency records older than `days`; returns how many.
pub async fn prune_processed(pool: &PgPool, days: i32) -> Result<u64, StoreError> {
    Ok(sqlx::query(
        "DELETE FROM processed_commands WHERE processed_at < now() - make_interval(days => $1)",
    )
    .bind(days)
    .execute(pool)
    .await?
    .rows_affected())
}
