//! The idempotency record: one row per command id, holding its reply.
//!
//! `record` is the last write of a command's transaction: a concurrent
//! delivery of the same id blocks on the primary key until the first commits,
//! then sees the row, rolls back its own work and becomes a duplicate.

use sqlx::PgPool;

use super::{StoreError, Tx};
use crate::domain::reply::Reply;

/// Records `command_id` as processed with `reply`, in `tx`. False when it
/// was recorded already (by a delivery that committed first; a concurrent
/// one is waited for by the primary key).
pub async fn record(
    tx: &mut Tx<'_>,
    command_id: &str,
    command_type: &str,
    reply: &Reply,
) -> Result<bool, StoreError> {
    let recorded = record_many(tx, &[(command_id, command_type, reply)]).await?;
    Ok(!recorded.is_empty())
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

/// Records several commands at once, in `tx` (a batch of distinct ids).
/// Returns the ids that were recorded now; an id missing from the answer
/// was recorded already (or is being recorded by a concurrent delivery,
/// which the primary key waits for).
pub async fn record_many(
    tx: &mut Tx<'_>,
    records: &[(&str, &str, &Reply)],
) -> Result<Vec<String>, StoreError> {
    let mut ids = Vec::with_capacity(records.len());
    let mut types = Vec::with_capacity(records.len());
    let mut statuses = Vec::with_capacity(records.len());
    let mut bodies = Vec::with_capacity(records.len());
    for (id, kind, reply) in records {
        ids.push(*id);
        types.push(*kind);
        statuses.push(reply.status.as_str());
        bodies.push(
            serde_json::to_value(reply)
                .map_err(|e| StoreError::corrupt("processed_commands", e.to_string()))?,
        );
    }
    Ok(sqlx::query_scalar(
        "INSERT INTO processed_commands (command_id, command_type, status, reply)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::jsonb[])
         ON CONFLICT (command_id) DO NOTHING
         RETURNING command_id",
    )
    .bind(ids)
    .bind(types)
    .bind(statuses)
    .bind(bodies)
    .fetch_all(&mut **tx)
    .await?)
}
