//! `expire-now`: runs the expiry sweep once, now, instead of waiting for
//! `EXPIRY_SCHEDULE`.
//!
//! It takes the scheduler's own advisory lock, so it never runs beside a
//! worker's sweep: if another process holds the lock it does nothing and
//! says so. It only writes to the database (statuses, audit, outbox rows);
//! the `user.invite_expired` events and the emails to the inviting managers
//! are delivered by a running worker's outbox relay. It applies no
//! migrations: the database must be the worker's.

use sqlx::PgPool;

use super::OpsError;
use crate::outbox::Wakeup;
use crate::scheduler::expiry::{SweepReport, sweep};
use crate::scheduler::lock::{keys, with_lock};
use crate::store;

/// Runs one sweep in batches of `batch` under the expiry lock.
pub async fn expire_now(database_url: &str, batch: i64) -> Result<SweepReport, OpsError> {
    if batch < 1 {
        return Err(OpsError::Usage(format!(
            "the batch size must be at least 1, not {batch}"
        )));
    }
    // One connection holds the lock, one runs the batches.
    let pool = store::connect(database_url, 2).await?;
    let result = run(&pool, batch).await;
    pool.close().await;
    result
}

async fn run(pool: &PgPool, batch: i64) -> Result<SweepReport, OpsError> {
    // Nobody to wake in this process: the worker's relay polls the outbox.
    let relay = Wakeup::default();
    with_lock(pool, keys::EXPIRY, || sweep(pool, batch, &relay))
        .await?
        .ok_or(OpsError::ExpiryLocked)
}
