//! `remove_user`: ends portal access, keeps the contact on record.

use serde_json::json;

use super::participants::{load_actor, load_target};
use super::{Ctx, Effects, FunnelStep, Outcome};
use crate::domain::authz;
use crate::domain::event::EventType;
use crate::domain::ids::UserId;
use crate::domain::user::UserStatus;
use crate::store::audit::AuditEntry;
use crate::store::{Tx, accounts, tokens, users};

/// Locks the actor's organization before any user row, so every change that
/// counts managers (remove, demote) is serialized per organization and two
/// managers removing each other cannot both succeed.
pub(super) async fn lock_actor_organization(tx: &mut Tx<'_>, ctx: &Ctx) -> Result<(), super::Fail> {
    if let Some(actor) = ctx.actor
        && let Some(org) = users::organization_of(tx, actor).await?
    {
        accounts::lock_organization(tx, &org).await?;
    }
    Ok(())
}

/// `remove_user`.
pub(super) async fn remove(
    tx: &mut Tx<'_>,
    ctx: &Ctx,
    user_id: UserId,
    fx: &mut Effects,
) -> Outcome {
    lock_actor_organization(tx, ctx).await?;
    let actor = load_actor(tx, ctx).await?;
    let target = load_target(tx, user_id).await?;
    let managers = users::count_organization_managers(tx, &target.snapshot.organization_id).await?;
    authz::check_remove(&actor.snapshot, &target.snapshot, managers)?;
    tokens::revoke_all(tx, user_id, None).await?;
    users::remove(tx, user_id, ctx.now).await?;
    fx.audit(AuditEntry {
        command_id: Some(&ctx.command_id),
        actor_id: Some(actor.snapshot.id.as_uuid()),
        user_id: Some(user_id.as_uuid()),
        organization_id: target.snapshot.organization_id.as_str(),
        action: "user.removed",
        before: Some(json!({"status": target.snapshot.status, "access": target.access_json()})),
        after: Some(json!({"status": UserStatus::Removed})),
    });
    if matches!(
        target.snapshot.status,
        UserStatus::Invited | UserStatus::Expired
    ) {
        fx.funnel(FunnelStep::Removed);
    }
    fx.event(
        EventType::UserRemoved,
        user_id,
        json!({
            "user_id": user_id,
            "organization_id": target.snapshot.organization_id,
            "removed_by": actor.snapshot.id,
            "previous_status": target.snapshot.status,
        }),
    );
    Ok(json!({"user_id": user_id, "status": "removed"}))
}
