//! A command's closing write: what it leaves besides its own work, in one
//! statement.
//!
//! Every command, and every batch of them, ends with the same writes: the
//! invited users a batch held back, the idempotency records, the audit rows
//! and the outbox rows. Each on its own is a round trip while the
//! transaction holds its locks; written as one statement of data-modifying
//! `WITH` items they are one. Nothing about the guarantees changes: they
//! still commit with the command's work or not at all, and a command id
//! recorded already (or being recorded by a concurrent delivery, which its
//! primary key waits for) comes back as not recorded, for the caller to roll
//! everything back.

use serde_json::value::RawValue;
use sqlx::Row;
use sqlx::types::Json;
use std::collections::HashSet;
use std::time::Instant;
use uuid::Uuid;

use super::audit::AuditRow;
use super::outbox::{Claim, ClaimedRow, NewOutboxRow};
use super::users::{InvitedUsers, invite_ctes};
use super::{StoreError, Tx};
use crate::domain::reply::Reply;

/// An idempotency record: the command's id and type, and its reply.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    /// The command id (primary key of `processed_commands`).
    pub command_id: &'a str,
    /// The command type.
    pub command_type: &'a str,
    /// The reply a later delivery of the same id gets.
    pub reply: &'a Reply,
}

/// What a command, or a batch of commands, writes last.
#[derive(Debug)]
pub struct Closing<'a> {
    /// Invited users a batch held back (see `handler::batch`).
    pub invited: &'a InvitedUsers,
    /// The commands' idempotency records.
    pub records: &'a [Record<'a>],
    /// Their audit rows, in order.
    pub audit: &'a [AuditRow],
    /// Their outbox rows.
    pub outbox: Vec<NewOutboxRow>,
    /// The claim the outbox rows are written with: the rows it takes are
    /// written claimed (one attempt counted) and returned, for that relay
    /// to deliver once the transaction has committed; the others wait for
    /// a relay to claim them.
    pub claim: Option<Claim>,
}

/// What the closing write did.
#[derive(Debug)]
pub struct Closed {
    /// Whether each held-back invited user was written, in order (false:
    /// its email was taken).
    pub invited: Vec<bool>,
    /// The command ids recorded now; an id missing was recorded already.
    pub recorded: HashSet<String>,
    /// The outbox rows written claimed, in the order they were given.
    pub claimed: Vec<ClaimedRow>,
}

/// The closing statement: the invited users are `$1`–`$18`
/// ([`invite_ctes`]), the records `$19`–`$22`, the audit rows `$23`–`$29`,
/// the outbox rows `$30`–`$35`. It answers one row per user written
/// (`user_id`), per command recorded (`command_id`) and per outbox row
/// claimed (`message_id`, `outbox_id`, `created_at`). The outbox lease runs
/// from the statement (`clock_timestamp`), not from the transaction's start.
const CLOSE: &str = concat!(
    "WITH ",
    invite_ctes!(),
    ",
     recorded AS (
         INSERT INTO processed_commands (command_id, command_type, status, reply)
         SELECT * FROM UNNEST($19::text[], $20::text[], $21::text[], $22::jsonb[])
         ON CONFLICT (command_id) DO NOTHING
         RETURNING command_id),
     audited AS (
         INSERT INTO audit_log (command_id, actor_id, user_id, organization_id, action, before, after)
         SELECT * FROM UNNEST($23::text[], $24::uuid[], $25::uuid[], $26::text[], $27::text[],
             $28::jsonb[], $29::jsonb[])),
     written AS (
         INSERT INTO outbox (kind, payload, message_id, claimed_by, claimed_until, attempts)
         SELECT k, p, m,
                CASE WHEN c THEN $33::uuid END,
                CASE WHEN c THEN clock_timestamp() + $34 * interval '1 millisecond' END,
                CASE WHEN c THEN 1 ELSE 0 END
         FROM UNNEST($30::text[], $31::jsonb[], $32::uuid[], $35::bool[]) AS t(k, p, m, c)
         RETURNING id, message_id, created_at, claimed_by IS NOT NULL AS claimed)
     SELECT id AS user_id, NULL::text AS command_id, NULL::uuid AS message_id,
            NULL::bigint AS outbox_id, NULL::timestamptz AS created_at FROM invited
     UNION ALL SELECT NULL, command_id, NULL, NULL, NULL FROM recorded
     UNION ALL SELECT NULL, NULL, message_id, id, created_at FROM written WHERE claimed"
);

