//! The one statement that writes invites without a transaction (see
//! tests/api/one_statement.rs) keeps a plan that reads through indexes.

use crate::helpers::TestWorker;
use crate::plan;

#[tokio::test]
async fn the_statement_finds_taken_emails_and_recorded_ids_through_their_unique_indexes_whatever_the_table_sizes_when_it_was_planned()
 {
    use sqlx::Connection as _;
    // A worker with an active manager who has invited once since it started.
    let (mut w, manager) = TestWorker::with_active_manager(&[]).await;
    let first = w.invite(&manager, "acme", "first@acme.example").await;
    assert_eq!(first["status"], "applied", "{first}");
    let mut db = w.db().await;
    // A pooled connection prepares the statement once and keeps its plan:
    // made while the tables were nearly empty (a new database, no
    // statistics), it must still not read every row once they are large.
    sqlx::query("SET plan_cache_mode = force_generic_plan")
        .execute(&mut db)
        .await
        .unwrap();
    let mut tx = db.begin().await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "PREPARE checked AS {}",
        user_lifecycle::store::closing::checked_sql()
    )))
    .execute(&mut *tx)
    .await
    .unwrap();
    let explain = format!("EXPLAIN EXECUTE checked({})", vec!["NULL"; 41].join(", "));
    let first = plan(&mut tx, &explain).await;
    sqlx::query(
        "INSERT INTO users (id, organization_id, kind, email, email_key, first_name, last_name,
             phone, country, locale, role, permissions, status)
         SELECT gen_random_uuid(), 'acme', 'personal', 'many' || i || '@acme.example',
             'many' || i || '@acme.example', 'M', 'Any', '+31201234567', 'NL', 'en', 'user',
             '{}', 'active'
         FROM generate_series(1, 5000) AS i",
    )
    .execute(&mut *tx)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO processed_commands (command_id, command_type, status, reply)
         SELECT 'many-' || i, 'invite_user', 'applied', '{}' FROM generate_series(1, 5000) AS i",
    )
    .execute(&mut *tx)
    .await
    .unwrap();
    let kept = plan(&mut tx, &explain).await;
    tx.rollback().await.unwrap();
    assert_eq!(first, kept, "the plan made on small tables is the one kept");
    for table in ["users", "processed_commands"] {
        assert!(
            !kept.contains(&format!("Seq Scan on {table}")),
            "the one statement reads {table} through an index only:\n{kept}"
        );
    }
}
