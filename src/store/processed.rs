//! The idempotency record: one row per command id, holding its reply.
//!
//! `claim` is the first statement of a command's transaction: a concurrent
//! delivery of the same id blocks on the primary key until the first commits,
//! then sees the row and becomes a duplicate.

use sqlx::PgPool;

use super::{StoreError, Tx};
use crate::domain::reply::Reply;

/// Claims `command_id` in `tx`. False when it was processed already.
pub async fn claim(
    tx: &mut Tx<'_>,
    command_id: &str,
    command_type: &str,
) -> Result<bool, StoreError> {
    let inserted = sqlx::query(
        "INSERT INTO processed_commands (command_id, command_type, status, reply)
         VALUES ($1, $2, 'pending', '{}'::jsonb) ON CONFLICT (command_id) DO NOTHING",
    )
    .bind(command_id)
    .bind(command_type)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

/// Stores the reply of the command claimed in `tx`.
pub async fn finish(tx: &mut Tx<'_>, command_id: &str, reply: &Reply) -> Result<(), StoreError> {
    let body = serde_json::to_value(reply)
        .map_err(|e| StoreError::corrupt("processed_commands", e.to_string()))?;
    sqlx::query("UPDATE processed_commands SET status = $2, reply = $3 WHERE command_id = $1")
        .bind(command_id)
        .bind(reply.status.as_str())
        .bind(body)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// The stored reply of an already processed command.
pub async fn reply_of(pool: &PgPool, command_id: &str) -> Result<Option<Reply>, StoreError> {
    let body: Option<serde_json::Value> =
        sqlx::query_scalar("SELECT reply FROM processed_commands WHERE command_id = $1")
            .bind(command_id)
            .fetch_optional(pool)
            .await?;
    body.map(|b| {
        serde_json::from_value(b)
            .map_err(|e| StoreError::corrupt("processed_commands", e.to_string()))
    })
    .transpose()
}
