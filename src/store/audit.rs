//! The audit trail: who changed what about a user, and when.

use serde_json::Value;
use uuid::Uuid;

use super::{StoreError, Tx};

/// One audit record.
#[derive(Debug, Clone)]
pub struct AuditEntry<'a> {
    /// The command that caused it.
    pub command_id: Option<&'a str>,
    /// Who acted (`None` for system commands, public commands and the scheduler).
    pub actor_id: Option<Uuid>,
    /// Whom it concerns.
    pub user_id: Option<Uuid>,
    /// The organization.
    pub organization_id: &'a str,
    /// What happened, e.g. `user.invited`.
    pub action: &'a str,
    /// State before (for changes).
    pub before: Option<Value>,
    /// State after.
    pub after: Option<Value>,
}

/// Appends `entry` in `tx`.
pub async fn record(tx: &mut Tx<'_>, entry: AuditEntry<'_>) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO audit_log (command_id, actor_id, user_id, organization_id, action, before, after)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(entry.command_id)
    .bind(entry.actor_id)
    .bind(entry.user_id)
    .bind(entry.organization_id)
    .bind(entry.action)
    .bind(entry.before)
    .bind(entry.after)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A user's audit trail, oldest first, as JSON records.
pub async fn history(pool: &sqlx::PgPool, user_id: Uuid) -> Result<Vec<Value>, StoreError> {
    let rows: Vec<Value> = sqlx::query_scalar(
        "SELECT jsonb_build_object(
                    'at', at, 'action', action, 'command_id', command_id, 'actor_id', actor_id,
                    'organization_id', organization_id, 'before', before, 'after', after)
         FROM audit_log WHERE user_id = $1 ORDER BY at, id",
    )
    .bind(user_id)
    .fetch_all(pool)
    .await?;
    Ok(rows)
}