/// Writes `closing` in `tx`, in one statement.
pub async fn write(tx: &mut Tx<'_>, closing: Closing<'_>) -> Result<Closed, StoreError> {
    let Closing {
        invited,
        records,
        audit,
        outbox,
        claim,
    } = closing;
    let replies = records
        .iter()
        .map(|r| serde_json::value::to_raw_value(r.reply))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| StoreError::corrupt("processed_commands", e.to_string()))?;
    let claimed: Vec<bool> = outbox
        .iter()
        .map(|r| claim.is_some_and(|c| c.takes(r.kind)))
        .collect();
    let message_ids: Vec<Uuid> = outbox.iter().map(|_| Uuid::new_v4()).collect();
    let audit_column = |f: fn(&AuditRow) -> Option<Uuid>| audit.iter().map(f).collect::<Vec<_>>();
    let query = invited
        .bind(sqlx::query(CLOSE))
        .bind(records.iter().map(|r| r.command_id).collect::<Vec<_>>())
        .bind(records.iter().map(|r| r.command_type).collect::<Vec<_>>())
        .bind(
            records
                .iter()
                .map(|r| r.reply.status.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(replies.iter().map(|r| Json(&**r)).collect::<Vec<_>>())
        .bind(
            audit
                .iter()
                .map(|r| r.command_id.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(audit_column(|r| r.actor_id))
        .bind(audit_column(|r| r.user_id))
        .bind(
            audit
                .iter()
                .map(|r| r.organization_id.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(audit.iter().map(|r| r.action.as_str()).collect::<Vec<_>>())
        .bind(audit.iter().map(|r| r.before.as_ref()).collect::<Vec<_>>())
        .bind(audit.iter().map(|r| r.after.as_ref()).collect::<Vec<_>>())
        .bind(outbox.iter().map(|r| r.kind.as_str()).collect::<Vec<_>>())
        .bind(
            outbox
                .iter()
                .map(|r| Json(r.payload.raw()))
                .collect::<Vec<Json<&RawValue>>>(),
        )
        .bind(&message_ids)
        .bind(claim.map(|c| c.owner))
        .bind(claim.map_or(0.0, |c| c.lease.as_millis() as f64))
        .bind(&claimed);
    // Taken before the statement: the relay's view of the lease is never
    // longer than the database's.
    let claimed_at = Instant::now();
    let rows = query.fetch_all(&mut **tx).await?;

    let mut users = HashSet::new();
    let mut recorded = HashSet::with_capacity(records.len());
    let mut written = std::collections::HashMap::new();
    for row in rows {
        if let Some(id) = row.try_get::<Option<Uuid>, _>("user_id")? {
            users.insert(id);
        } else if let Some(id) = row.try_get::<Option<String>, _>("command_id")? {
            recorded.insert(id);
        } else if let Some(message_id) = row.try_get::<Option<Uuid>, _>("message_id")? {
            written.insert(
                message_id,
                (row.try_get("outbox_id")?, row.try_get("created_at")?),
            );
        }
    }
    let claimed = outbox
        .into_iter()
        .zip(message_ids)
        .zip(claimed)
        .filter(|(_, claimed)| *claimed)
        .map(|((row, message_id), _)| {
            let (id, created_at) = written
                .remove(&message_id)
                .ok_or_else(|| StoreError::corrupt("outbox", "a written row was not returned"))?;
            Ok(ClaimedRow {
                id,
                kind: row.kind,
                message_id,
                payload: row.payload,
                attempts: 1,
                created_at,
                claimed_at,
            })
        })
        .collect::<Result<_, StoreError>>()?;
    Ok(Closed {
        invited: invited.written(&users),
        recorded,
        claimed,
    })
}
