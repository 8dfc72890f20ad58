//! Applies one command: idempotency, authorization, state, outbox — one transaction.
//!
//! The command's work, its idempotency record (id + reply) and its outbox
//! rows (emails, events, reply) commit in one transaction. The record is
//! written last, with the id as primary key: a second delivery of the same
//! command either finds it or waits on it, and its own work is rolled back;
//! it gets the stored reply, or is refused `id_reused` when the id was
//! recorded for a different command (`domain::command_fingerprint`). A
//! rejection rolls the work back and records only the refusal, in a fresh
//! transaction. Fewest round trips on the common path: no savepoint, no
//! claim-then-update.

#![cfg(feature = "worker")]

mod accounts;
mod batch;
mod effects;
mod invitations;
mod lookup;
mod named;
mod one_statement;
mod participants;
mod passwords;
mod profiles;
mod removal;
mod tokens;

use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};
use sqlx::PgPool;
use std::sync::Arc;
use thiserror::Error;

use crate::domain::command::Command;
use crate::domain::command_fingerprint;
use crate::domain::envelope::Envelope;
use crate::domain::ids::UserId;
use crate::domain::reply::{Rejection, Reply};
use crate::domain::trace::TraceParent;
use crate::outbox::Handoff;
use crate::store::closing::{Closing, Record};
use crate::store::outbox::{ClaimedRow, NewOutboxRow, OutboxKind};
use crate::store::payload::Payload;
use crate::store::processed::Processed;
use crate::store::users::{InvitedUsers, UserRecord};
use crate::store::{self, StoreError, Tx};

pub use batch::BatchItem;
pub use effects::Effects;
use invitations::InviteCache;

/// Settings the rules need from the configuration.
#[derive(Debug, Clone)]
pub struct HandlerSettings {
    /// How long an activation link is valid.
    pub activation_ttl: Duration,
    /// How long a password reset link is valid.
    pub password_reset_ttl: Duration,
    /// Minimum time between two emails of the same kind to one user.
    pub resend_cooldown: Duration,
    /// Most activation and password reset emails to one user in 24 hours.
    pub mail_cap_per_day: u32,
    /// This worker's relay, which claims the outbox rows a command writes
    /// to deliver them straight after the commit; `None` leaves them for
    /// any relay to claim.
    pub handoff: Option<Arc<Handoff>>,
}

impl HandlerSettings {
    /// The claim `rows` are written with (see [`Handoff::claim`]).
    fn claim_for(&self, rows: &[NewOutboxRow]) -> Option<store::outbox::Claim> {
        let emails = rows.iter().filter(|r| r.kind == OutboxKind::Email).count();
        self.handoff.as_ref().map(|h| h.claim(emails))
    }
}

/// Where a reply goes: the request's `reply_to` and correlation id.
#[derive(Debug, Clone)]
pub struct ReplyAddress {
    /// The queue name (default exchange routing key).
    pub reply_to: String,
    /// The request's `correlation_id`, or its command id.
    pub correlation_id: String,
}

/// A step of the invite funnel a committed command took (for metrics).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FunnelStep {
    /// A user was invited.
    Invited,
    /// An invited user activated, this long after the invitation.
    Activated(std::time::Duration),
    /// A user was removed before activating.
    Removed,
}

/// What happened to a command.
#[derive(Debug)]
pub enum Handled {
    /// Processed now: its reply and effects are in the outbox, and the rows
    /// its commit claimed for this worker's relay were handed over (see
    /// [`HandlerSettings::handoff`]).
    Processed {
        /// What the command answers.
        reply: Reply,
        /// The invite funnel steps it took, for metrics recorded after the ack.
        funnel: Vec<FunnelStep>,
    },
    /// Processed before: here is the stored reply, nothing else happened.
    Duplicate(Reply),
    /// Its id was recorded for a different command: refused with this
    /// reply (`id_reused`), nothing applied or recorded, nothing of the
    /// other command's reply shown.
    IdReused(Reply),
}

/// A failure that is not the command's fault: worth a retry.
#[derive(Debug, Error)]
pub enum HandleError {
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The OS random generator failed.
    #[error("random generator failed: {0}")]
    Random(String),
}

impl HandleError {
    /// True when the database is away: the consumer pauses instead of retrying.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, HandleError::Store(e) if e.is_unavailable())
    }
}

impl From<sqlx::Error> for HandleError {
    fn from(e: sqlx::Error) -> Self {
        HandleError::Store(StoreError::Database(e))
    }
}

/// Inside a command: a rejection (the reply) or an error (retry).
#[derive(Debug)]
pub(crate) enum Fail {
    Reject(Rejection),
    Error(HandleError),
}

impl From<Rejection> for Fail {
    fn from(r: Rejection) -> Self {
        Fail::Reject(r)
    }
}

