//! One-time tokens, stored as SHA-256 hashes only.

use chrono::{DateTime, Utc};
use sqlx::Row;
use uuid::Uuid;

use super::{StoreError, Tx};
use crate::domain::ids::UserId;
use crate::domain::token::{TokenHash, TokenPurpose, TokenRecord};

/// Stores a new token's hash for `user`, issued at `issued_at` (the
/// command's clock, the same one its expiry and cooldown are measured on).
pub async fn insert(
    tx: &mut Tx<'_>,
    hash: &TokenHash,
    user: UserId,
    purpose: TokenPurpose,
    issued_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO tokens (hash, user_id, purpose, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(hash.as_bytes())
    .bind(user.as_uuid())
    .bind(purpose.as_str())
    .bind(issued_at)
    .bind(expires_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Revokes every live token of `user` for `purpose` (all purposes when `None`).
pub async fn revoke_all(
    tx: &mut Tx<'_>,
    user: UserId,
    purpose: Option<TokenPurpose>,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE tokens SET revoked_at = now()
         WHERE user_id = $1 AND ($2::text IS NULL OR purpose = $2) AND used_at IS NULL AND revoked_at IS NULL",
    )
    .bind(user.as_uuid())
    .bind(purpose.map(TokenPurpose::as_str))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// When the last token of `purpose` was issued to `user`.
pub async fn last_issued_at(
    tx: &mut Tx<'_>,
    user: UserId,
    purpose: TokenPurpose,
) -> Result<Option<DateTime<Utc>>, StoreError> {
    Ok(
        sqlx::query_scalar(
            "SELECT max(created_at) FROM tokens WHERE user_id = $1 AND purpose = $2",
        )
        .bind(user.as_uuid())
        .bind(purpose.as_str())
        .fetch_one(&mut **tx)
        .await?,
    )
}

/// When each token of either purpose issued to `user` after `since` was
/// issued (one email each: invitation, resend, reset), for the daily cap.
pub async fn issued_since(
    tx: &mut Tx<'_>,
    user: UserId,
    since: DateTime<Utc>,
) -> Result<Vec<DateTime<Utc>>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT created_at FROM tokens
         WHERE user_id = $1 AND purpose IN ('activation', 'password_reset') AND created_at > $2",
    )
    .bind(user.as_uuid())
    .bind(since)
    .fetch_all(&mut **tx)
    .await?)
}

/// Finds a token by hash, locking it; returns its owner and state.
pub async fn lock_by_hash(
    tx: &mut Tx<'_>,
    hash: &TokenHash,
) -> Result<Option<(UserId, TokenRecord)>, StoreError> {
    let row = sqlx::query(
        "SELECT user_id, purpose, expires_at, used_at, revoked_at FROM tokens WHERE hash = $1 FOR UPDATE",
    )
    .bind(hash.as_bytes())
    .fetch_optional(&mut **tx)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let purpose: String = row.try_get("purpose")?;
    let purpose = match purpose.as_str() {
        "activation" => TokenPurpose::Activation,
        "password_reset" => TokenPurpose::PasswordReset,
        other => return Err(StoreError::corrupt("tokens", format!("purpose {other}"))),
    };
    let user: Uuid = row.try_get("user_id")?;
    Ok(Some((
        UserId(user),
        TokenRecord {
            purpose,
            expires_at: row.try_get("expires_at")?,
            used_at: row.try_get("used_at")?,
            revoked_at: row.try_get("revoked_at")?,
        },
    )))
}

/// Marks the token used.
pub async fn mark_used(
    tx: &mut Tx<'_>,
    hash: &TokenHash,
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE tokens SET used_at = $2 WHERE hash = $1")
        .bind(hash.as_bytes())
        .bind(at)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Deletes the tokens that stopped being usable (used, revoked or expired)
/// longer than `dead_for` ago and were issued longer than `issued_for`
/// ago; returns how many. Live tokens are never deleted.
pub async fn prune(
    pool: &sqlx::PgPool,
    dead_for: std::time::Duration,
    issued_for: std::time::Duration,
) -> Result<u64, StoreError> {
    Ok(sqlx::query(
        "DELETE FROM tokens
         WHERE created_at < now() - $2 * interval '1 millisecond'
           AND (used_at < now() - $1 * interval '1 millisecond'
             OR revoked_at < now() - $1 * interval '1 millisecond'
             OR expires_at < now() - $1 * interval '1 millisecond')",
    )
    .bind(dead_for.as_millis() as f64)
    .bind(issued_for.as_millis() as f64)
    .execute(pool)
    .await?
    .rows_affected())
}
