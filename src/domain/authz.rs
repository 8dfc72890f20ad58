//! Who may do what to whom: every authorization rule of the contract, once.
//!
//! The handler loads the actor and the target and asks these functions; it
//! never decides on its own. Targets outside the actor's organization are
//! reported `not_found`, so nothing reveals that another tenant's user exists.

use super::access::AccountAccess;
use super::ids::{AccountId, OrganizationId};
use super::permission::PermissionSet;
use super::reply::{Reason, Rejection};
use super::user::{Role, Scope, UserSnapshot, UserStatus};

/// The role, permissions and account access one user gives another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// manager or user.
    pub role: Role,
    /// Permissions from the catalog.
    pub permissions: PermissionSet,
    /// Contract accounts the user may see.
    pub contract_accounts: AccountAccess,
    /// Delivery accounts the user may see.
    pub delivery_accounts: AccountAccess,
}

impl Grant {
    /// What an organization's first manager gets: everything.
    pub fn everything() -> Grant {
        Grant {
            role: Role::Manager,
            permissions: PermissionSet::all(),
            contract_accounts: AccountAccess::All,
            delivery_accounts: AccountAccess::All,
        }
    }
}

fn refuse(message: impl Into<String>) -> Rejection {
    Rejection::new(Reason::NotAuthorized, message)
}

/// An actor command needs a known actor; a missing or unknown one is refused.
pub fn require_actor(actor: Option<&UserSnapshot>) -> Result<&UserSnapshot, Rejection> {
    let actor = actor.ok_or_else(|| refuse("this command needs a known `actor`"))?;
    if actor.status != UserStatus::Active {
        return Err(refuse("only an active user may act"));
    }
    Ok(actor)
}

/// A system command (from the portal itself) must not carry an end user's actor.
pub fn require_no_actor(has_actor: bool, command: &str) -> Result<(), Rejection> {
    if has_actor {
        Err(refuse(format!(
            "{command} is a system command and takes no `actor`"
        )))
    } else {
        Ok(())
    }
}

/// A target in another organization is invisible: `not_found`.
pub fn check_visible(actor: &UserSnapshot, target: &UserSnapshot) -> Result<(), Rejection> {
    if actor.organization_id == target.organization_id {
        Ok(())
    } else {
        Err(Rejection::new(Reason::NotFound, "no such user"))
    }
}

/// May `actor` manage users that live in `organization` / `scope`?
///
/// Only an active manager of the same organization; a delivery-account
/// manager only inside its own delivery account; an organization manager
/// only in delivery accounts it has access to.
pub fn check_manages(
    actor: &UserSnapshot,
    organization: &OrganizationId,
    scope: &Scope,
) -> Result<(), Rejection> {
    if actor.status != UserStatus::Active {
        return Err(refuse("only an active user may act"));
    }
    if actor.role != Role::Manager {
        return Err(refuse("only a manager may manage users"));
    }
    if &actor.organization_id != organization {
        return Err(refuse("you may only manage users of your own organization"));
    }
    match (&actor.scope, scope) {
        (Scope::MyOrganization, Scope::MyOrganization) => Ok(()),
        (Scope::MyOrganization, Scope::DeliveryAccount(da)) => {
            if delivery_account_visible(&actor.delivery_accounts, da) {
                Ok(())
            } else {
                Err(refuse(format!(
                    "you have no access to delivery account {da}"
                )))
            }
        }
        (Scope::DeliveryAccount(own), Scope::DeliveryAccount(da)) if own == da => Ok(()),
        (Scope::DeliveryAccount(_), _) => Err(refuse(
            "a delivery-account manager manages users of its own delivery account only",
        )),
    }
}

fn delivery_account_visible(access: &AccountAccess, da: &AccountId) -> bool {
    match access {
        AccountAccess::All => true,
        AccountAccess::Only(ids) => ids.contains(da),
    }
}

/// Nobody grants a permission, contract account or delivery account it does
/// not hold itself (`"all"` included).
pub fn check_grant(actor: &UserSnapshot, grant: &Grant) -> Result<(), Rejection> {
    if !grant.permissions.is_subset(&actor.permissions) {
        let missing: Vec<String> = grant
            .permissions
            .iter()
            .filter(|p| !actor.permissions.contains(*p))
            .map(|p| p.as_str().to_owned())
            .collect();
        return Err(refuse(format!(
            "you cannot grant permissions you do not hold: {}",
            missing.join(", ")
        )));
    }
    if !grant.contract_accounts.is_within(&actor.contract_accounts) {
        return Err(refuse(format!(
            "you cannot grant contract accounts you do not hold: {}",
            grant
                .contract_accounts
                .missing_from(&actor.contract_accounts)
                .join(", ")
        )));
    }
    if !grant.delivery_accounts.is_within(&actor.delivery_accounts) {
        return Err(refuse(format!(
            "you cannot grant delivery accounts you do not hold: {}",
            grant
                .delivery_accounts
                .missing_from(&actor.delivery_accounts)
                .join(", ")
        )));
    }
    Ok(())
}

/// May `actor` invite a user into `organization` / `scope` with `grant`?
pub fn check_invite(
    actor: &UserSnapshot,
    organization: &OrganizationId,
    scope: &Scope,
    grant: &Grant,
) -> Result<(), Rejection> {
    check_manages(actor, organization, scope)?;
    check_grant(actor, grant)
}

/// May `actor` act on `target` as its manager (resend, remove, access)?
pub fn check_manages_user(actor: &UserSnapshot, target: &UserSnapshot) -> Result<(), Rejection> {
    check_visible(actor, target)?;
    check_manages(actor, &target.organization_id, &target.scope)
}

/// May `actor` edit `target`'s profile? The user itself, or its manager.
pub fn check_edit_profile(actor: &UserSnapshot, target: &UserSnapshot) -> Result<(), Rejection> {
    check_visible(actor, target)?;
    if actor.id == target.id {
        return Ok(());
    }
    if actor.role == Role::User {
        return Err(refuse("a user may change only its own profile"));
    }
    check_manages(actor, &target.organization_id, &target.scope)
}

/// May `actor` remove `target`? Not itself, and never the organization's last
/// active manager (`active_managers` counts the organization's active managers).
pub fn check_remove(
    actor: &UserSnapshot,
    target: &UserSnapshot,
    active_managers: i64,
) -> Result<(), Rejection> {
    check_manages_user(actor, target)?;
    if actor.id == target.id {
        return Err(refuse("you cannot remove yourself"));
    }
    if target.role == Role::Manager && target.status == UserStatus::Active && active_managers <= 1
    {
        return Err(Rejection::new(
            Reason::LastManager,
            "this is the organization's last active manager",
        ));
    }
    Ok(())
}

/// May `actor` change `target`'s access to `grant`? Its manager, within what
/// it holds; and never demote the organization's last active manager.
pub fn check_update_access(
    actor: &UserSnapshot,
    target: &UserSnapshot,
    grant: &Grant,
    active_managers: i64,
) -> Result<(), Rejection> {
    check_manages_user(actor, target)?;
    check_grant(actor, grant)?;
    if target.role == Role::Manager
        && grant.role != Role::Manager
        && target.status == UserStatus::Active
        && active_managers <= 1
    {
        return Err(Rejection::new(
            Reason::LastManager,
            "this is the organization's last active manager",
        ));
    }
    Ok(())
}
