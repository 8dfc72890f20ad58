//! A command's closing write: what it leaves besides its own work, in one
//! statement.
//!
//! Every command, and every batch of them, ends with the same writes: the
//! invited users a batch held back, the idempotency records, the audit rows
//! and the outbox rows. Each on its own is a round trip while the
//! transaction holds its locks; written as one statement of data-modifying
//! `WITH` items they are one. The guarantees are those of separate writes:
//! they commit with the command's work or not at all, and a command id
//! recorded already (or being recorded by a concurrent delivery, which its
//! primary key waits for) comes back as not recorded, for the caller to roll
//! everything back.

use serde_json::value::RawValue;
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::{PgPool, Row};
use std::collections::{HashMap, HashSet};
use std::time::Instant;
use uuid::Uuid;

use super::accounts::organization_accounts;
use super::audit::AuditRow;
use super::fingerprint::{Fingerprint, user_fingerprint};
use super::outbox::{Claim, ClaimedRow, NewOutboxRow};
use super::users::{InvitedUsers, invite_ctes};
use super::{PgQuery, StoreError, Tx};
use crate::domain::command_fingerprint::CommandFingerprint;
use crate::domain::reply::Reply;

/// An idempotency record: the command's id, type and fingerprint, and its reply.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    /// The command id (primary key of `processed_commands`).
    pub command_id: &'a str,
    /// The command type.
    pub command_type: &'a str,
    /// What binds the id to this command (type, actor, data).
    pub fingerprint: CommandFingerprint,
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

