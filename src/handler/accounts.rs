//! Organizations: onboard one with its first manager (again, while nobody
//! can enter it), sync its accounts.

use serde_json::{Value, json};
use std::collections::BTreeSet;

use super::invitations::ActivationEmail;
use super::tokens::{issue_token, new_secret};
use super::{Ctx, Effects, Fail, FunnelStep, HandlerSettings, Outcome};
use crate::domain::FieldError;
use crate::domain::authz;
use crate::domain::command::{AccountSpec, OnboardOrganization, SyncAccounts};
use crate::domain::event::EventType;
use crate::domain::ids::{OrganizationId, UserId};
use crate::domain::onboarding::{self, Onboarding, Reinvited};
use crate::domain::reply::{Reason, Rejection};
use crate::domain::rights::Grant;
use crate::domain::token::TokenPurpose;
use crate::domain::user::{self, Scope};
use crate::store::audit::AuditEntry;
use crate::store::tokens as store_tokens;
use crate::store::users::{NewUserRow, UserRecord};
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

/// `onboard_organization`: a new organization with its first manager; an
/// existing one without an active organization-level manager gets its
/// manager invited again (see [`onboarding`]).
pub(super) async fn onboard(
    tx: &mut Tx<'_>,
    ctx: &Ctx,
    settings: &HandlerSettings,
    c: OnboardOrganization,
    fx: &mut Effects,
) -> Outcome {
    authz::require_no_actor(ctx.actor.is_some(), "onboard_organization")?;
    let created =
        accounts::insert_organization(tx, &c.organization_id, &c.organization_name).await?;
    // An existing organization is locked, as changes that count its managers
    // do, and keeps its stored name.
    let stored_name = if created {
        None
    } else {
        accounts::lock_organization(tx, &c.organization_id).await?
    };
    let has_manager = match stored_name {
        Some(_) => users::count_organization_managers(tx, &c.organization_id).await? > 0,
        None => false,
    };
    match onboarding::decide(!created, has_manager)? {
        Onboarding::Create => create(tx, ctx, settings, c, fx).await,
        Onboarding::Reinvite => {
            let name = stored_name.unwrap_or_else(|| c.organization_name.clone());
            reinvite(tx, ctx, settings, c, &name, fx).await
        }
    }
}

/// A new organization (just inserted): its accounts and its first manager.
async fn create(
    tx: &mut Tx<'_>,
    ctx: &Ctx,
    settings: &HandlerSettings,
    c: OnboardOrganization,
    fx: &mut Effects,
) -> Outcome {
    let contract: BTreeSet<String> = ids(&c.contract_accounts)
        .into_iter()
        .map(str::to_owned)
        .collect();
    check_links(&c.delivery_accounts, &contract)?;
    accounts::upsert(
        tx,
        &c.organization_id,
        &c.contract_accounts,
        &c.delivery_accounts,
    )
    .await?;
    let manager_id = invite_manager(tx, ctx, settings, &c, &c.organization_name, fx).await?;
    audit_manager(
        fx,
        ctx,
        &c,
        manager_id,
        "organization.onboarded",
        json!({"status": "invited", "role": "manager"}),
    );
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
    Ok(onboarded(&c, manager_id))
}

/// Invites `c`'s manager as a new user with everything: `user.invited`
/// and the activation email.
async fn invite_manager(
    tx: &mut Tx<'_>,
    ctx: &Ctx,
    settings: &HandlerSettings,
    c: &OnboardOrganization,
    organization_name: &str,
    fx: &mut Effects,
) -> Result<UserId, Fail> {
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
            organization_name,
            inviter_name: None,
            expires_at,
            resend: false,
        }
        .job(&token),
    );
    Ok(manager_id)
}

