//! Loads a command's actor and target, refusing what the rules refuse.

use super::Ctx;
use super::Fail;
use crate::domain::authz;
use crate::domain::ids::{OrganizationId, UserId};
use crate::domain::reply::{Reason, Rejection};
use crate::store::accounts::OrganizationAccounts;
use crate::store::fingerprint::Fingerprint;
use crate::store::users::UserRecord;
use crate::store::{Tx, users};

/// Loads the acting user (unless the transaction read it already) and
/// checks it may act at all.
pub(super) async fn load_actor(tx: &mut Tx<'_>, ctx: &Ctx) -> Result<UserRecord, Fail> {
    if let Some(read) = &ctx.read.actor {
        return checked_actor(Some(UserRecord::clone(read)));
    }
    let record = match ctx.actor {
        Some(id) => users::load_actor(tx, id).await?,
        None => None,
    };
    checked_actor(record)
}

/// Loads the acting user, checked as [`load_actor`] does, with its row's
/// fingerprint, and the organization `organization` in the same round trip
/// (`None`: it does not exist).
pub(super) async fn load_actor_and_organization(
    tx: &mut Tx<'_>,
    ctx: &Ctx,
    organization: &OrganizationId,
) -> Result<(UserRecord, Fingerprint, Option<OrganizationAccounts>), Fail> {
    let (found, organization) = match ctx.actor {
        Some(id) => users::load_actor_and_organization(tx, id, organization).await?,
        None => (None, None),
    };
    authz::require_actor(found.as_ref().map(|(r, _)| &r.snapshot))?;
    let (record, fingerprint) = found.ok_or_else(unknown_actor)?;
    Ok((record, fingerprint, organization))
}

/// The acting user, if it may act at all.
fn checked_actor(record: Option<UserRecord>) -> Result<UserRecord, Fail> {
    authz::require_actor(record.as_ref().map(|r| &r.snapshot))?;
    record.ok_or_else(unknown_actor)
}

/// The refusal of an actor that is not a user.
fn unknown_actor() -> Fail {
    Fail::Reject(Rejection::new(Reason::NotAuthorized, "unknown actor"))
}

/// The target user `id`, locked: as the batch read it (see `ReadAhead`),
/// else from the database; `not_found` when it does not exist.
pub(super) async fn load_target_read(
    tx: &mut Tx<'_>,
    ctx: &Ctx,
    id: UserId,
) -> Result<UserRecord, Fail> {
    match &ctx.read.target {
        Some(read) if read.snapshot.id == id => {
            note_user(id);
            Ok(UserRecord::clone(read))
        }
        _ => load_target(tx, id).await,
    }
}

/// Loads a target user by id, locked; `not_found` when it does not exist.
pub(super) async fn load_target(tx: &mut Tx<'_>, id: UserId) -> Result<UserRecord, Fail> {
    note_user(id);
    users::lock_by_id(tx, id)
        .await?
        .ok_or_else(|| Fail::Reject(Rejection::new(Reason::NotFound, "no such user")))
}

/// Adds the user a command is about to the current log span (`user_id`).
pub(super) fn note_user(id: UserId) {
    tracing::Span::current().record("user_id", tracing::field::display(id));
}
