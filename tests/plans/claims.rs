//! The outbox relay's claims keep a plan that reads only the due rows of
//! their own lane, however many delivered rows the outbox holds.

use crate::helpers::TestWorker;
use crate::plan;
use uuid::Uuid;

#[tokio::test]
async fn each_lane_claims_through_its_own_index_of_due_rows_not_the_delivered_ones() {
    use user_lifecycle::store::outbox::Lane;
    let w = TestWorker::start().await;
    let mut db = w.db().await;
    // A week of delivered rows, and a few not due yet (the worker leaves them).
    sqlx::query(
        "INSERT INTO outbox (kind, payload, sent_at)
         SELECT (ARRAY['email', 'event', 'reply'])[1 + i % 3], '{}', now()
         FROM generate_series(1, 30000) AS i",
    )
    .execute(&mut db)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO outbox (kind, payload, available_at)
         SELECT (ARRAY['email', 'event'])[1 + i % 2], '{}', now() + interval '1 day'
         FROM generate_series(1, 20) AS i",
    )
    .execute(&mut db)
    .await
    .unwrap();
    sqlx::query("ANALYZE outbox")
        .execute(&mut db)
        .await
        .unwrap();
    // The plan a claim gets once the statement is prepared and reused.
    sqlx::query("SET plan_cache_mode = force_generic_plan")
        .execute(&mut db)
        .await
        .unwrap();
    for (lane, index) in [
        (Lane::Emails, "outbox_due_emails_idx"),
        (Lane::Publications, "outbox_due_publications_idx"),
    ] {
        let name = format!("claim_{}", lane.name());
        // Only the lane's own name and statement go into these two.
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "PREPARE {name} AS {}",
            lane.claim_sql()
        )))
        .execute(&mut db)
        .await
        .unwrap();
        let plan = plan(
            &mut db,
            &format!("EXPLAIN EXECUTE {name}(100, 60000, '{}')", Uuid::new_v4()),
        )
        .await;
        assert!(
            plan.contains(index) && !plan.contains("Seq Scan"),
            "a claim of {} reads {index} only:\n{plan}",
            lane.name()
        );
    }
}
