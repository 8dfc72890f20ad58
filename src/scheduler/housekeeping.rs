//! Housekeeping: prune delivered outbox rows and old idempotency records.

use sqlx::PgPool;
use std::time::Duration;

use super::lock::{keys, with_lock};
use crate::store::{outbox, stats};
use crate::telemetry::metrics;

/// Delivered outbox rows are kept this long (for investigations).
pub const OUTBOX_RETENTION: Duration = Duration::from_secs(7 * 86_400);
/// Command ids are remembered this long; a redelivery later than that is
/// not expected from RabbitMQ.
pub const PROCESSED_RETENTION_DAYS: i32 = 30;

/// One housekeeping run.
pub async fn run(pool: &PgPool) {
    let result = with_lock(pool, keys::HOUSEKEEPING, || async {
        let outbox = outbox::prune_sent(pool, OUTBOX_RETENTION).await?;
        let processed = stats::prune_processed(pool, PROCESSED_RETENTION_DAYS).await?;
        Ok((outbox, processed))
    })
    .await;
    match result {
        Ok(Some((outbox, processed))) => {
            tracing::info!(outbox, processed, "housekeeping pruned old rows");
            metrics::scheduler_run("housekeeping", "ok");
        }
        Ok(None) => metrics::scheduler_run("housekeeping", "skipped"),
        Err(e) => {
            tracing::error!(error = %e, "housekeeping failed");
            metrics::scheduler_run("housekeeping", "error");
        }
    }
}
