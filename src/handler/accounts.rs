//! Organizations: onboard one with its first manager, sync its accounts.

use serde_json::json;
use std::collections::BTreeSet;

use super::invitations::ActivationEmail;
use super::tokens::new_secret;
use super::{Ctx, Effects, FunnelStep, HandlerSettings, Outcome};
use crate::domain::FieldError;
use crate::domain::authz;
use crate::domain::command::{AccountSpec, OnboardOrganization, SyncAccounts};
use crate::domain::event::EventType;
use crate::domain::ids::UserId;
use crate::domain::reply::{Reason, Rejection};
use crate::domain::rights::Grant;
use crate::domain::user::Scope;
use crate::store::audit::AuditEntry;
use crate::store::users::NewUserRow;
use crate::store::{Tx, accounts, users};

/// Every delivery account must link only to contract accounts that exist
/// (in this command or already stored).
fn check_links(delivery: &[AccountSpec], contract: &BTreeSet<String>) -> Result<(), FieldError> {
    for (i, da) in delivery.iter().enumerate() {
        for (j, ca) in da.contract_accounts.iter().enumerate() {
            if !contract.contains(ca.as_str()) {
                return Err(FieldError::new(
                    format!("delivery_accounts[{i}].contract_accounts[{j}]"),
                    format!("unknown contract account {ca}"),
                ));
            }
        }
    }
    Ok(())
}

fn ids(specs: &[AccountSpec]) -> Vec<&str> {
    specs.iter().map(|a| a.id.as_str()).collect()
}

/// `onboard_organization`.
pub(super) async fn onboard(
    tx: &mut Tx<'_>,
    ctx: &Ctx,
    settings: &HandlerSettings,
    c: OnboardOrganization,
    fx: &mut Effects,
) -> Outcome {
    authz::require_no_actor(ctx.actor.is_some(), "onboard_organization")?;
    let contract: BTreeSet<String> = ids(&c.contract_accounts)
        .into_iter()
        .map(str::to_owned)
        .collect();
    check_links(&c.delivery_accounts, &contract)?;
    if !accounts::insert_organization(tx, &c.organization_id, &c.organization_name).await? {
        return Err(Rejection::new(
            Reason::OrganizationExists,
            format!("organization {} was onboarded already", c.organization_id),
        )
        .into());
    }
    accounts::upsert(
        tx,
        &c.organization_id,
        &c.contract_accounts,
        &c.delivery_accounts,
    )
    .await?;
    let manager_id = UserId::new();
    let expires_at = ctx.now + settings.activation_ttl;
    let grant = Grant::everything();
    let token = new_secret()?;
    let inserted = users::insert_invited(
        tx,
        NewUserRow {
            id: manager_id,
            organization_id: &c.organization_id,
            scope: &Scope::MyOrganization,
            user: &c.manager,
            grant: &grant,
            invited_by: None,
            activation_expires_at: expires_at,
            activation_token: &token.hash(),
            issued_at: ctx.now,
        },
    )
    .await?;
    if !inserted {
        return Err(Rejection::new(
            Reason::EmailTaken,
            "manager.email: a user with this email address already exists",
        )
        .into());
    }
    fx.audit(AuditEntry {
        command_id: Some(&ctx.command_id),
        actor_id: None,
        user_id: Some(manager_id.as_uuid()),
        organization_id: c.organization_id.as_str(),
        action: "organization.onboarded",
        before: None,
        after: Some(json!({"status": "invited", "role": "manager"})),
    });
    fx.event(
        EventType::OrganizationOnboarded,
        &c.organization_id,
        json!({
            "organization_id": c.organization_id,
            "name": c.organization_name,
            "contract_accounts": ids(&c.contract_accounts),
            "delivery_accounts": ids(&c.delivery_accounts),
            "manager_id": manager_id,
        }),
    );
    fx.funnel(FunnelStep::Invited);
    fx.event(
        EventType::UserInvited,
        manager_id,
        json!({
            "user_id": manager_id,
            "organization_id": c.organization_id,
            "delivery_account_id": null,
            "type": c.manager.kind,
            "role": grant.role,
            "permissions": grant.permissions,
            "contract_accounts": grant.contract_accounts,
            "delivery_accounts": grant.delivery_accounts,
            "invited_by": null,
            "activation_expires_at": expires_at,
        }),
    );
    fx.email(
        ActivationEmail {
            user_id: manager_id,
            email: c.manager.email.as_str(),
            first_name: c.manager.first_name.as_str(),
            last_name: c.manager.last_name.as_str(),
            locale: c.manager.locale.as_str(),
            organization_name: &c.organization_name,
            inviter_name: None,
            expires_at,
            resend: false,
        }
        .job(&token),
    );
    Ok(json!({"organization_id": c.organization_id, "manager_id": manager_id}))
}

/// `sync_accounts`.
pub(super) async fn sync(tx: &mut Tx<'_>, ctx: &Ctx, c: SyncAccounts, fx: &mut Effects) -> Outcome {
    authz::require_no_actor(ctx.actor.is_some(), "sync_accounts")?;
    if accounts::lock_organization(tx, &c.organization_id)
        .await?
        .is_none()
    {
        return Err(Rejection::new(
            Reason::NotFound,
            format!("no organization {}", c.organization_id),
        )
        .into());
    }
    let mut contract = accounts::account_graph(tx, &c.organization_id)
        .await?
        .contract;
    contract.extend(ids(&c.contract_accounts).into_iter().map(str::to_owned));
    check_links(&c.delivery_accounts, &contract)?;
    accounts::upsert(
        tx,
        &c.organization_id,
        &c.contract_accounts,
        &c.delivery_accounts,
    )
    .await?;
    fx.audit(AuditEntry {
        command_id: Some(&ctx.command_id),
        actor_id: None,
        user_id: None,
        organization_id: c.organization_id.as_str(),
        action: "organization.accounts_synced",
        before: None,
        after: Some(json!({
            "contract_accounts": ids(&c.contract_accounts),
            "delivery_accounts": ids(&c.delivery_accounts),
        })),
    });
    fx.event(
        EventType::AccountsSynced,
        &c.organization_id,
        json!({
            "organization_id": c.organization_id,
            "contract_accounts": ids(&c.contract_accounts),
            "delivery_accounts": ids(&c.delivery_accounts),
        }),
    );
    Ok(json!({
        "organization_id": c.organization_id,
        "contract_accounts": c.contract_accounts.len(),
        "delivery_accounts": c.delivery_accounts.len(),
    }))
}
