//! The back-fill of `users.email_key` for users written before the column
//! existed (migration 0005 says why SQL cannot compute it).

use sqlx::PgPool;
use std::collections::HashMap;
use uuid::Uuid;

use super::StoreError;
use crate::domain::email::EmailKey;

/// Its advisory lock: replicas starting together take turns.
const LOCK: i64 = 0x756c_656d_6c6b_6579;
/// Users keyed per transaction.
const BATCH: i64 = 1_000;

/// Two users with one key: `kept` (the older) keeps it; `other` gets
/// `<key> <other>`, which no lookup matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Collision {
    /// The user that keeps the key.
    pub kept: Uuid,
    /// The user that no longer has it.
    pub other: Uuid,
}

/// Gives every user without a key its key, oldest first; returns the
/// collisions it found (each reported once: the user it marked has a key
/// after that). Nothing to do is one read of an empty index.
pub async fn backfill(pool: &PgPool) -> Result<Vec<Collision>, StoreError> {
    let mut collisions = Vec::new();
    loop {
        let mut tx = pool.begin().await?;
        // Waits for another replica's batch, however long it takes.
        sqlx::query("SET LOCAL lock_timeout = 0")
            .execute(&mut *tx)
            .await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(LOCK)
            .execute(&mut *tx)
            .await?;
        let missing: Vec<(Uuid, String)> = sqlx::query_as(
            "SELECT id, email FROM users WHERE email_key IS NULL
             ORDER BY created_at, id LIMIT $1",
        )
        .bind(BATCH)
        .fetch_all(&mut *tx)
        .await?;
        if missing.is_empty() {
            tx.commit().await?;
            return Ok(collisions);
        }
        let keys: Vec<String> = missing
            .iter()
            .map(|(_, email)| EmailKey::of(email).as_str().to_owned())
            .collect();
        let mut holders: HashMap<String, Uuid> =
            sqlx::query_as("SELECT email_key, id FROM users WHERE email_key = ANY($1)")
                .bind(&keys)
                .fetch_all(&mut *tx)
                .await?
                .into_iter()
                .collect();
        let mut ids = Vec::with_capacity(missing.len());
        let mut values = Vec::with_capacity(missing.len());
        for ((id, _), key) in missing.into_iter().zip(keys) {
            match holders.get(&key) {
                Some(&kept) => {
                    collisions.push(Collision { kept, other: id });
                    values.push(format!("{key} {id}"));
                }
                None => {
                    holders.insert(key.clone(), id);
                    values.push(key);
                }
            }
            ids.push(id);
        }
        sqlx::query(
            "UPDATE users u SET email_key = k.key
             FROM UNNEST($1::uuid[], $2::text[]) AS k(id, key) WHERE u.id = k.id",
        )
        .bind(&ids)
        .bind(&values)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
    }
}
