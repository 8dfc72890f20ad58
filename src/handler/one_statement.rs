//! Invite batches written as one statement that is its own transaction.
//!
//! A batch of invites in an explicit transaction is four round trips
//! (`BEGIN`, read the actors and the organizations, the closing statement,
//! `COMMIT`), each a wake-up of a database backend while the batch's
//! commands wait. But managers invite batch after batch, whether one
//! manager onboards a team or many managers invite at once, and invites
//! change neither the managers nor their organizations. So the handler
//! keeps the actors and the organizations committed invites read, with
//! their fingerprints, and writes the next batch of invites by those
//! actors into those organizations as one statement, committed on its own
//! like any statement outside `BEGIN` (`store::closing::write_checked`):
//! everything a command writes still commits together or not at all. The
//! statement re-reads the actors (share-locked, as the transaction would)
//! and the organizations' accounts and writes nothing unless all are
//! unchanged and no command id is recorded; an email taken or an id being
//! recorded by a transaction still committing fails it whole, as the unique
//! indexes see it. Anything else (a
//! refusal, another kind of command, a change, a conflict) and the batch
//! goes the transactional way of `handler::batch`, which gives each command
//! the answer it gets there.

use chrono::Utc;
use std::sync::PoisonError;

use super::batch::{BatchItem, Gathered};
use super::invitations::{InviteCache, authorized, invited};
use super::{Ctx, Effects, Handled, Handler, ReadAhead};
use crate::domain::command::{Command, CommandType};
use crate::domain::ids::{OrganizationId, UserId};
use crate::domain::reply::Reply;
use crate::store::closing::{self, Closing, Expected};
use crate::store::users::InvitedUsers;
use crate::telemetry::metrics;

/// What an attempt to write a batch as one statement came to.
pub(super) enum OneStatement {
    /// Written: one result per command, in order.
    Written(Vec<Handled>),
    /// Not tried (nothing read): not every command is an invite by an
    /// actor into an organization the handler knows.
    Declined,
    /// Tried, and nothing written: an actor or an organization changed, an
    /// email was taken or a command id recorded. These are the actors and
    /// organizations it expected, for [`Handler::forget`].
    Missed(Vec<(UserId, OrganizationId)>),
}

impl Handler {
    /// Forgets the actors and organizations of a missed statement: one of
    /// them changed, and the next transaction reads them all again.
    pub(super) fn forget(&self, read: &[(UserId, OrganizationId)]) {
        let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        for (actor, organization) in read {
            known.forget(*actor, organization);
        }
    }

    /// Keeps what a committed transaction's invites read, for
    /// [`Handler::try_one_statement`].
    pub(super) fn remember(&self, committed: &InviteCache) {
        self.known
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remember(committed);
    }

    /// `batch` written as one statement, if every command in it is an
    /// invite by an actor into an organization, each read by an earlier
    /// commit and unchanged since, and none is refused or recorded already.
    pub(super) async fn try_one_statement(&self, batch: &[BatchItem<'_>]) -> OneStatement {
        match self.one_statement(batch).await {
            Some(attempt) => attempt,
            None => OneStatement::Declined,
        }
    }

    async fn one_statement(&self, batch: &[BatchItem<'_>]) -> Option<OneStatement> {
        // A batch of other kinds too goes the transaction way, which parses
        // its commands: nothing is parsed here for it.
        let invites_only = batch
            .iter()
            .all(|i| i.envelope.kind == CommandType::InviteUser && i.envelope.actor.is_some());
        if !invites_only {
            return None;
        }
        // Parsed one by one: the first unknown actor or invalid invite ends it.
        let mut invites = Vec::with_capacity(batch.len());
        let mut expected = Expected::default();
        for item in batch {
            let actor_id = item.envelope.actor?;
            let Ok(Command::InviteUser(c)) =
                Command::parse(item.envelope.kind, &item.envelope.data)
            else {
                return None;
            };
            let (actor, fingerprint, organization) = self
                .known
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .known(actor_id, &c.organization_id)?;
            expected.actor(actor_id.as_uuid(), &fingerprint);
            expected.organization(c.organization_id.as_str(), &organization.fingerprint);
            invites.push((actor, organization, c));
        }

        // Whose and where, to forget if the statement finds a change.
        let read: Vec<_> = invites
            .iter()
            .map(|(actor, _, c)| (actor.snapshot.id, c.organization_id.clone()))
            .collect();
        let mut users = InvitedUsers::default();
        let mut gathered = Gathered::with_capacity(batch.len());
        for (item, (actor, organization, c)) in batch.iter().zip(invites) {
            let _entered = item.span.enter();
            let ctx = Ctx {
                command_id: item.envelope.id.as_str().to_owned(),
                actor: Some(actor.snapshot.id),
                now: Utc::now(),
                read: ReadAhead::default(),
            };
            let mut fx = Effects::default();
            // A refusal is answered (and recorded) by the transactional way.
            let c = authorized(c, &actor, &organization).ok()?;
            let data = invited(
                &ctx,
                &self.settings,
                c,
                &actor,
                &organization,
                &mut fx,
                &mut users,
            )
            .ok()?;
            let reply = Reply::applied(item.envelope.id.as_str(), data);
            gathered.add(item, &ctx, reply, fx).ok()?;
        }

        let rows = std::mem::take(&mut gathered.rows);
        let records = gathered.records(batch);
        let closing = Closing {
            invited: &users,
            records: &records,
            audit: &gathered.audit,
            claim: self.settings.claim_for(&rows),
            outbox: rows,
        };
        match closing::write_checked(&self.pool, closing, &expected).await {
            Ok(Some(closed)) => {
                drop(records);
                metrics::batch("one_statement");
                self.hand_over(closed.claimed).await;
                Some(OneStatement::Written(gathered.handled()))
            }
            missed => {
                if let Err(e) = missed {
                    tracing::debug!(error = %e, size = batch.len(), "one-statement batch failed");
                }
                metrics::batch("missed");
                Some(OneStatement::Missed(read))
            }
        }
    }
}
