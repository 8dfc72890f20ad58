//! The transactional outbox: rows written with a command, delivered later.
//!
//! Rows are claimed with `FOR UPDATE SKIP LOCKED` and a lease, so several
//! relays never deliver the same row at once and a row claimed by a relay
//! that died is picked up again when its lease runs out.

use chrono::{DateTime, Utc};
use serde_json::value::RawValue;
use sqlx::types::Json;
use sqlx::{PgPool, Row};
use std::time::Duration;
use uuid::Uuid;

use super::payload::Payload;
use super::{StoreError, Tx};

/// What a row delivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboxKind {
    /// An email through the mail transport.
    Email,
    /// An event on `P.events`.
    Event,
    /// A reply to a command's `reply_to`.
    Reply,
    /// A copy of an invalid command to `P.dead`.
    DeadLetter,
}

impl OutboxKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            OutboxKind::Email => "email",
            OutboxKind::Event => "event",
            OutboxKind::Reply => "reply",
            OutboxKind::DeadLetter => "dead_letter",
        }
    }

    fn parse(s: &str) -> Option<OutboxKind> {
        match s {
            "email" => Some(OutboxKind::Email),
            "event" => Some(OutboxKind::Event),
            "reply" => Some(OutboxKind::Reply),
            "dead_letter" => Some(OutboxKind::DeadLetter),
            _ => None,
        }
    }
}

/// The two independent streams of outbox rows, each with its own relay
/// lane and its own index of due rows (a claim for one never reads the
/// other's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// Events, replies and dead letters, through the broker.
    Publications,
    /// Emails, through the mail transport.
    Emails,
}

impl Lane {
    /// The lane's name in logs.
    pub fn name(self) -> &'static str {
        match self {
            Lane::Publications => "publications",
            Lane::Emails => "emails",
        }
    }

    /// The statement that claims this lane's due rows (`$1` limit, `$2`
    /// lease in ms, `$3` owner). Its kind condition is written as in the
    /// lane's partial index, so the planner uses that index; public so a
    /// test can check the plan.
    pub fn claim_sql(self) -> &'static str {
        match self {
            Lane::Emails => CLAIM_EMAILS,
            Lane::Publications => CLAIM_PUBLICATIONS,
        }
    }
}

/// The due rows of the email lane, word for word as its partial index
/// `outbox_due_emails_idx` says it (migration 0003): a statement that words
/// it otherwise is planned without that index. Every query of due rows is
/// built from this and [`due_publications`].
macro_rules! due_emails {
    () => {
        "sent_at IS NULL AND failed_at IS NULL AND kind = 'email'"
    };
}
/// The due rows of the publication lane, as `outbox_due_publications_idx` says it.
macro_rules! due_publications {
    () => {
        "sent_at IS NULL AND failed_at IS NULL AND kind <> 'email'"
    };
}
pub(crate) use {due_emails, due_publications};

/// Claims the due rows `$due` describes (see [`claim`]).
macro_rules! claim_sql {
    ($due:expr) => {
        concat!(
            "UPDATE outbox SET claimed_until = now() + $2 * interval '1 millisecond', attempts = attempts + 1,
                claimed_by = $3
             WHERE id IN (
                 SELECT id FROM outbox
                 WHERE ",
            $due,
            " AND available_at <= now()
                   AND (claimed_until IS NULL OR claimed_until < now())
                 ORDER BY available_at, id
                 LIMIT $1
                 FOR UPDATE SKIP LOCKED)
             RETURNING id, kind, message_id, payload, attempts, created_at"
        )
    };
}
const CLAIM_EMAILS: &str = claim_sql!(due_emails!());
const CLAIM_PUBLICATIONS: &str = claim_sql!(due_publications!());

/// A row to write.
#[derive(Debug, Clone)]
pub struct NewOutboxRow {
    /// What it delivers.
    pub kind: OutboxKind,
    /// Kind-specific JSON.
    pub payload: Payload,
}