impl From<crate::domain::FieldError> for Fail {
    fn from(e: crate::domain::FieldError) -> Self {
        Fail::Reject(e.into())
    }
}

impl From<HandleError> for Fail {
    fn from(e: HandleError) -> Self {
        Fail::Error(e)
    }
}

impl From<StoreError> for Fail {
    fn from(e: StoreError) -> Self {
        Fail::Error(e.into())
    }
}

impl From<sqlx::Error> for Fail {
    fn from(e: sqlx::Error) -> Self {
        Fail::Error(e.into())
    }
}

/// The command being applied: its id, actor and the time it is applied at.
#[derive(Debug, Clone)]
pub(crate) struct Ctx {
    pub command_id: String,
    pub actor: Option<UserId>,
    pub now: DateTime<Utc>,
    /// What the command's batch read for it before it ran, unchanged since.
    pub read: ReadAhead,
}

/// What a batch's transaction read for a command before the first command
/// ran, and no command changed since (see `InviteCache::before` and
/// `handler::named`): the command reads it here, not from the database.
#[derive(Debug, Clone, Default)]
pub(crate) struct ReadAhead {
    /// The acting user, share-locked.
    pub actor: Option<Arc<UserRecord>>,
    /// A profile change's target, locked.
    pub target: Option<Arc<UserRecord>>,
    /// The user with the command's email address.
    pub address: Option<named::Address>,
}

/// The result of a command's own work.
pub(crate) type Outcome = Result<Value, Fail>;

/// Applies commands against the database.
#[derive(Debug, Clone)]
pub struct Handler {
    pool: PgPool,
    settings: HandlerSettings,
    /// What committed invites read (see `one_statement`).
    known: Arc<std::sync::Mutex<InviteCache>>,
}

impl Handler {
    /// A handler on `pool` with `settings`.
    pub fn new(pool: PgPool, settings: HandlerSettings) -> Handler {
        Handler {
            pool,
            settings,
            known: Arc::default(),
        }
    }

    /// Applies `envelope` exactly once. `raw` is the message body, kept for
    /// the dead-letter copy when the data turns out invalid.
    pub async fn handle(
        &self,
        envelope: &Envelope,
        reply_to: Option<&ReplyAddress>,
        raw: &[u8],
    ) -> Result<Handled, HandleError> {
        let id = envelope.id.as_str();
        let mut fx = Effects::default();
        let parsed = Command::parse(envelope.kind, &envelope.data);
        // The command applies from here: validity windows (token lifetimes,
        // cooldowns) start after the parsing, not before it.
        let ctx = Ctx {
            command_id: id.to_owned(),
            actor: envelope.actor,
            now: Utc::now(),
            read: ReadAhead::default(),
        };
        let command = match parsed {
            Ok(command) => command,
            Err(field) => {
                fx.dead_letter(envelope.kind, &field.to_string(), raw, reply_to);
                let reply = Reply::refused(Some(id), &Rejection::from(field));
                let tx = self.pool.begin().await?;
                return self.record(tx, envelope, reply_to, reply, fx, &ctx).await;
            }
        };
        let mut tx = self.pool.begin().await?;
        let mut cache = InviteCache::default();
        match self
            .apply(&mut tx, &ctx, command, &mut fx, &mut cache)
            .await
        {
            Ok(data) => {
                let reply = Reply::applied(id, data);
                let handled = self.record(tx, envelope, reply_to, reply, fx, &ctx).await?;
                if matches!(handled, Handled::Processed { .. }) {
                    self.remember(&cache);
                }
                Ok(handled)
            }
            Err(Fail::Reject(rejection)) => {
                // Undo whatever the command touched; record only the refusal.
                tx.rollback().await?;
                fx.discard_for_rejection();
                let reply = Reply::refused(Some(id), &rejection);
                let tx = self.pool.begin().await?;
                self.record(tx, envelope, reply_to, reply, fx, &ctx).await
            }
            Err(Fail::Error(e)) => Err(e),
        }
    }

