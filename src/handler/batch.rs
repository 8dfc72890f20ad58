//! Applies many commands in one transaction when they arrive together.
//!
//! Under load the consumer hands over every delivery that is waiting at
//! once. Committing them together costs one commit and one closing
//! statement (idempotency records, audit and outbox rows, see
//! `store::closing`) per batch instead of per command, and no guarantee
//! changes: each command's work, its record and its outbox rows still commit
//! together, just alongside its neighbours'.
//!
//! The batch decides before it writes. The command ids recorded already
//! are looked up first, in one round trip, and those commands are answered
//! with their stored reply without running. Every rule refuses before its
//! command writes anything (see [`refuses_before_writing`]), so a refused
//! or invalid command leaves the transaction as it found it: its refusal is
//! recorded in the batch's closing statement, exactly as it would be alone.
//! Only what cannot be known in advance stops the batch: an error, a
//! refused onboarding, an invited email found taken, an id recorded by a
//! concurrent delivery. Then the batch is rolled back; the commands before
//! that one are applied again as a batch, that one alone on the
//! single-command path, and the rest as a new batch.
//!
//! Each batch is first offered to `handler::one_statement`, which writes a
//! batch of invites by managers it knows as one statement, or declines
//! without writing anything.

use chrono::Utc;
use std::collections::{HashMap, HashSet};
use tracing::Instrument;

use super::invitations::InviteCache;
use super::one_statement::OneStatement;
use super::{
    Ctx, Effects, Fail, FunnelStep, HandleError, Handled, Handler, ReadAhead, ReplyAddress,
    answer_recorded, reply_row,
};
use crate::domain::command::Command;
use crate::domain::envelope::Envelope;
use crate::domain::ids::{OrganizationId, UserId};
use crate::domain::reply::{Rejection, Reply};
use crate::store::audit::AuditRow;
use crate::store::closing::{Closing, Record};
use crate::store::outbox::{ClaimedRow, NewOutboxRow};
use crate::store::processed::Processed;
use crate::store::{self, StoreError, Tx};

/// One delivery's command, as the consumer hands it over.
#[derive(Debug, Clone, Copy)]
pub struct BatchItem<'a> {
    /// The parsed envelope.
    pub envelope: &'a Envelope,
    /// Where its reply goes.
    pub reply_to: Option<&'a ReplyAddress>,
    /// The message body (for a dead-letter copy of invalid data).
    pub raw: &'a [u8],
    /// The command's log span: its work is logged under it.
    pub span: &'a tracing::Span,
}

/// Why a batch stopped: the index of the command that could not join it.
struct Stop {
    at: usize,
}

