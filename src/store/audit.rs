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

/// An audit record held until its command's rows are written together.
#[derive(Debug, Clone)]
pub struct AuditRow {
    command_id: Option<String>,
    actor_id: Option<Uuid>,
    user_id: Option<Uuid>,
    organization_id: String,
    action: String,
    before: Option<Value>,
    after: Option<Value>,
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

/// Appends `rows` in `tx`, in order, in one statement.
pub async fn insert(tx: &mut Tx<'_>, rows: &[AuditRow]) -> Result<(), StoreError> {
    if rows.is_empty() {
        return Ok(());
    }
    let column = |f: fn(&AuditRow) -> Option<Uuid>| rows.iter().map(f).collect::<Vec<_>>();
    sqlx::query(
        "INSERT INTO audit_log (command_id, actor_id, user_id, organization_id, action, before, after)
         SELECT * FROM UNNEST($1::text[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::jsonb[], $7::jsonb[])",
    )
    .bind(rows.iter().map(|r| r.command_id.clone()).collect::<Vec<_>>())
    .bind(column(|r| r.actor_id))
    .bind(column(|r| r.user_id))
    .bind(rows.iter().map(|r| r.organization_id.clone()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.action.clone()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.before.clone()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.after.clone()).collect::<Vec<_>>())
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
