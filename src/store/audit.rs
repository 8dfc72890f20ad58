//! The audit trail: who changed what about a user, and when.

use serde_json::Value;
use uuid::Uuid;

use super::StoreError;

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

/// An audit record held until its command's rows are written together
/// (by `store::closing`).
#[derive(Debug, Clone)]
pub struct AuditRow {
    pub(super) command_id: Option<String>,
    pub(super) actor_id: Option<Uuid>,
    pub(super) user_id: Option<Uuid>,
    pub(super) organization_id: String,
    pub(super) action: String,
    pub(super) before: Option<Value>,
    pub(super) after: Option<Value>,
}

impl From<AuditEntry<'_>> for AuditRow {
    fn from(e: AuditEntry<'_>) -> AuditRow {
        AuditRow {
            command_id: e.command_id.map(str::to_owned),
            actor_id: e.actor_id,
            user_id: e.user_id,
            organization_id: e.organization_id.to_owned(),
            action: e.action.to_owned(),
            before: e.before,
            after: e.after,
        }
    }
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
