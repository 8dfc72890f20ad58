//! Invite batches written as one statement that is its own transaction.
//!
//! A batch of invites in an explicit transaction is four round trips
//! (`BEGIN`, read the actor and the organization, the closing statement,
//! `COMMIT`), each a wake-up of a database backend while the batch's
//! commands wait. But a
//! bulk onboarding is the same manager inviting into the same organization
//! batch after batch, and invites change neither. So the handler keeps the
//! actor and the organization a committed invite read, with their
//! fingerprints, and writes the next batch of that actor's invites into
//! that organization as one statement, committed on its own like any
//! statement outside `BEGIN` (`store::closing::write_checked`): everything
//! a command writes still commits together or not at all. The statement re-reads the actor
//! (share-locked, as the transaction would) and the organization's accounts
//! and writes nothing unless both are unchanged; an email taken or a
//! command id recorded already (committed or not) fails it whole, as the
//! unique indexes see it.
//! Anything else (a refusal, another kind of command, a change, a
//! conflict) and the batch goes the transactional way of `handler::batch`,
//! which gives each command the answer it gets there.

use chrono::Utc;
use std::sync::PoisonError;

use super::batch::{BatchItem, Gathered};
use super::invitations::{InviteCache, authorized, invited};
use super::{Ctx, Effects, Handled, Handler};
use crate::domain::command::Command;
use crate::domain::reply::Reply;
use crate::store::closing::{self, Closing, Expected};
use crate::store::users::InvitedUsers;
use crate::telemetry::metrics;

impl Handler {
    /// Keeps what a committed transaction's invites read, for
    /// [`Handler::try_one_statement`].
    pub(super) fn remember(&self, committed: &InviteCache) {
        self.known
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remember(committed);
    }

    /// `batch` written as one statement, if every command in it is an
    /// invite by the same actor into the same organization, both read by
    /// an earlier commit and unchanged since, and none is refused; `None`
    /// when it was not (nothing was written).
    pub(super) async fn try_one_statement(&self, batch: &[BatchItem<'_>]) -> Option<Vec<Handled>> {
        let actor_id = batch.first()?.envelope.actor?;
        let invite =
            |item: &BatchItem<'_>| match Command::parse(item.envelope.kind, &item.envelope.data) {
                Ok(Command::InviteUser(c)) if item.envelope.actor == Some(actor_id) => Some(c),
                _ => None,
            };
        // The first command says whose and where; the rest are parsed only
        // if that actor and organization are known.
        let mut invites = Vec::with_capacity(batch.len());
        invites.push(invite(batch.first()?)?);
        let organization_id = invites[0].organization_id.clone();
        let (actor, actor_fingerprint, organization) = self
            .known
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .known(actor_id, &organization_id)?;
        for item in &batch[1..] {
            let c = invite(item)?;
            if c.organization_id != organization_id {
                return None;
            }
            invites.push(c);
        }

        let mut users = InvitedUsers::default();
        let mut gathered = Gathered::with_capacity(batch.len());
        for (item, c) in batch.iter().zip(invites) {
            let _entered = item.span.enter();
            let ctx = Ctx {
                command_id: item.envelope.id.as_str().to_owned(),
                actor: Some(actor_id),
                now: Utc::now(),
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
        let expected = Expected {
            actor: actor_id.as_uuid(),
            actor_fingerprint: &actor_fingerprint,
            organization: organization_id.as_str(),
            organization_fingerprint: &organization.fingerprint,
        };
        match closing::write_checked(&self.pool, closing, expected).await {
            Ok(Some(closed)) => {
                drop(records);
                metrics::batch("one_statement");
                self.hand_over(closed.claimed).await;
                Some(gathered.handled())
            }
            missed => {
                if let Err(e) = missed {
                    tracing::debug!(error = %e, size = batch.len(), "one-statement batch failed");
                }
                self.known
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .forget(actor_id, &organization_id);
                metrics::batch("missed");
                None
            }
        }
    }
}