/// An organization onboarded again while nobody can enter it (the
/// organization is locked): its accounts are upserted as `sync_accounts`
/// does, its stored name stays, and its manager is invited again.
async fn reinvite(
    tx: &mut Tx<'_>,
    ctx: &Ctx,
    settings: &HandlerSettings,
    c: OnboardOrganization,
    organization_name: &str,
    fx: &mut Effects,
) -> Outcome {
    let (contract, delivery) = (&c.contract_accounts, &c.delivery_accounts);
    if !contract.is_empty() || !delivery.is_empty() {
        upsert_accounts(tx, &c.organization_id, contract, delivery, fx).await?;
    }
    let holder = users::lock_by_email(tx, &c.manager.email).await?;
    let whom = onboarding::reinvited(&c.organization_id, holder.as_ref().map(|h| &h.snapshot))?;
    let manager_id = match (whom, holder) {
        (Reinvited::Same(_), Some(holder)) => {
            reinvite_same(tx, ctx, settings, &c, organization_name, holder, fx).await?
        }
        _ => invite_manager(tx, ctx, settings, &c, organization_name, fx).await?,
    };
    audit_manager(
        fx,
        ctx,
        &c,
        manager_id,
        "organization.manager_reinvited",
        json!({
            "status": "invited",
            "role": "manager",
            "contract_accounts": ids(&c.contract_accounts),
            "delivery_accounts": ids(&c.delivery_accounts),
        }),
    );
    Ok(onboarded(&c, manager_id))
}

/// Audits what onboarding `c` did to its manager, `after` it.
fn audit_manager(
    fx: &mut Effects,
    ctx: &Ctx,
    c: &OnboardOrganization,
    manager_id: UserId,
    action: &'static str,
    after: Value,
) {
    fx.audit(AuditEntry {
        command_id: Some(&ctx.command_id),
        actor_id: None,
        user_id: Some(manager_id.as_uuid()),
        organization_id: c.organization_id.as_str(),
        action,
        before: None,
        after: Some(after),
    });
}

/// The reply to an onboarding.
fn onboarded(c: &OnboardOrganization, manager_id: UserId) -> Value {
    json!({"organization_id": c.organization_id, "manager_id": manager_id})
}

/// The organization's own inactive manager, invited again as
/// `resend_activation` does (by nobody): its stored profile, a fresh token
/// and TTL (earlier tokens revoked) after the resend cooldown,
/// `user.activation_resent` and the activation email.
async fn reinvite_same(
    tx: &mut Tx<'_>,
    ctx: &Ctx,
    settings: &HandlerSettings,
    c: &OnboardOrganization,
    organization_name: &str,
    manager: UserRecord,
    fx: &mut Effects,
) -> Result<UserId, Fail> {
    let id = manager.snapshot.id;
    let previous = manager.snapshot.status;
    let last = store_tokens::last_issued_at(tx, id, TokenPurpose::Activation).await?;
    user::check_resendable(previous, last, ctx.now, settings.resend_cooldown)?;
    let expires_at = ctx.now + settings.activation_ttl;
    let token = issue_token(tx, id, TokenPurpose::Activation, ctx.now, expires_at).await?;
    users::reinvite(tx, id, expires_at).await?;
    fx.event(
        EventType::UserActivationResent,
        id,
        json!({
            "user_id": id,
            "organization_id": c.organization_id,
            "resent_by": null,
            "previous_status": previous,
            "activation_expires_at": expires_at,
        }),
    );
    fx.email(
        ActivationEmail {
            user_id: id,
            email: manager.snapshot.email.as_str(),
            first_name: &manager.first_name,
            last_name: &manager.last_name,
            locale: &manager.locale,
            organization_name,
            inviter_name: None,
            expires_at,
            resend: true,
        }
        .job(&token),
    );
    Ok(id)
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
    upsert_accounts(
        tx,
        &c.organization_id,
        &c.contract_accounts,
        &c.delivery_accounts,
        fx,
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
    Ok(json!({
        "organization_id": c.organization_id,
        "contract_accounts": c.contract_accounts.len(),
        "delivery_accounts": c.delivery_accounts.len(),
    }))
}

/// Upserts accounts into an existing (locked) organization, as
/// `sync_accounts` does: every delivery account links only to contract
/// accounts stored or named here; `organization.accounts_synced` follows.
async fn upsert_accounts(
    tx: &mut Tx<'_>,
    organization: &OrganizationId,
    contract_accounts: &[AccountSpec],
    delivery_accounts: &[AccountSpec],
    fx: &mut Effects,
) -> Result<(), Fail> {
    let mut contract = accounts::account_graph(tx, organization).await?.contract;
    contract.extend(ids(contract_accounts).into_iter().map(str::to_owned));
    check_links(delivery_accounts, &contract)?;
    accounts::upsert(tx, organization, contract_accounts, delivery_accounts).await?;
    fx.event(
        EventType::AccountsSynced,
        organization,
        json!({
            "organization_id": organization,
            "contract_accounts": ids(contract_accounts),
            "delivery_accounts": ids(delivery_accounts),
        }),
    );
    Ok(())
}