impl Handler {
    /// Applies `items` in order, each exactly once, as few transactions as
    /// their outcomes allow. One result per item, in the same order. Unless
    /// the batch is written as one statement, the commands recorded already
    /// are looked up first, in one round trip, and answered without
    /// running: a redelivered backlog costs a lookup.
    pub async fn handle_batch(&self, items: &[BatchItem<'_>]) -> Vec<Result<Handled, HandleError>> {
        // Invites by known managers need no lookup: the statement checks the ids.
        let missed = match self.try_one_statement(items).await {
            OneStatement::Written(done) => return done.into_iter().map(Ok).collect(),
            OneStatement::Missed(read) => read,
            OneStatement::Declined => Vec::new(),
        };
        let answered = self.answers_from_records(items, &missed).await;
        let fresh: Vec<BatchItem<'_>> = items
            .iter()
            .zip(&answered)
            .filter(|(_, answer)| answer.is_none())
            .map(|(item, _)| *item)
            .collect();
        // `apply_fresh` gives one result per fresh item, in order.
        let mut applied = self.apply_fresh(&fresh).await.into_iter();
        answered
            .into_iter()
            .filter_map(|answer| match answer {
                Some(handled) => Some(Ok(handled)),
                None => applied.next(),
            })
            .collect()
    }

    /// The answers to those of `items` recorded already (`None` for the
    /// others). `missed` are the managers a one-statement attempt at these
    /// items expected: forgotten unless an id recorded explains the miss.
    async fn answers_from_records(
        &self,
        items: &[BatchItem<'_>],
        missed: &[(UserId, OrganizationId)],
    ) -> Vec<Option<Handled>> {
        // A command alone finds its record at its closing statement, as cheaply.
        let mut recorded = if items.len() > 1 || !missed.is_empty() {
            self.recorded_among(items).await
        } else {
            HashMap::new()
        };
        if recorded.is_empty() {
            // No id was recorded: a manager or an organization changed.
            self.forget(missed);
        }
        items
            .iter()
            .map(|item| {
                let stored = recorded.remove(item.envelope.id.as_str())?;
                Some(answer_recorded(item.envelope, Some(stored)))
            })
            .collect()
    }

    /// The records of those of `items` processed already, by id; none
    /// when the lookup fails (each closing statement still finds them).
    async fn recorded_among(&self, items: &[BatchItem<'_>]) -> HashMap<String, Processed> {
        let ids: Vec<&str> = items.iter().map(|i| i.envelope.id.as_str()).collect();
        match store::processed::recorded_many(&self.pool, &ids).await {
            Ok(found) => found,
            Err(e) => {
                tracing::debug!(error = %e, "looking a batch's command ids up");
                HashMap::new()
            }
        }
    }

    /// Applies `items`, none of them recorded when the batch began.
    async fn apply_fresh(&self, items: &[BatchItem<'_>]) -> Vec<Result<Handled, HandleError>> {
        let mut results = Vec::with_capacity(items.len());
        let mut rest = items;
        while !rest.is_empty() {
            let batch = &rest[..distinct_prefix(rest)];
            let written = self.write_some(batch, &mut results).await;
            rest = &rest[written..];
        }
        results
    }

    /// Writes `batch` the fastest way its outcomes allow, one result per
    /// command in `results`: the whole batch, or up to and including the
    /// command that stopped it. Returns how many commands it wrote.
    async fn write_some(
        &self,
        batch: &[BatchItem<'_>],
        results: &mut Vec<Result<Handled, HandleError>>,
    ) -> usize {
        match self.try_one_statement(batch).await {
            OneStatement::Written(done) => {
                results.extend(done.into_iter().map(Ok));
                return batch.len();
            }
            OneStatement::Missed(read) => self.forget(&read),
            OneStatement::Declined => {}
        }
        if batch.len() == 1 {
            results.push(self.handle_one(&batch[0]).await);
            return 1;
        }
        match self.try_batch(batch).await {
            Ok(done) => {
                results.extend(done.into_iter().map(Ok));
                batch.len()
            }
            Err(Stop { at }) => {
                self.write_before_stop(&batch[..at], results).await;
                results.push(self.handle_one(&batch[at]).await);
                at + 1
            }
        }
    }

    /// The commands before the one that stopped a batch applied cleanly:
    /// again as a batch, or one by one if that fails too.
    async fn write_before_stop(
        &self,
        before: &[BatchItem<'_>],
        results: &mut Vec<Result<Handled, HandleError>>,
    ) {
        if before.is_empty() {
            return;
        }
        match self.try_batch(before).await {
            Ok(done) => results.extend(done.into_iter().map(Ok)),
            Err(_) => {
                for item in before {
                    results.push(self.handle_one(item).await);
                }
            }
        }
    }

    async fn handle_one(&self, item: &BatchItem<'_>) -> Result<Handled, HandleError> {
        self.handle(item.envelope, item.reply_to, item.raw)
            .instrument(item.span.clone())
            .await
    }

    /// All of `batch` in one transaction, or a rollback and where it stopped.
    async fn try_batch(&self, batch: &[BatchItem<'_>]) -> Result<Vec<Handled>, Stop> {
        let Ok(mut tx) = self.pool.begin().await else {
            return Err(Stop { at: 0 });
        };
        let mut cache = InviteCache::deferring();
        match self.write_batch(&mut tx, batch, &mut cache).await {
            Ok((done, claimed)) => match tx.commit().await {
                Ok(()) => {
                    crate::telemetry::metrics::batch("transaction");
                    self.remember(&cache);
                    self.hand_over(claimed).await;
                    Ok(done)
                }
                Err(_) => Err(Stop { at: 0 }),
            },
            Err(stop) => {
                tracing::debug!(
                    size = batch.len(),
                    at = stop.at,
                    "batch rolled back; that command goes alone"
                );
                // Release the batch's locks now, before its commands run again.
                if let Err(e) = tx.rollback().await {
                    tracing::debug!(error = %e, "rolling a batch back");
                }
                Err(stop)
            }
        }
    }

    /// Writes `batch` in `tx`: each command's work, then everyone's held-back
    /// invites, idempotency records, audit rows and outbox rows, in one
    /// statement. `cache` keeps back the invites (see [`InviteCache`]).
    async fn write_batch(
        &self,
        tx: &mut Tx<'_>,
        batch: &[BatchItem<'_>],
        cache: &mut InviteCache,
    ) -> Result<(Vec<Handled>, Vec<ClaimedRow>), Stop> {
        let commands: Vec<_> = batch
            .iter()
            .map(|item| Command::parse(item.envelope.kind, &item.envelope.data))
            .collect();
        let actors = batch.iter().zip(&commands).filter_map(|(item, command)| {
            let organization = match command {
                Ok(Command::InviteUser(c)) => Some(&c.organization_id),
                _ => None,
            };
            Some((item.envelope.actor?, organization))
        });
        cache
            .read_ahead(tx, actors)
            .await
            .map_err(|_| Stop { at: 0 })?;
        cache
            .named
            .read(tx, commands.iter().filter_map(|c| c.as_ref().ok()))
            .await
            .map_err(|_| Stop { at: 0 })?;
        let mut gathered = Gathered::with_capacity(batch.len());
        // Where in the batch the invites kept back in `cache` are.
        let mut deferred_at = Vec::new();
        for (at, (item, command)) in batch.iter().zip(commands).enumerate() {
            let envelope = item.envelope;
            let id = envelope.id.as_str();
            let ctx = Ctx {
                command_id: id.to_owned(),
                actor: envelope.actor,
                now: Utc::now(),
                read: ReadAhead::default(),
            };
            let mut fx = Effects::default();
            let command = match command {
                Ok(command) => command,
                Err(field) => {
                    // Invalid data touches nothing: answered and copied here.
                    fx.dead_letter(envelope.kind, &field.to_string(), item.raw, item.reply_to);
                    let reply = Reply::refused(Some(id), &Rejection::from(field));
                    gathered
                        .add(item, &ctx, reply, fx)
                        .map_err(|_| Stop { at })?;
                    continue;
                }
            };
            let invite = matches!(command, Command::InviteUser(_));
            if reads_held_invites(&command, cache) {
                write_invites(tx, cache, &mut deferred_at).await?;
            }
            let refusable = refuses_before_writing(&command);
            let applied = self
                .apply(tx, &ctx, command, &mut fx, cache)
                .instrument(item.span.clone())
                .await;
            let reply = match applied {
                Ok(data) => {
                    if invite {
                        deferred_at.push(at);
                    }
                    Reply::applied(id, data)
                }
                // Nothing of it was written: its refusal joins the batch.
                Err(Fail::Reject(rejection)) if refusable => {
                    fx.discard_for_rejection();
                    Reply::refused(Some(id), &rejection)
                }
                Err(_) => return Err(Stop { at }),
            };
            gathered
                .add(item, &ctx, reply, fx)
                .map_err(|_| Stop { at })?;
        }
        // The invites still held back are written with everyone's records,
        // audit rows and outbox rows, in one statement.
        let invited = cache.take_deferred();
        let rows = std::mem::take(&mut gathered.rows);
        let records = gathered.records(batch);
        let closing = Closing {
            invited: &invited,
            records: &records,
            audit: &gathered.audit,
            claim: self.settings.claim_for(&rows),
            outbox: rows,
        };
        let Ok(closed) = store::closing::write(tx, closing).await else {
            return Err(Stop {
                at: deferred_at.first().copied().unwrap_or(0),
            });
        };
        stop_at_taken(&closed.invited, &deferred_at)?;
        if let Some(at) = batch
            .iter()
            .position(|item| !closed.recorded.contains(item.envelope.id.as_str()))
        {
            return Err(Stop { at });
        }
        Ok((gathered.handled(), closed.claimed))
    }
}

/// What a batch's applied commands leave for its closing statement: their
/// replies (with the funnel steps they took), audit rows and outbox rows.
pub(super) struct Gathered {
    replies: Vec<(Reply, Vec<FunnelStep>)>,
    pub(super) rows: Vec<NewOutboxRow>,
    pub(super) audit: Vec<AuditRow>,
}

impl Gathered {
    pub(super) fn with_capacity(commands: usize) -> Gathered {
        Gathered {
            replies: Vec::with_capacity(commands),
            rows: Vec::with_capacity(commands * 3),
            audit: Vec::with_capacity(commands),
        }
    }

    /// Adds `item`'s command, answered with `reply` (applied or refused),
    /// with `fx` as its effects.
    pub(super) fn add(
        &mut self,
        item: &BatchItem<'_>,
        ctx: &Ctx,
        reply: Reply,
        mut fx: Effects,
    ) -> Result<(), StoreError> {
        let envelope = item.envelope;
        let funnel = fx.funnel_steps();
        self.audit.extend(fx.take_audit());
        self.rows
            .extend(fx.into_rows(ctx.now, envelope.traceparent.as_ref())?);
        if let Some(address) = item.reply_to {
            self.rows
                .push(reply_row(address, &reply, envelope.traceparent.as_ref())?);
        }
        self.replies.push((reply, funnel));
        Ok(())
    }

    /// The idempotency records of `batch` (the items added, in order).
    pub(super) fn records<'a>(&'a self, batch: &'a [BatchItem<'_>]) -> Vec<Record<'a>> {
        batch
            .iter()
            .zip(&self.replies)
            .map(|(item, (reply, _))| Record {
                command_id: item.envelope.id.as_str(),
                command_type: item.envelope.kind.as_str(),
                fingerprint: item.envelope.fingerprint(),
                reply,
            })
            .collect()
    }

    /// One result per command, once written.
    pub(super) fn handled(self) -> Vec<Handled> {
        self.replies
            .into_iter()
            .map(|(reply, funnel)| Handled::Processed { reply, funnel })
            .collect()
    }
}

/// Whether `command` may read what the invites `cache` holds back would
/// write, which are then written first. Only a lookup by email can: a held
/// invite's user id and token are known to nobody before the commit.
fn reads_held_invites(command: &Command, cache: &InviteCache) -> bool {
    match command {
        Command::InviteUser(_)
        | Command::UpdateProfile { .. }
        | Command::ResendActivation { .. }
        | Command::ActivateUser { .. }
        | Command::RedeemPasswordReset { .. } => false,
        Command::CheckEmail { email } | Command::RequestPasswordReset { email } => {
            cache.holds_email(email)
        }
        _ => true,
    }
}

/// Whether every refusal of `command` comes before its first write (it
/// decides, then writes), so a refusal leaves the batch's transaction as it
/// found it and is recorded in it. Onboarding and account syncs write the
/// organization before they can find the manager's email taken: their
/// refusal stops the batch and is recorded alone. `tests/api/mixed_batches.rs`
/// holds the batch to the answers and state of commands applied alone.
fn refuses_before_writing(command: &Command) -> bool {
    !matches!(
        command,
        Command::OnboardOrganization(_) | Command::SyncAccounts(_)
    )
}

/// How many leading items have distinct command ids (at least one): a
/// repeated id waits for a later batch, where it is answered as a duplicate.
fn distinct_prefix(items: &[BatchItem<'_>]) -> usize {
    let mut seen = HashSet::with_capacity(items.len());
    items
        .iter()
        .position(|item| !seen.insert(item.envelope.id.as_str()))
        .unwrap_or(items.len())
        .max(1)
}

/// Writes the invites `cache` kept back, in one statement, before a
/// command of another kind runs; see [`stop_at_taken`] for where the batch
/// stops. A failed statement stops it at the first of them.
async fn write_invites(
    tx: &mut Tx<'_>,
    cache: &mut InviteCache,
    deferred_at: &mut Vec<usize>,
) -> Result<(), Stop> {
    let users = cache.take_deferred();
    if users.is_empty() {
        return Ok(());
    }
    let first = deferred_at.first().copied().unwrap_or(0);
    let written = store::users::insert_invited_many(tx, &users)
        .await
        .map_err(|_| Stop { at: first })?;
    stop_at_taken(&written, deferred_at)?;
    deferred_at.clear();
    Ok(())
}

/// Stops the batch at the first held-back invite whose email was taken
/// (alone, it is refused); `written` and `deferred_at` are in the same order.
fn stop_at_taken(written: &[bool], deferred_at: &[usize]) -> Result<(), Stop> {
    match written.iter().position(|w| !w) {
        None => Ok(()),
        Some(taken) => Err(Stop {
            at: deferred_at
                .get(taken)
                .or(deferred_at.first())
                .copied()
                .unwrap_or(0),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::envelope;

    fn envelope_with_id(id: &str) -> Envelope {
        let body = serde_json::json!({"specversion": "1.0", "id": id, "source": "portal",
            "type": "check_email", "data": {"email": "a@example.com"}});
        envelope::parse(body.to_string().as_bytes()).expect("a valid envelope")
    }

    fn prefix_of(ids: &[&str]) -> usize {
        let envelopes: Vec<Envelope> = ids.iter().map(|id| envelope_with_id(id)).collect();
        let span = tracing::Span::none();
        let items: Vec<BatchItem<'_>> = envelopes
            .iter()
            .map(|envelope| BatchItem {
                envelope,
                reply_to: None,
                raw: b"",
                span: &span,
            })
            .collect();
        distinct_prefix(&items)
    }

    #[test]
    fn a_batch_stops_before_a_repeated_command_id() {
        assert_eq!(prefix_of(&["a", "b", "c"]), 3);
        assert_eq!(prefix_of(&["a", "b", "a", "c"]), 2);
        assert_eq!(prefix_of(&["a", "a"]), 1, "never empty");
        assert_eq!(prefix_of(&["a"]), 1);
    }
}
