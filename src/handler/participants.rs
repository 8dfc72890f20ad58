//! Loads a command's actor and target, refusing what the rules refuse.

use super::Ctx;
use super::Fail;
use crate::domain::authz;
use crate::domain::ids::UserId;
use crate::domain::reply::{Reason, Rejection};
use crate::store::users::UserRecord;
use crate::store::{Tx, users};

/// Loads the acting user and checks it may act at all.
pub(super) async fn load_actor(tx: &mut Tx<'_>, ctx: &Ctx) -> Result<UserRecord, Fail> {
    let record = match ctx.actor {
        Some(id) => users::load_actor(tx, id).await?,
        None => None,
    };
    authz::require_actor(record.as_ref().map(|r| &r.snapshot))?;
    record.ok_or_else(|| Fail::Reject(Rejection::new(Reason::NotAuthorized, "unknown actor")))
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
