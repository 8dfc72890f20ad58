//! The idempotency record: one row per command id, holding its reply and
//! the fingerprint of the command it was recorded for.
//!
//! The record is written by the command's closing statement
//! (`store::closing`), the last write of its transaction: a concurrent
//! delivery of the same id blocks on the primary key until the first
//! commits, then sees the row and rolls back its own work. It is a
//! duplicate, answered with the reply stored here, when its fingerprint is
//! the recorded one; otherwise it reuses the id for another command
//! (`domain::command_fingerprint`).

use sqlx::PgPool;
use std::collections::HashMap;

use super::StoreError;
use crate::domain::command_fingerprint::CommandFingerprint;
use crate::domain::reply::Reply;

/// An already processed command, as recorded.
#[derive(Debug, Clone)]
pub struct Processed {
    /// Its reply.
    pub reply: Reply,
    /// The fingerprint of the command recorded under the id; `None` for a
    /// record written before fingerprints were kept.
    pub fingerprint: Option<CommandFingerprint>,
}

/// The record of the command processed under `command_id`, if any.
pub async fn recorded(pool: &PgPool, command_id: &str) -> Result<Option<Processed>, StoreError> {
    let row: Option<(serde_json::Value, Option<Vec<u8>>)> =
        sqlx::query_as("SELECT reply, fingerprint FROM processed_commands WHERE command_id = $1")
            .bind(command_id)
            .fetch_optional(pool)
            .await?;
    row.map(|(reply, fingerprint)| processed(reply, fingerprint))
        .transpose()
}

/// Looks each id up through the primary key, whatever the plan cache
/// kept: a lateral lookup per id (its `LIMIT` keeps the planner from
/// turning it into a join that may scan every record).
const RECORDED_MANY: &str = "SELECT p.command_id, p.reply, p.fingerprint
     FROM unnest($1::text[]) AS wanted(id),
         LATERAL (SELECT command_id, reply, fingerprint FROM processed_commands
                  WHERE command_id = wanted.id LIMIT 1) AS p";

/// The statement [`recorded_many`] runs; public so a test can check its plan.
pub fn recorded_many_sql() -> &'static str {
    RECORDED_MANY
}

/// The records of those of `command_ids` processed already, by id, in one
/// round trip: a batch looks its commands up before it applies any.
pub async fn recorded_many(
    pool: &PgPool,
    command_ids: &[&str],
) -> Result<HashMap<String, Processed>, StoreError> {
    let rows: Vec<(String, serde_json::Value, Option<Vec<u8>>)> = sqlx::query_as(RECORDED_MANY)
        .bind(command_ids)
        .fetch_all(pool)
        .await?;
    rows.into_iter()
        .map(|(id, reply, fingerprint)| Ok((id, processed(reply, fingerprint)?)))
        .collect()
}

/// A record as read from its row's columns.
fn processed(
    reply: serde_json::Value,
    fingerprint: Option<Vec<u8>>,
) -> Result<Processed, StoreError> {
    let reply = serde_json::from_value(reply)
        .map_err(|e| StoreError::corrupt("processed_commands", e.to_string()))?;
    let fingerprint = fingerprint
        .map(|f| {
            CommandFingerprint::from_bytes(&f).ok_or_else(|| {
                StoreError::corrupt("processed_commands", "a fingerprint is not 32 bytes")
            })
        })
        .transpose()?;
    Ok(Processed { reply, fingerprint })
}
