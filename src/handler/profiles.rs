//! Profile and access changes: `update_profile`, `update_access`.

use serde_json::json;

use super::participants::{load_actor, load_target, load_target_read};
use super::removal::lock_actor_organization;
use super::{Ctx, Effects, Outcome};
use crate::domain::authz;
use crate::domain::command::{AccessChanges, ProfileChanges};
use crate::domain::country::CountryCode;
use crate::domain::event::EventType;
use crate::domain::ids::UserId;
use crate::domain::name::PersonName;
use crate::domain::phone::PhoneNumber;
use crate::domain::user::{self, UserKind};
use crate::store::audit::AuditEntry;
use crate::store::{StoreError, Tx, accounts, users};

/// `update_profile`: the user itself or its manager.
pub(super) async fn update_profile(
    tx: &mut Tx<'_>,
    ctx: &Ctx,
    user_id: UserId,
    changes: ProfileChanges,
    fx: &mut Effects,
) -> Outcome {
    let actor = load_actor(tx, ctx).await?;
    let target = load_target_read(tx, ctx, user_id).await?;
    authz::check_edit_profile(&actor.snapshot, &target.snapshot)?;
    user::check_not_removed(target.snapshot.status)?;
    let before = target.profile_json();
    let mut after = target.clone();
    let mut changed = Vec::new();
    if let Some(first) = changes.first_name {
        after.first_name = first.as_str().to_owned();
        changed.push("first_name");
    }
    if let Some(last) = changes.last_name {
        let last = PersonName::parse(&last, "last_name", target.kind == UserKind::Group)?;
        after.last_name = last.as_str().to_owned();
        changed.push("last_name");
    }
    let country = match changes.country {
        Some(c) => {
            after.country = c.as_str().to_owned();
            changed.push("country");
            c
        }
        None => CountryCode::parse(&target.country)
            .map_err(|e| StoreError::corrupt("users", e.to_string()))?,
    };
    if let Some(phone) = changes.phone {
        after.phone = PhoneNumber::parse(&phone, Some(country))?
            .as_str()
            .to_owned();
        changed.push("phone");
    }
    if let Some(locale) = changes.locale {
        after.locale = locale.as_str().to_owned();
        changed.push("locale");
    }
    let after_json = after.profile_json();
    if after_json == before {
        return Ok(json!({"user_id": user_id, "changed": []}));
    }
    users::update_profile(tx, &after).await?;
    fx.audit(AuditEntry {
        command_id: Some(&ctx.command_id),
        actor_id: Some(actor.snapshot.id.as_uuid()),
        user_id: Some(user_id.as_uuid()),
        organization_id: target.snapshot.organization_id.as_str(),
        action: "user.profile_updated",
        before: Some(before),
        after: Some(after_json.clone()),
    });
    fx.event(
        EventType::UserProfileUpdated,
        user_id,
        json!({
            "user_id": user_id,
            "organization_id": target.snapshot.organization_id,
            "updated_by": actor.snapshot.id,
            "changed": changed,
            "profile": after_json,
        }),
    );
    Ok(json!({"user_id": user_id, "changed": changed}))
}

/// `update_access`: a manager, within what it holds itself.
pub(super) async fn update_access(
    tx: &mut Tx<'_>,
    ctx: &Ctx,
    user_id: UserId,
    changes: AccessChanges,
    fx: &mut Effects,
) -> Outcome {
    lock_actor_organization(tx, ctx).await?;
    let actor = load_actor(tx, ctx).await?;
    let target = load_target(tx, user_id).await?;
    let current = &target.snapshot;
    let managers = users::count_organization_managers(tx, &current.organization_id).await?;
    let graph = accounts::account_graph(tx, &current.organization_id).await?;
    let grant = authz::decide_update_access(&actor.snapshot, current, &changes, &graph, managers)?;
    let before = target.access_json();
    let after = json!({
        "role": grant.role,
        "permissions": grant.permissions,
        "contract_accounts": grant.contract_accounts,
        "delivery_accounts": grant.delivery_accounts,
    });
    users::update_access(tx, user_id, &grant).await?;
    fx.audit(AuditEntry {
        command_id: Some(&ctx.command_id),
        actor_id: Some(actor.snapshot.id.as_uuid()),
        user_id: Some(user_id.as_uuid()),
        organization_id: current.organization_id.as_str(),
        action: "user.access_updated",
        before: Some(before.clone()),
        after: Some(after.clone()),
    });
    fx.event(
        EventType::UserAccessUpdated,
        user_id,
        json!({
            "user_id": user_id,
            "organization_id": current.organization_id,
            "updated_by": actor.snapshot.id,
            "before": before,
            "after": after,
        }),
    );
    Ok(json!({"user_id": user_id, "access": after}))
}
