//! Runs a job under a PostgreSQL session advisory lock: one replica at a time.

use sqlx::PgPool;
use std::future::Future;

use crate::store::StoreError;

/// Advisory lock keys, one per job.
pub mod keys {
    /// The expiry sweep.
    pub const EXPIRY: i64 = 0x756c_6578_7069_7279;
    /// Housekeeping.
    pub const HOUSEKEEPING: i64 = 0x756c_686f_7573_656b;
}

/// Runs `job` if the lock `key` is free; `Ok(None)` when another holder has it.
pub async fn with_lock<F, Fut, T>(pool: &PgPool, key: i64, job: F) -> Result<Option<T>, StoreError>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    let mut conn = pool.acquire().await?;
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(key)
        .fetch_one(&mut *conn)
        .await?;
    if !locked {
        return Ok(None);
    }
    let result = job().await;
    let unlocked = sqlx::query_scalar::<_, bool>("SELECT pg_advisory_unlock($1)")
        .bind(key)
        .fetch_one(&mut *conn)
        .await;
    if unlocked.is_err() {
        // Closing the session releases the lock for sure.
        let _ = conn.close().await;
    }
    result.map(Some)
}