/// A row claimed for delivery.
#[derive(Debug, Clone)]
pub struct ClaimedRow {
    /// Row id.
    pub id: i64,
    /// What it delivers.
    pub kind: OutboxKind,
    /// Stable per row: the email's `Message-ID`, the event's id.
    pub message_id: Uuid,
    /// Kind-specific JSON.
    pub payload: Payload,
    /// Delivery attempts so far, this one included.
    pub attempts: i32,
    /// When the row was written.
    pub created_at: DateTime<Utc>,
    /// When the claim was asked for: its lease runs from (at the latest) here.
    pub claimed_at: std::time::Instant,
}

/// A claim taken on rows as they are written: the relay of `owner` will
/// deliver them, and no other relay may before `lease` has run out.
#[derive(Debug, Clone, Copy)]
pub struct Claim {
    /// The relay that delivers them.
    pub owner: Uuid,
    /// How long the claim lasts.
    pub lease: Duration,
    /// Whether email rows are claimed too. Without room in the relay's
    /// email queue they are written unclaimed, to wait in the table for its
    /// claimer, instead of being claimed and handed straight back.
    pub emails: bool,
}

impl Claim {
    /// Whether this claim takes rows of `kind`.
    pub fn takes(&self, kind: OutboxKind) -> bool {
        kind != OutboxKind::Email || self.emails
    }
}

/// Writes `rows` in `tx`, unclaimed: they wait for a relay to claim them.
/// (A command's rows are written by `store::closing`, claimed for the
/// relay of the worker that wrote them.)
pub async fn insert_unclaimed(tx: &mut Tx<'_>, rows: &[NewOutboxRow]) -> Result<(), StoreError> {
    if rows.is_empty() {
        return Ok(());
    }
    sqlx::query("INSERT INTO outbox (kind, payload) SELECT * FROM UNNEST($1::text[], $2::jsonb[])")
        .bind(rows.iter().map(|r| r.kind.as_str()).collect::<Vec<_>>())
        .bind(
            rows.iter()
                .map(|r| Json(r.payload.raw()))
                .collect::<Vec<Json<&RawValue>>>(),
        )
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Claims up to `limit` due rows of `lane` for `lease` on behalf of relay `owner`.
pub async fn claim(
    pool: &PgPool,
    lane: Lane,
    limit: i64,
    lease: Duration,
    owner: Uuid,
) -> Result<Vec<ClaimedRow>, StoreError> {
    let claimed_at = std::time::Instant::now();
    let rows = sqlx::query(lane.claim_sql())
        .bind(limit)
        .bind(lease.as_millis() as f64)
        .bind(owner)
        .fetch_all(pool)
        .await?;
    let mut claimed = rows
        .into_iter()
        .map(|r| {
            let kind: String = r.try_get("kind")?;
            Ok(ClaimedRow {
                id: r.try_get("id")?,
                kind: OutboxKind::parse(&kind)
                    .ok_or_else(|| StoreError::corrupt("outbox", format!("kind {kind}")))?,
                message_id: r.try_get("message_id")?,
                payload: Payload::from_raw(r.try_get("payload")?),
                attempts: r.try_get("attempts")?,
                created_at: r.try_get("created_at")?,
                claimed_at,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    claimed.sort_by_key(|r| r.id);
    Ok(claimed)
}

/// Marks rows delivered; their payload keeps no token. Only a payload
/// that has one is rewritten: events and replies (two rows in three)
/// never do, and `-` rebuilds the whole document even when the key is
/// absent.
pub async fn mark_sent(pool: &PgPool, ids: &[i64]) -> Result<(), StoreError> {
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "UPDATE outbox SET sent_at = now(), claimed_until = NULL, last_error = NULL,
            payload = CASE WHEN payload ? 'token' THEN payload - 'token' ELSE payload END
         WHERE id = ANY($1)",
    )
    .bind(ids)
    // Planned at each use, for the ids given and the outbox as it is: a
    // kept plan made while the outbox was small scans all of it.
    .persistent(false)
    .execute(pool)
    .await?;
    Ok(())
}

/// Puts a row back to be tried again after `delay`.
pub async fn retry_later(
    pool: &PgPool,
    id: i64,
    delay: Duration,
    error: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE outbox SET claimed_until = NULL, last_error = $3,
            available_at = now() + $2 * interval '1 millisecond'
         WHERE id = $1",
    )
    .bind(id)
    .bind(delay.as_millis() as f64)
    .bind(error)
    .execute(pool)
    .await?;
    Ok(())
}

/// Gives up on a row; its payload keeps no token (a resend issues a new one).
pub async fn mark_failed(pool: &PgPool, id: i64, error: &str) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE outbox SET failed_at = now(), claimed_until = NULL, last_error = $2,
            payload = payload - 'token'
         WHERE id = $1",
    )
    .bind(id)
    .bind(error)
    .execute(pool)
    .await?;
    Ok(())
}

/// Extends `owner`'s claim on row `id` by `lease` from now, if that claim
/// (the one counted as attempt `attempts`) still holds and the row is not
/// settled. False when another claim has taken the row since.
pub async fn renew(
    pool: &PgPool,
    id: i64,
    owner: Uuid,
    attempts: i32,
    lease: Duration,
) -> Result<bool, StoreError> {
    let renewed = sqlx::query(
        "UPDATE outbox SET claimed_until = clock_timestamp() + $4 * interval '1 millisecond'
         WHERE id = $1 AND claimed_by = $2 AND attempts = $3 AND sent_at IS NULL AND failed_at IS NULL",
    )
    .bind(id)
    .bind(owner)
    .bind(attempts)
    .bind(lease.as_millis() as f64)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(renewed == 1)
}

/// Hands back rows `owner` claimed and did not deliver, due at once; the
/// attempt they were claimed for is not counted.
pub async fn unclaim(pool: &PgPool, ids: &[i64], owner: Uuid) -> Result<(), StoreError> {
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "UPDATE outbox SET claimed_until = NULL, claimed_by = NULL, attempts = greatest(attempts - 1, 0)
         WHERE id = ANY($1) AND claimed_by = $2 AND sent_at IS NULL AND failed_at IS NULL",
    )
    .bind(ids)
    .bind(owner)
    // Planned at each use, as `mark_sent` is.
    .persistent(false)
    .execute(pool)
    .await?;
    Ok(())
}

