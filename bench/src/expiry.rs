//! The expiry sweep over many expired invitations, next to a bare batched
//! `UPDATE` of the same rows, while `invite_user` commands keep coming.

use serde::Serialize;
use sqlx::PgPool;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::invites::Percentiles;
use crate::run::BenchError;
use user_lifecycle::broker::client::CommandClient;
use user_lifecycle::domain::envelope;
use user_lifecycle::handler::Handler;
use user_lifecycle::outbox::Wakeup;
use user_lifecycle::scheduler::expiry;

/// What the sweep run measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ExpiryFigures {
    /// Expired invitations processed.
    pub rows: u64,
    /// Sweep throughput (status, event and manager email queued per row).
    pub rows_per_s: f64,
    /// A bare batched `UPDATE … SET status = 'expired'` on the same rows.
    pub raw_update_rows_per_s: f64,
    /// The longest single sweep transaction.
    pub max_batch_ms: f64,
    /// Sweep transactions.
    pub batches: u32,
    /// `invite_user` handled during the sweep, command start to commit.
    pub concurrent_invite_ms: Percentiles,
    /// The slowest of those.
    pub concurrent_invite_max_ms: f64,
    /// How many ran during the sweep.
    pub concurrent_invites: usize,
}

async fn seed(
    pool: &PgPool,
    organization: &str,
    manager: uuid::Uuid,
    n: usize,
) -> Result<(), BenchError> {
    sqlx::query(
        "INSERT INTO users (id, organization_id, kind, email, email_key, first_name, last_name, phone,
                            country, locale, role, permissions, contract_accounts, delivery_accounts,
                            status, invited_by, activation_expires_at)
         SELECT gen_random_uuid(), $1, 'personal', 'expired' || g || '@bench.example',
                'expired' || g || '@bench.example', 'Expired', 'User ' || g,
                '+31201234567', 'NL', 'en', 'user', '{cases.view}', NULL, '{}', 'invited', $2,
                now() - interval '1 day' - g * interval '1 millisecond'
         FROM generate_series(1, $3) g",
    )
    .bind(organization)
    .bind(manager)
    .bind(n as i64)
    .execute(pool)
    .await?;
    sqlx::query("VACUUM ANALYZE users").execute(pool).await?;
    settle(pool).await;
    Ok(())
}

/// Writes out the dirty pages a million-row change left, so the measured
/// run that follows does not pay for the set-up's checkpoint. Needs a
/// superuser; without one the runs start unsettled (and say so).
async fn settle(pool: &PgPool) {
    if let Err(e) = sqlx::query("CHECKPOINT").execute(pool).await {
        eprintln!("no CHECKPOINT before the measured run ({e}); expect noisier batch times");
    }
}

async fn reset(pool: &PgPool) -> Result<(), BenchError> {
    sqlx::query("UPDATE users SET status = 'invited' WHERE status = 'expired' AND email LIKE 'expired%@bench.example'")
        .execute(pool)
        .await?;
    sqlx::query("DELETE FROM outbox").execute(pool).await?;
    sqlx::query("DELETE FROM audit_log WHERE action = 'user.invite_expired'")
        .execute(pool)
        .await?;
    sqlx::query("VACUUM ANALYZE users").execute(pool).await?;
    sqlx::query("VACUUM ANALYZE outbox").execute(pool).await?;
    settle(pool).await;
    Ok(())
}

async fn raw_update(pool: &PgPool, batch: i64) -> Result<(u64, Duration), BenchError> {
    let started = Instant::now();
    let mut rows = 0;
    loop {
        let n = sqlx::query(
            "UPDATE users SET status = 'expired', updated_at = now() WHERE id IN (
                 SELECT id FROM users WHERE status = 'invited' AND activation_expires_at <= now()
                 ORDER BY activation_expires_at LIMIT $1 FOR UPDATE SKIP LOCKED)",
        )
        .bind(batch)
        .execute(pool)
        .await?
        .rows_affected();
        rows += n;
        if (n as i64) < batch {
            return Ok((rows, started.elapsed()));
        }
    }
}

/// Seeds `n` expired invitations, times a bare batched UPDATE over them,
/// resets them, then times the sweep while invites run alongside.
pub async fn run(
    pool: &PgPool,
    handler: &Handler,
    organization: &str,
    manager: uuid::Uuid,
    n: usize,
    batch: i64,
) -> Result<ExpiryFigures, BenchError> {
    seed(pool, organization, manager, n).await?;
    let (raw_rows, raw_time) = raw_update(pool, batch).await?;
    reset(pool).await?;

    let done = Arc::new(AtomicBool::new(false));
    let invites = {
        let done = done.clone();
        let handler = handler.clone();
        let organization = organization.to_owned();
        let manager = manager.to_string();
        tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut i = 0;
            while !done.load(Ordering::Relaxed) {
                i += 1;
                let data = serde_json::json!({
                    "organization_id": organization, "delivery_account_id": null,
                    "user": {"type": "personal", "email": format!("during{i}@bench.example"), "first_name": "During",
                             "last_name": "Sweep", "phone": "+31201234567", "country": "NL"},
                    "role": "user", "permissions": ["cases.view"], "contract_accounts": "all", "delivery_accounts": [],
                });
                let body = serde_json::to_vec(&CommandClient::envelope(
                    "invite_user",
                    data,
                    Some(&manager),
                ))
                .unwrap_or_default();
                let Ok(env) = envelope::parse(&body) else {
                    break;
                };
                let started = Instant::now();
                if handler.handle(&env, None, &body).await.is_ok() {
                    latencies.push(started.elapsed().as_secs_f64() * 1000.0);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            latencies
        })
    };
    let started = Instant::now();
    let report = expiry::sweep(pool, batch, &Wakeup::default()).await?;
    let sweep_time = started.elapsed();
    done.store(true, Ordering::Relaxed);
    let latencies = invites.await.map_err(|e| BenchError::new(e.to_string()))?;
    Ok(ExpiryFigures {
        rows: report.expired,
        rows_per_s: report.expired as f64 / sweep_time.as_secs_f64(),
        raw_update_rows_per_s: raw_rows as f64 / raw_time.as_secs_f64(),
        max_batch_ms: report.longest_batch.as_secs_f64() * 1000.0,
        batches: report.batches,
        concurrent_invite_max_ms: latencies.iter().copied().fold(0.0, f64::max),
        concurrent_invites: latencies.len(),
        concurrent_invite_ms: Percentiles::of(latencies),
    })
}
