//! The expiry sweep's database side: expire one bounded batch of invites.

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Row};
use uuid::Uuid;

use super::{StoreError, Tx};

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
    /// The inviting manager, if any: (id, email, first name, locale, status).
    pub inviter: Option<Inviter>,
}

/// The manager who sent an invitation.
#[derive(Debug, Clone)]
pub struct Inviter {
    /// Its id.
    pub id: Uuid,
    /// Its email.
    pub email: String,
    /// Its first name.
    pub first_name: String,
    /// Its last name.
    pub last_name: String,
    /// Its email locale.
    pub locale: String,
    /// Its status.
    pub status: String,
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
    let rows = sqlx::query(
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
             RETURNING u.id, u.organization_id, u.email, u.first_name, u.last_name,
                       u.invited_by, u.activation_expires_at
         ), audit AS (
             INSERT INTO audit_log (user_id, organization_id, action, before, after)
             SELECT id, organization_id, 'user.invite_expired',
                    '{\"status\": \"invited\"}'::jsonb, '{\"status\": \"expired\"}'::jsonb
             FROM upd
         )
         SELECT upd.id, upd.organization_id, o.name AS organization_name, upd.email, upd.first_name,
                upd.last_name, upd.activation_expires_at,
                m.id AS m_id, m.email AS m_email, m.first_name AS m_first, m.last_name AS m_last,
                m.locale AS m_locale, m.status AS m_status
         FROM upd
         JOIN organizations o ON o.id = upd.organization_id
         LEFT JOIN users m ON m.id = upd.invited_by",
    )
    .bind(now)
    .bind(limit)
    .bind(from)
    .fetch_all(&mut **tx)
    .await?;
    rows.into_iter()
        .map(|r| {
            let m_id: Option<Uuid> = r.try_get("m_id")?;
            let inviter = match m_id {
                None => None,
                Some(id) => Some(Inviter {
                    id,
                    email: r.try_get("m_email")?,
                    first_name: r.try_get("m_first")?,
                    last_name: r.try_get("m_last")?,
                    locale: r.try_get("m_locale")?,
                    status: r.try_get("m_status")?,
                }),
            };
            Ok(ExpiredInvite {
                user_id: r.try_get("id")?,
                organization_id: r.try_get("organization_id")?,
                organization_name: r.try_get("organization_name")?,
                email: r.try_get("email")?,
                first_name: r.try_get("first_name")?,
                last_name: r.try_get("last_name")?,
                expired_at: r.try_get("activation_expires_at")?,
                inviter,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()
        .map_err(StoreError::from)
}