/// Hands back the undelivered rows `owner` still holds (graceful stop);
/// the attempt they were claimed for is not counted. Returns how many.
/// Read through both lanes' indexes of due rows, not the whole table.
pub async fn release(pool: &PgPool, owner: Uuid) -> Result<u64, StoreError> {
    Ok(sqlx::query(concat!(
        "UPDATE outbox SET claimed_until = NULL, claimed_by = NULL, attempts = greatest(attempts - 1, 0)
         WHERE id IN (SELECT id FROM outbox WHERE ",
        due_emails!(),
        " AND claimed_by = $1 AND claimed_until > now()
             UNION ALL SELECT id FROM outbox WHERE ",
        due_publications!(),
        " AND claimed_by = $1 AND claimed_until > now())"
    ))
    .bind(owner)
    .execute(pool)
    .await?
    .rows_affected())
}

/// Deletes rows delivered longer than `sent` ago and rows given up on
/// longer than `failed` ago; returns how many.
pub async fn prune(pool: &PgPool, sent: Duration, failed: Duration) -> Result<u64, StoreError> {
    Ok(sqlx::query(
        "DELETE FROM outbox
         WHERE sent_at < now() - $1 * interval '1 millisecond'
            OR failed_at < now() - $2 * interval '1 millisecond'",
    )
    .bind(sent.as_millis() as f64)
    .bind(failed.as_millis() as f64)
    .execute(pool)
    .await?
    .rows_affected())
}
