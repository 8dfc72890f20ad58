//! What a batch reads before it applies its commands (the command ids'
//! records, the inviting actors) goes through the primary keys, however
//! small the tables were when the statements were planned.

use crate::helpers::TestWorker;
use crate::plan;
use user_lifecycle::store::{processed, users};

#[tokio::test]
async fn a_batch_looks_its_ids_and_actors_up_through_their_primary_keys_whatever_the_table_sizes() {
    let w = TestWorker::start().await;
    let mut db = w.db().await;
    // As in a pooled connection that kept the plan made on near-empty tables.
    sqlx::query("SET plan_cache_mode = force_generic_plan")
        .execute(&mut db)
        .await
        .unwrap();
    let statements = [
        ("recorded", processed::recorded_many_sql().to_owned(), 1),
        ("actors", users::actors_and_organizations_sql(), 2),
        ("named", users::read_named_sql(), 3),
    ];
    let mut small = Vec::new();
    for (name, sql, params) in &statements {
        sqlx::query(sqlx::AssertSqlSafe(format!("PREPARE {name} AS {sql}")))
            .execute(&mut db)
            .await
            .unwrap();
        let explain = format!(
            "EXPLAIN EXECUTE {name}({})",
            vec!["NULL"; *params].join(", ")
        );
        small.push(plan(&mut db, &explain).await);
    }
    sqlx::query(
        "INSERT INTO processed_commands (command_id, command_type, status, reply)
         SELECT 'many-' || i, 'invite_user', 'applied', '{}' FROM generate_series(1, 5000) AS i",
    )
    .execute(&mut db)
    .await
    .unwrap();
    sqlx::raw_sql(
        "INSERT INTO organizations (id, name) VALUES ('acme', 'Acme');
         INSERT INTO users (id, organization_id, kind, email, email_key, first_name, last_name,
             phone, country, locale, role, permissions, status)
         SELECT gen_random_uuid(), 'acme', 'personal', 'many' || i || '@acme.example',
             'many' || i || '@acme.example', 'M', 'Any', '+31201234567', 'NL', 'en', 'user',
             '{}', 'active'
         FROM generate_series(1, 5000) AS i",
    )
    .execute(&mut db)
    .await
    .unwrap();
    for ((name, _, params), first) in statements.iter().zip(small) {
        let explain = format!(
            "EXPLAIN EXECUTE {name}({})",
            vec!["NULL"; *params].join(", ")
        );
        let kept = plan(&mut db, &explain).await;
        assert_eq!(
            first, kept,
            "{name}: the plan made on small tables is the one kept"
        );
        for table in ["users", "processed_commands"] {
            assert!(
                !kept.contains(&format!("Seq Scan on {table}")),
                "{name} reads {table} through an index only:\n{kept}"
            );
        }
    }
}
