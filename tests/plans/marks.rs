//! Marking delivered rows reads them through the primary key however large
//! the outbox has grown since the worker's connections first marked rows:
//! a plan made while the outbox was empty must not stay a scan of it.

use crate::helpers::PG_BASE;
use sqlx::{Executor, PgPool};
use user_lifecycle::store::{self, outbox};

/// Sequential scans of `outbox` so far, as `pool`'s one connection counted them.
async fn outbox_scans(pool: &PgPool) -> i64 {
    let mut conn = pool.acquire().await.unwrap();
    // This backend's counts go to the shared statistics now, and are read afresh.
    conn.execute("SELECT pg_stat_force_next_flush()")
        .await
        .unwrap();
    conn.execute("SELECT pg_stat_clear_snapshot()")
        .await
        .unwrap();
    sqlx::query_scalar("SELECT seq_scan FROM pg_stat_user_tables WHERE relname = 'outbox'")
        .fetch_one(&mut *conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn marking_rows_sent_stays_an_index_lookup_once_the_outbox_has_grown() {
    let name = format!(
        "ul_test_marks_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let url = format!("{PG_BASE}/{name}");
    store::migrate(&url).await.unwrap().close().await;
    // One connection, as a worker's pooled one that keeps its statements.
    let pool = store::connect(&url, 1).await.unwrap();
    // The first commands' rows, marked in batches as the relay marks them.
    sqlx::query(
        "INSERT INTO outbox (kind, payload) SELECT 'event', '{}' FROM generate_series(1, 40)",
    )
    .execute(&pool)
    .await
    .unwrap();
    let first: Vec<i64> = (1..=40).collect();
    for batch in first.chunks(4) {
        outbox::mark_sent(&pool, batch).await.unwrap();
    }
    sqlx::query(
        "INSERT INTO outbox (kind, payload, sent_at)
         SELECT 'event', '{}', now() FROM generate_series(1, 30000)",
    )
    .execute(&pool)
    .await
    .unwrap();
    let before = outbox_scans(&pool).await;
    for _ in 0..10 {
        outbox::mark_sent(&pool, &[100, 2_000, 30_000])
            .await
            .unwrap();
    }
    let after = outbox_scans(&pool).await;
    pool.close().await;
    let admin = store::connect(&format!("{PG_BASE}/postgres"), 1)
        .await
        .unwrap();
    admin
        .execute(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE \"{name}\" WITH (FORCE)"
        )))
        .await
        .unwrap();
    assert_eq!(after, before, "marking rows sent scanned the whole outbox");
}
