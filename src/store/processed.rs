//! The idempotency record: one row per command id, holding its reply.
//!
//! The record is written by the command's closing statement
//! (`store::closing`), the last write of its transaction: a concurrent
//! delivery of the same id blocks on the primary key until the first
//! commits, then sees the row, rolls back its own work and becomes a
//! duplicate, answered with the reply stored here.

use sqlx::PgPool;

use super::StoreError;
use crate::domain::reply::Reply;

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
