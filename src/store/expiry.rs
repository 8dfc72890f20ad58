//! The expiry sweep's database side: expire one bounded batch of invites.

use chrono::{DateTime, Utc};
use sqlx::{AssertSqlSafe, PgPool, Row};
use std::collections::HashMap;
use uuid::Uuid;

use super::users::{self, UserRecord};
use super::{StoreError, Tx};
use crate::domain::user::UserSnapshot;

/// An invitation the sweep just expired, with what the notification needs.
#[derive(Debug, Clone)]
pub struct ExpiredInvite {
    /// The invited user.
    pub user_id: Uuid,
    /// Its organization.
    pub organization_id: String,
    /// The organization's name.
    pub organization_name: String,
    /// The invitee's email.
    pub email: String,
    /// The invitee's first name.
    pub first_name: String,
    /// The invitee's last name.
    pub last_name: String,
    /// When the activation token expired.
    pub expired_at: DateTime<Utc>,
    /// Who invited it (none for an organization's first manager).
    pub invited_by: Option<Uuid>,
    /// The invitee as the rules see it, now expired; `None` when its row
    /// does not read as one (logged), and then nobody is told.
    pub invitee: Option<UserSnapshot>,
    /// The inviting user as it is now, if any and its row reads.
    pub inviter: Option<UserRecord>,
}

/// A user read from a sweep's row, or `None` with the reason logged: one
/// row the rules cannot read must not stop every other expiry.
fn readable(user: Uuid, what: &str, read: Result<UserRecord, StoreError>) -> Option<UserRecord> {
    read.map_err(|e| {
        tracing::error!(user_id = %user, error = %e, "expiry sweep cannot read the {what}; it is not told");
    })
    .ok()
}

/// Opens a sweep batch's transaction, which commits without waiting for
/// the disk (`synchronous_commit = off`, for this transaction only).
///
/// A batch's row locks are held until its commit returns. A synchronous
/// commit waits for the WAL to reach the disk, and while a checkpoint
/// writes out its files that wait alone can take hundreds of milliseconds;
/// an asynchronous one lets go of the locks as soon as the commit is
/// written. Nothing is given up:
/// - the batch is still atomic: status, audit and outbox rows commit
///   together or not at all;
/// - what a database crash can lose is the last few batches (up to three
///   `wal_writer_delay`s of them), and only if nothing else saw them: the
///   outbox relay claims a row with a synchronous commit before it sends
///   anything, and a command that read an expired user commits
///   synchronously too; a synchronous commit writes the whole WAL before
///   its own commit record to disk, this batch's included;
/// - a lost batch leaves invitations `invited` with expired tokens, which
///   are refused at use regardless, and the next sweep expires them again,
///   with their event and email.
pub async fn begin_batch(pool: &PgPool) -> Result<Tx<'static>, StoreError> {
    Ok(pool
        .begin_with("BEGIN; SET LOCAL synchronous_commit = off")
        .await?)
}

/// Marks up to `limit` invited users whose activation expired before `now`,
/// and not before `from`, as expired, skipping rows other transactions
/// hold, and records the audit.
///
/// `from` lets a sweep start each batch where the last one ended: the
/// index on due invitations keeps an entry for every row already expired
/// until a vacuum, and a batch starting from the beginning would step over
/// all of them, a cost that grows with the sweep.
pub async fn expire_batch(
    tx: &mut Tx<'_>,
    now: DateTime<Utc>,
    from: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<ExpiredInvite>, StoreError> {
    let rows = sqlx::query(AssertSqlSafe(format!(
        "WITH due AS (
             SELECT id FROM users
             WHERE status = 'invited' AND activation_expires_at <= $1
               AND activation_expires_at >= $3
             ORDER BY activation_expires_at
             LIMIT $2
             FOR UPDATE SKIP LOCKED
         ), upd AS (
             UPDATE users u SET status = 'expired', updated_at = now()
             FROM due WHERE u.id = due.id
             RETURNING u.*
         ), audit AS (
             INSERT INTO audit_log (user_id, organization_id, action, before, after)
             SELECT id, organization_id, 'user.invite_expired',
                    '{{\"status\": \"invited\"}}'::jsonb, '{{\"status\": \"expired\"}}'::jsonb
             FROM upd
         )
         SELECT {invitee}, o.name AS organization_name, upd.activation_expires_at, {inviter}
         FROM upd
         JOIN organizations o ON o.id = upd.organization_id
         LEFT JOIN users m ON m.id = upd.invited_by",
        invitee = users::prefixed_columns("upd", ""),
        inviter = users::prefixed_columns("m", "m_"),
    )))
    .bind(now)
    .bind(limit)
    .bind(from)
    .fetch_all(&mut **tx)
    .await?;
    rows.iter()
        .map(|r| {
            let user_id: Uuid = r.try_get("id")?;
            let invited_by: Option<Uuid> = r.try_get("invited_by")?;
            let inviter = match r.try_get::<Option<Uuid>, _>("m_id")? {
                None => None,
                Some(_) => readable(user_id, "inviter", users::record_from_row(r, "m_")),
            };
            let invitee = readable(user_id, "invitee", users::record_from_row(r, ""));
            Ok(ExpiredInvite {
                user_id,
                organization_id: r.try_get("organization_id")?,
                organization_name: r.try_get("organization_name")?,
                email: r.try_get("email")?,
                first_name: r.try_get("first_name")?,
                last_name: r.try_get("last_name")?,
                expired_at: r.try_get("activation_expires_at")?,
                invited_by,
                invitee: invitee.map(|i| i.snapshot),
                inviter,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()
        .map_err(StoreError::from)
}

/// The active managers of `organizations`, by organization: whom an
/// expired invitation's notice may go to when its inviter no longer
/// manages the invitee. One statement for a whole sweep batch.
pub async fn active_managers(
    tx: &mut Tx<'_>,
    organizations: &[&str],
) -> Result<HashMap<String, Vec<UserRecord>>, StoreError> {
    let mut found: HashMap<String, Vec<UserRecord>> = HashMap::new();
    if organizations.is_empty() {
        return Ok(found);
    }
    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT {} FROM users
         WHERE organization_id = ANY($1) AND status = 'active' AND role = 'manager'
         ORDER BY organization_id, created_at, id",
        users::COLUMNS
    )))
    .bind(organizations)
    .fetch_all(&mut **tx)
    .await?;
    for row in &rows {
        let id: Uuid = row.try_get("id")?;
        if let Some(manager) = readable(id, "manager", users::record_from_row(row, "")) {
            found
                .entry(manager.snapshot.organization_id.as_str().to_owned())
                .or_default()
                .push(manager);
        }
    }
    Ok(found)
}