/// The closing statement's `WITH` items and answer: the invited users are
/// `$1`–`$19` ([`invite_ctes`]), the records `$20`–`$23` with their
/// command fingerprints in `$fingerprints` (the statement's last
/// parameter, after those of its own), the audit rows `$24`–`$30`, the
/// outbox rows `$31`–`$36`. It answers one row per user written
/// (`user_id`), per command recorded (`command_id`) and per outbox row
/// claimed (`message_id`, `outbox_id`, `created_at`). The outbox lease runs
/// from the statement (`clock_timestamp`), not from the transaction's
/// start. `when` is a condition on every write (`""`: none); `taken` and
/// `recorded` say what an email taken or a command id recorded already
/// does: skip the user / the record (for the caller to roll back), or fail
/// the statement.
macro_rules! closing_ctes {
    (when: $when:literal, taken: $taken:ident, recorded: $recorded:literal,
     fingerprints: $fingerprints:literal) => {
        concat!(
            invite_ctes!(when: $when, taken: $taken),
            ",
     recorded AS (
         INSERT INTO processed_commands (command_id, command_type, status, reply, fingerprint)
         SELECT * FROM UNNEST($20::text[], $21::text[], $22::text[], $23::jsonb[], ",
            $fingerprints,
            "::bytea[]) ",
            $when,
            " ",
            $recorded,
            "
         RETURNING command_id),
     audited AS (
         INSERT INTO audit_log (command_id, actor_id, user_id, organization_id, action, before, after)
         SELECT * FROM UNNEST($24::text[], $25::uuid[], $26::uuid[], $27::text[], $28::text[],
             $29::jsonb[], $30::jsonb[]) ",
            $when,
            "),
     written AS (
         INSERT INTO outbox (kind, payload, message_id, claimed_by, claimed_until, attempts)
         SELECT k, p, m,
                CASE WHEN c THEN $34::uuid END,
                CASE WHEN c THEN clock_timestamp() + $35 * interval '1 millisecond' END,
                CASE WHEN c THEN 1 ELSE 0 END
         FROM UNNEST($31::text[], $32::jsonb[], $33::uuid[], $36::bool[]) AS t(k, p, m, c) ",
            $when,
            "
         RETURNING id, message_id, created_at, claimed_by IS NOT NULL AS claimed)
     SELECT id AS user_id, NULL::text AS command_id, NULL::uuid AS message_id,
            NULL::bigint AS outbox_id, NULL::timestamptz AS created_at FROM invited
     UNION ALL SELECT NULL, command_id, NULL, NULL, NULL FROM recorded
     UNION ALL SELECT NULL, NULL, message_id, id, created_at FROM written WHERE claimed"
        )
    };
}

/// The closing statement inside a transaction: a taken email key or a recorded
/// id is skipped and reported, for the caller to roll back.
const CLOSE: &str = concat!(
    "WITH ",
    closing_ctes!(
        when: "",
        taken: skip,
        recorded: "ON CONFLICT (command_id) DO NOTHING",
        fingerprints: "$37"
    )
);

/// The closing statement on its own ([`write_checked`]): `$37`–`$38` are
/// the actors' ids and fingerprints, `$39`–`$40` the organizations' ids
/// and fingerprints (each id once), `$41` the records' command
/// fingerprints. It writes nothing unless every actor still has its
/// fingerprint (share-locked, as a transaction would have read it), every
/// organization its accounts, the batch no email key twice and no command
/// id a committed record (so a redelivered batch costs no failed insert).
/// An email key taken or an id being recorded by a transaction still
/// committing fails it whole:
/// the unique indexes of `users` and `processed_commands` check them as the
/// rows go in. (A guard query that looks for them first is no substitute:
/// planned while the tables are small, it can stay a scan of every user per
/// batch; see docs/decisions/0004-one-statement-invite-batches.md.)
const CLOSE_CHECKED: &str = concat!(
    "WITH actor AS (
         SELECT a.id FROM unnest($37::uuid[], $38::text[]) AS e(id, fingerprint),
             LATERAL (SELECT u.id FROM users u WHERE u.id = e.id AND ",
    user_fingerprint!("u"),
    " = e.fingerprint FOR SHARE) AS a),
     organization AS (",
    organization_accounts!("ANY($39::text[])"),
    "),
     guard AS (
         SELECT (SELECT count(*) FROM actor) = cardinality($37::uuid[])
            AND (SELECT count(*) FROM organization
                 WHERE organization_fingerprint
                     = ($40::text[])[array_position($39::text[], accounts_of)])
                = cardinality($39::text[])
            AND (SELECT count(DISTINCT k) = count(*) FROM unnest($19::text[]) AS k)
            AND NOT EXISTS (
                SELECT FROM unnest($20::text[]) AS wanted(id),
                    LATERAL (SELECT FROM processed_commands
                             WHERE command_id = wanted.id LIMIT 1) AS found)
            AS ok),
     ",
    closing_ctes!(
        when: "WHERE (SELECT ok FROM guard)",
        taken: fail,
        recorded: "",
        fingerprints: "$41"
    )
);

/// The statement [`write_checked`] runs (`$1`–`$41`); public so a test can
/// check its plan.
pub fn checked_sql() -> &'static str {
    CLOSE_CHECKED
}

/// What [`write_checked`] checks the actors and the organizations against:
/// each as it was read, by an earlier commit.
#[derive(Debug, Clone, Default)]
pub struct Expected {
    actors: Vec<Uuid>,
    actor_fingerprints: Vec<String>,
    organizations: Vec<String>,
    organization_fingerprints: Vec<String>,
}

impl Expected {
    /// Expects the actor `id` to have the row fingerprint `fingerprint`
    /// (an actor already expected is kept as it is).
    pub fn actor(&mut self, id: Uuid, fingerprint: &Fingerprint) {
        if !self.actors.contains(&id) {
            self.actors.push(id);
            self.actor_fingerprints
                .push(fingerprint.as_str().to_owned());
        }
    }

    /// Expects the organization `id` to have the accounts fingerprint
    /// `fingerprint` (one already expected is kept as it is).
    pub fn organization(&mut self, id: &str, fingerprint: &Fingerprint) {
        if !self.organizations.iter().any(|o| o == id) {
            self.organizations.push(id.to_owned());
            self.organization_fingerprints
                .push(fingerprint.as_str().to_owned());
        }
    }
}

/// Writes `closing` in `tx`, in one statement.
pub async fn write(tx: &mut Tx<'_>, closing: Closing<'_>) -> Result<Closed, StoreError> {
    let prepared = Prepared::new(closing)?;
    // Taken before the statement: the relay's view of the lease is never
    // longer than the database's.
    let claimed_at = Instant::now();
    let rows = prepared
        .query(CLOSE)
        .bind(prepared.fingerprints())
        .fetch_all(&mut **tx)
        .await?;
    prepared.closed(rows, claimed_at)
}

/// Writes `closing` as one statement of its own (its own transaction), if
/// the actors and the organizations are still as `expected`, no invited
/// email is taken and no command id recorded; `None` when something
/// differs (nothing is written). An error means nothing was written either
/// (or, as for any commit whose answer is lost, that it was).
pub async fn write_checked(
    pool: &PgPool,
    closing: Closing<'_>,
    expected: &Expected,
) -> Result<Option<Closed>, StoreError> {
    let records = closing.records.len();
    let prepared = Prepared::new(closing)?;
    let claimed_at = Instant::now();
    let rows = prepared
        .query(CLOSE_CHECKED)
        .bind(&expected.actors)
        .bind(&expected.actor_fingerprints)
        .bind(&expected.organizations)
        .bind(&expected.organization_fingerprints)
        .bind(prepared.fingerprints())
        .fetch_all(pool)
        .await?;
    let closed = prepared.closed(rows, claimed_at)?;
    if closed.recorded.is_empty() && records > 0 {
        return Ok(None);
    }
    if closed.recorded.len() != records || closed.invited.contains(&false) {
        // Cannot happen: every write has the same condition and fails on a conflict.
        return Err(StoreError::corrupt(
            "processed_commands",
            "a checked closing statement wrote part of its rows",
        ));
    }
    Ok(Some(closed))
}

/// A [`Closing`] with its columns ready to bind.
struct Prepared<'a> {
    closing: Closing<'a>,
    replies: Vec<Box<RawValue>>,
    claimed: Vec<bool>,
    message_ids: Vec<Uuid>,
}

impl<'a> Prepared<'a> {
    fn new(closing: Closing<'a>) -> Result<Prepared<'a>, StoreError> {
        let replies = closing
            .records
            .iter()
            .map(|r| serde_json::value::to_raw_value(r.reply))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| StoreError::corrupt("processed_commands", e.to_string()))?;
        let claimed = closing
            .outbox
            .iter()
            .map(|r| closing.claim.is_some_and(|c| c.takes(r.kind)))
            .collect();
        let message_ids = closing.outbox.iter().map(|_| Uuid::new_v4()).collect();
        Ok(Prepared {
            closing,
            replies,
            claimed,
            message_ids,
        })
    }

    /// `sql` with `$1`–`$36` bound.
    fn query<'q>(&'q self, sql: &'static str) -> PgQuery<'q> {
        let Closing {
            invited,
            records,
            audit,
            outbox,
            claim,
        } = &self.closing;
        let audit_column =
            |f: fn(&AuditRow) -> Option<Uuid>| audit.iter().map(f).collect::<Vec<_>>();
        invited
            .bind(sqlx::query(sql))
            .bind(records.iter().map(|r| r.command_id).collect::<Vec<_>>())
            .bind(records.iter().map(|r| r.command_type).collect::<Vec<_>>())
            .bind(
                records
                    .iter()
                    .map(|r| r.reply.status.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(self.replies.iter().map(|r| Json(&**r)).collect::<Vec<_>>())
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
            .bind(&self.message_ids)
            .bind(claim.map(|c| c.owner))
            .bind(claim.map_or(0.0, |c| c.lease.as_millis() as f64))
            .bind(&self.claimed)
    }

    /// The records' command fingerprints, bound after the statement's
    /// other parameters.
    fn fingerprints(&self) -> Vec<&[u8]> {
        self.closing
            .records
            .iter()
            .map(|r| r.fingerprint.as_bytes())
            .collect()
    }

    /// What the statement that answered `rows` wrote.
    fn closed(self, rows: Vec<PgRow>, claimed_at: Instant) -> Result<Closed, StoreError> {
        let mut users = HashSet::new();
        let mut recorded = HashSet::with_capacity(self.closing.records.len());
        let mut written = HashMap::new();
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
        let claimed = self
            .closing
            .outbox
            .into_iter()
            .zip(self.message_ids)
            .zip(self.claimed)
            .filter(|(_, claimed)| *claimed)
            .map(|((row, message_id), _)| {
                let (id, created_at) = written.remove(&message_id).ok_or_else(|| {
                    StoreError::corrupt("outbox", "a written row was not returned")
                })?;
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
            invited: self.closing.invited.written(&users),
            recorded,
            claimed,
        })
    }
}
