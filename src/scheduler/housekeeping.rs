//! Housekeeping: prune delivered and failed outbox rows, dead tokens and
//! old idempotency records. The audit trail is never pruned.

use sqlx::PgPool;
use std::time::Duration;

use super::lock::{keys, with_lock};
use crate::domain::mail_cap;
use crate::store::{outbox, stats, tokens};
use crate::telemetry::metrics;

/// Delivered outbox rows are kept this long (for investigations).
pub const OUTBOX_RETENTION: Duration = Duration::from_secs(7 * 86_400);
/// Command ids are remembered this long; a redelivery later than that is
/// not expected from RabbitMQ.
pub const PROCESSED_RETENTION_DAYS: i32 = 30;

/// How long what is no longer needed is kept (`TOKEN_RETENTION`,
/// `FAILED_OUTBOX_RETENTION`).
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// A used, revoked or expired token, from when it stopped being usable.
    pub tokens: Duration,
    /// An outbox row given up on, from when it was.
    pub failed_outbox: Duration,
}

/// One housekeeping run.
pub async fn run(pool: &PgPool, retention: Retention) {
    // A token issued within the cap's window still counts towards it.
    let counted = mail_cap::window().to_std().unwrap_or_default();
    let result = with_lock(pool, keys::HOUSEKEEPING, || async {
        let outbox = outbox::prune(pool, OUTBOX_RETENTION, retention.failed_outbox).await?;
        let tokens = tokens::prune(pool, retention.tokens, counted).await?;
        let processed = stats::prune_processed(pool, PROCESSED_RETENTION_DAYS).await?;
        Ok((outbox, tokens, processed))
    })
    .await;
    match result {
        Ok(Some((outbox, tokens, processed))) => {
            tracing::info!(outbox, tokens, processed, "housekeeping pruned old rows");
            metrics::scheduler_run("housekeeping", "ok");
        }
        Ok(None) => metrics::scheduler_run("housekeeping", "skipped"),
        Err(e) => {
            tracing::error!(error = %e, "housekeeping failed");
            metrics::scheduler_run("housekeeping", "error");
        }
    }
}
