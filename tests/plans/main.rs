//! Query plans, apart from the contract: each test fills a table and checks
//! with EXPLAIN that a statement the worker prepares still reads through
//! its index. Slower to set up than a contract test, and about how the
//! store performs rather than what the worker answers, so a binary of
//! their own (`cargo test --test plans`), with the contract's harness.

#[path = "../api/helpers/mod.rs"]
mod helpers;

mod batch_reads;
mod claims;
mod marks;
mod one_statement;

/// The lines of an `EXPLAIN …` run on `db`, joined: a plan to check.
pub async fn plan(db: &mut sqlx::PgConnection, explain: &str) -> String {
    let lines: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(explain.to_owned()))
        .fetch_all(db)
        .await
        .expect("EXPLAIN runs");
    lines.join("\n")
}