    /// Records the command id with its fingerprint and reply and writes its
    /// audit and outbox rows, in one statement (`store::closing`), then
    /// commits. The id's primary key decides: if a command with that id
    /// committed first (or is committing: the insert waits for it),
    /// everything in `tx` is rolled back; a redelivery of the same command
    /// gets the stored reply, another command reusing the id `id_reused`.
    async fn record(
        &self,
        mut tx: Tx<'_>,
        envelope: &Envelope,
        reply_to: Option<&ReplyAddress>,
        reply: Reply,
        mut fx: Effects,
        ctx: &Ctx,
    ) -> Result<Handled, HandleError> {
        let id = envelope.id.as_str();
        let funnel = fx.funnel_steps();
        let audit = fx.take_audit();
        let mut rows = fx.into_rows(ctx.now, envelope.traceparent.as_ref())?;
        if let Some(address) = reply_to {
            rows.push(reply_row(address, &reply, envelope.traceparent.as_ref())?);
        }
        let claim = self.settings.claim_for(&rows);
        let fingerprint = envelope.fingerprint();
        let record = Record {
            command_id: id,
            command_type: envelope.kind.as_str(),
            fingerprint,
            reply: &reply,
        };
        let closing = Closing {
            invited: &InvitedUsers::default(),
            records: &[record],
            audit: &audit,
            outbox: rows,
            claim,
        };
        let closed = store::closing::write(&mut tx, closing).await?;
        if !closed.recorded.contains(id) {
            tx.rollback().await?;
            let stored = store::processed::recorded(&self.pool, id).await?;
            return Ok(answer_recorded(envelope, stored));
        }
        tx.commit().await?;
        self.hand_over(closed.claimed).await;
        Ok(Handled::Processed { reply, funnel })
    }

    /// Hands the rows a commit claimed to this worker's relay.
    async fn hand_over(&self, claimed: Vec<ClaimedRow>) {
        if let Some(handoff) = &self.settings.handoff {
            handoff.deliver(claimed).await;
        }
    }

    async fn apply(
        &self,
        tx: &mut Tx<'_>,
        ctx: &Ctx,
        command: Command,
        fx: &mut Effects,
        cache: &mut InviteCache,
    ) -> Outcome {
        cache.before(&command);
        let changed = named::changes(&command);
        let ctx = &Ctx {
            read: cache.read_for(ctx.actor, &command),
            ..ctx.clone()
        };
        let outcome = self.dispatch(tx, ctx, command, fx, cache).await;
        cache.named.forget_for(changed);
        outcome
    }

    /// Runs `command`'s rules.
    async fn dispatch(
        &self,
        tx: &mut Tx<'_>,
        ctx: &Ctx,
        command: Command,
        fx: &mut Effects,
        cache: &mut InviteCache,
    ) -> Outcome {
        let s = &self.settings;
        match command {
            Command::OnboardOrganization(c) => accounts::onboard(tx, ctx, s, c, fx).await,
            Command::SyncAccounts(c) => accounts::sync(tx, ctx, c, fx).await,
            Command::CheckEmail { email } => lookup::check_email(tx, ctx, &email).await,
            Command::InviteUser(c) => invitations::invite(tx, ctx, s, c, fx, cache).await,
            Command::ResendActivation { user_id } => {
                invitations::resend(tx, ctx, s, user_id, fx).await
            }
            Command::ActivateUser { token } => invitations::activate(tx, ctx, token, fx).await,
            Command::RequestPasswordReset { email } => {
                passwords::request(tx, ctx, s, &email, fx).await
            }
            Command::RedeemPasswordReset { token } => passwords::redeem(tx, ctx, token, fx).await,
            Command::UpdateProfile { user_id, changes } => {
                profiles::update_profile(tx, ctx, user_id, changes, fx).await
            }
            Command::UpdateAccess { user_id, changes } => {
                profiles::update_access(tx, ctx, user_id, changes, fx).await
            }
            Command::RemoveUser { user_id } => removal::remove(tx, ctx, user_id, fx).await,
        }
    }
}

/// The answer to `envelope`, whose id is recorded (as `stored`, unless the
/// record has gone since): the stored reply for a redelivery of the same
/// command, `id_reused` for another command under that id.
fn answer_recorded(envelope: &Envelope, stored: Option<Processed>) -> Handled {
    let id = envelope.id.as_str();
    match stored {
        Some(stored) if !envelope.fingerprint().repeats(stored.fingerprint.as_ref()) => {
            let rejection = command_fingerprint::id_reused(id);
            Handled::IdReused(Reply::refused(Some(id), &rejection))
        }
        Some(stored) => Handled::Duplicate(stored.reply),
        None => Handled::Duplicate(Reply::applied(id, json!({}))),
    }
}

/// The outbox row that publishes `reply` to `address`.
pub fn reply_row(
    address: &ReplyAddress,
    reply: &Reply,
    trace: Option<&TraceParent>,
) -> Result<NewOutboxRow, StoreError> {
    Ok(NewOutboxRow {
        kind: OutboxKind::Reply,
        payload: Payload::reply(
            &address.reply_to,
            &address.correlation_id,
            trace.map(TraceParent::as_str),
            reply,
        )?,
    })
}

/// The reply's status as a metrics outcome label.
pub fn outcome_label(handled: &Handled) -> &'static str {
    match handled {
        Handled::Processed { reply: r, .. } => r.status.as_str(),
        Handled::Duplicate(_) => "duplicate",
        Handled::IdReused(r) => r.status.as_str(),
    }
}

/// Formats a timestamp for an email (`2026-11-30 10:00 UTC`).
pub(crate) fn email_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}
