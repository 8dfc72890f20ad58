//! Who may do what to whom: every authorization rule of the contract, once.
//!
//! The handler loads the actor and the target and asks these functions; it
//! never decides on its own. Each decision checks, in this order, the actor,
//! its right over the target, then the target's state and the data, so a
//! refused actor learns nothing about a user it may not act on. Targets
//! outside the actor's organization are reported `not_found`, so nothing
//! reveals that another tenant's user exists.
//!
//! The rule under all of them: a manager acts only on users whose rights
//! are within its own ([`Rights::is_within`]), and leaves every user it
//! changes or invites with rights within its own. The property tests in
//! `trust_properties` check this over generated organizations and command
//! sequences.

use super::access::AccountAccess;
use super::command::AccessChanges;
use super::ids::{AccountId, OrganizationId};
use super::reply::{Reason, Rejection};
use super::rights::{AccountGraph, Grant, Rights};
use super::user::{self, Role, Scope, UserSnapshot, UserStatus};

fn refuse(message: impl Into<String>) -> Rejection {
    Rejection::new(Reason::NotAuthorized, message)
}

fn last_manager() -> Rejection {
    Rejection::new(
        Reason::LastManager,
        "this is the organization's last active My Organization manager",
    )
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

/// Nobody grants a role, permission, contract account or delivery account
/// it does not hold itself (`"all"` included).
pub fn check_grant(actor: &UserSnapshot, grant: &Grant) -> Result<(), Rejection> {
    if grant.role == Role::Manager && actor.role != Role::Manager {
        return Err(refuse("you cannot make a manager"));
    }
    let missing: Vec<&str> = grant
        .permissions
        .iter()
        .filter(|p| !actor.permissions.contains(*p))
        .map(|p| p.as_str())
        .collect();
    if !missing.is_empty() {
        return Err(refuse(format!(
            "you cannot grant permissions you do not hold: {}",
            missing.join(", ")
        )));
    }
    for (wanted, held, what) in [
        (
            &grant.contract_accounts,
            &actor.contract_accounts,
            "contract",
        ),
        (
            &grant.delivery_accounts,
            &actor.delivery_accounts,
            "delivery",
        ),
    ] {
        if !wanted.is_within(held) {
            return Err(refuse(format!(
                "you cannot grant {what} accounts you do not hold: {}",
                wanted.missing_from(held).join(", ")
            )));
        }
    }
    Ok(())
}

/// May `actor` invite a user into `organization` / `scope` with `grant`?
/// The grant fitted to the scope, if so: within the actor's own rights and
/// within the organization's account graph.
pub fn decide_invite(
    actor: &UserSnapshot,
    organization: &OrganizationId,
    scope: &Scope,
    grant: Grant,
    graph: &AccountGraph,
) -> Result<Grant, Rejection> {
    check_manages(actor, organization, scope)?;
    let grant = grant.fitted_to(scope)?;
    check_grant(actor, &grant)?;
    graph.check(scope, &grant)?;
    Ok(grant)
}

/// May `actor` act on `target` as its manager (resend, remove, access,
/// profile)? Only a manager of the target's organization and scope whose
/// own rights contain all of the target's. The refusal says nothing about
/// the target: not its scope, its accounts, nor its state.
pub fn check_manages_user(actor: &UserSnapshot, target: &UserSnapshot) -> Result<(), Rejection> {
    check_visible(actor, target)?;
    if actor.role != Role::Manager {
        return Err(refuse("only a manager may manage users"));
    }
    let manages = check_manages(actor, &target.organization_id, &target.scope).is_ok();
    if manages && Rights::of(target).is_within(&Rights::of(actor)) {
        Ok(())
    } else {
        Err(refuse(NOT_YOURS))
    }
}

/// The refusal of an action on a user the actor does not manage.
pub const NOT_YOURS: &str =
    "you may act only on users of your scope whose rights are within your own";

/// May `actor` edit `target`'s profile? The user itself, or its manager.
pub fn check_edit_profile(actor: &UserSnapshot, target: &UserSnapshot) -> Result<(), Rejection> {
    check_visible(actor, target)?;
    if actor.id == target.id {
        return Ok(());
    }
    if actor.role == Role::User {
        return Err(refuse("a user may change only its own profile"));
    }
    check_manages_user(actor, target)
}

/// Does `user` count among the organization's managers, who must never
/// all be gone? Active managers of My Organization only: a delivery
/// account's managers cannot manage the organization. (The store's count,
/// `users::count_organization_managers`, selects the same users.)
pub fn is_organization_manager(user: &UserSnapshot) -> bool {
    user.role == Role::Manager
        && user.scope == Scope::MyOrganization
        && user.status == UserStatus::Active
}

/// Would `target` leaving the organization's managers (removed or demoted)
/// leave none? `organization_managers` counts them, `target` included when
/// it is one.
fn leaves_no_manager(target: &UserSnapshot, organization_managers: i64) -> bool {
    is_organization_manager(target) && organization_managers <= 1
}

/// May `actor` remove `target`? Its manager; not itself; not a removed
/// user; never the organization's last active My Organization manager
/// (`organization_managers` counts the organization's active managers of
/// My Organization).
pub fn check_remove(
    actor: &UserSnapshot,
    target: &UserSnapshot,
    organization_managers: i64,
) -> Result<(), Rejection> {
    check_manages_user(actor, target)?;
    if actor.id == target.id {
        return Err(refuse("you cannot remove yourself"));
    }
    user::check_not_removed(target.status)?;
    if leaves_no_manager(target, organization_managers) {
        return Err(last_manager());
    }
    Ok(())
}

/// The grant `target` holds after `changes`: what they name, the rest as it is.
fn changed_grant(target: &UserSnapshot, changes: &AccessChanges) -> Grant {
    let current = Grant::of(target);
    Grant {
        role: changes.role.unwrap_or(current.role),
        permissions: changes.permissions.clone().unwrap_or(current.permissions),
        contract_accounts: (changes.contract_accounts.clone()).unwrap_or(current.contract_accounts),
        delivery_accounts: (changes.delivery_accounts.clone()).unwrap_or(current.delivery_accounts),
    }
}

/// May `actor` change `target`'s access by `changes`? The grant `target`
/// ends with, if so: `actor` manages `target`, the target is not removed,
/// the resulting grant (every field, named in `changes` or not) is within
/// the actor's rights and the organization's account graph, and the
/// organization keeps an active My Organization manager
/// (`organization_managers` counts them).
pub fn decide_update_access(
    actor: &UserSnapshot,
    target: &UserSnapshot,
    changes: &AccessChanges,
    graph: &AccountGraph,
    organization_managers: i64,
) -> Result<Grant, Rejection> {
    check_manages_user(actor, target)?;
    user::check_not_removed(target.status)?;
    let grant = changed_grant(target, changes).fitted_to(&target.scope)?;
    check_grant(actor, &grant)?;
    graph.check(&target.scope, &grant)?;
    if grant.role != Role::Manager && leaves_no_manager(target, organization_managers) {
        return Err(last_manager());
    }
    Ok(grant)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::fixtures::{da, org, snapshot};
    use crate::domain::ids::UserId;
    use crate::domain::permission::{Permission, PermissionSet};

    /// CA-1, CA-2; DA-1 and DA-2, both linked to CA-1.
    fn graph() -> AccountGraph {
        let linked = || ["CA-1".to_owned()].into();
        AccountGraph {
            contract: ["CA-1".to_owned(), "CA-2".to_owned()].into(),
            delivery: [("DA-1".to_owned(), linked()), ("DA-2".to_owned(), linked())].into(),
        }
    }

    fn only(ids: &[&str]) -> AccountAccess {
        AccountAccess::Only(ids.iter().map(|i| da(i)).collect())
    }

    fn user(o: &str, scope: Scope, role: Role, status: UserStatus) -> UserSnapshot {
        snapshot(o, scope, role, status)
    }

    fn org_manager() -> UserSnapshot {
        user(
            "a",
            Scope::MyOrganization,
            Role::Manager,
            UserStatus::Active,
        )
    }

    fn da_manager() -> UserSnapshot {
        let mut u = user(
            "a",
            Scope::DeliveryAccount(da("DA-1")),
            Role::Manager,
            UserStatus::Active,
        );
        u.delivery_accounts = only(&["DA-1"]);
        u
    }

    fn limited_manager() -> UserSnapshot {
        let mut u = org_manager();
        u.delivery_accounts = only(&["DA-2"]);
        u.contract_accounts = only(&["CA-1"]);
        u.permissions = [Permission::CasesView].into_iter().collect();
        u
    }

    fn plain_user() -> UserSnapshot {
        user("a", Scope::MyOrganization, Role::User, UserStatus::Active)
    }

    fn small_grant() -> Grant {
        Grant {
            role: Role::User,
            permissions: [Permission::CasesView].into_iter().collect(),
            contract_accounts: only(&["CA-1"]),
            delivery_accounts: AccountAccess::Only(Default::default()),
        }
    }

    fn outcome(r: Result<(), Rejection>) -> Option<Reason> {
        r.err().map(|e| e.reason)
    }

    #[test]
    fn invite_matrix() {
        use Reason::NotAuthorized as NA;
        let my = Scope::MyOrganization;
        let da1 = Scope::DeliveryAccount(da("DA-1"));
        let da2 = Scope::DeliveryAccount(da("DA-2"));
        let mut inactive = org_manager();
        inactive.status = UserStatus::Invited;
        let mut removed = org_manager();
        removed.status = UserStatus::Removed;
        let other_org = user(
            "b",
            Scope::MyOrganization,
            Role::Manager,
            UserStatus::Active,
        );
        let cases: Vec<(&str, UserSnapshot, &str, Scope, Option<Reason>)> = vec![
            (
                "org manager, own org, My Organization",
                org_manager(),
                "a",
                my.clone(),
                None,
            ),
            (
                "org manager, own org, a delivery account",
                org_manager(),
                "a",
                da1.clone(),
                None,
            ),
            (
                "org manager, another organization",
                org_manager(),
                "b",
                my.clone(),
                Some(NA),
            ),
            (
                "manager of another organization",
                other_org,
                "a",
                my.clone(),
                Some(NA),
            ),
            (
                "delivery-account manager, its own account",
                da_manager(),
                "a",
                da1.clone(),
                None,
            ),
            (
                "delivery-account manager, another account",
                da_manager(),
                "a",
                da2.clone(),
                Some(NA),
            ),
            (
                "delivery-account manager, My Organization",
                da_manager(),
                "a",
                my.clone(),
                Some(NA),
            ),
            (
                "limited manager, an account it has",
                limited_manager(),
                "a",
                da2.clone(),
                None,
            ),
            (
                "limited manager, an account it lacks",
                limited_manager(),
                "a",
                da1.clone(),
                Some(NA),
            ),
            ("plain user", plain_user(), "a", my.clone(), Some(NA)),
            ("invited manager", inactive, "a", my.clone(), Some(NA)),
            ("removed manager", removed, "a", my.clone(), Some(NA)),
        ];
        for (name, actor, o, scope, expected) in cases {
            assert_eq!(
                outcome(
                    decide_invite(&actor, &org(o), &scope, small_grant(), &graph()).map(|_| ())
                ),
                expected,
                "{name}"
            );
        }
    }

    #[test]
    fn grant_matrix() {
        let actor = limited_manager();
        let mut more_permissions = small_grant();
        more_permissions.permissions = PermissionSet::all();
        let mut all_contracts = small_grant();
        all_contracts.contract_accounts = AccountAccess::All;
        let mut other_contract = small_grant();
        other_contract.contract_accounts = only(&["CA-2"]);
        let mut all_deliveries = small_grant();
        all_deliveries.delivery_accounts = AccountAccess::All;
        let mut held_delivery = small_grant();
        held_delivery.delivery_accounts = only(&["DA-2"]);
        for (name, grant, expected) in [
            ("within what it holds", small_grant(), None),
            ("a held delivery account", held_delivery, None),
            (
                "permissions it lacks",
                more_permissions,
                Some(Reason::NotAuthorized),
            ),
            (
                "\"all\" contract accounts",
                all_contracts,
                Some(Reason::NotAuthorized),
            ),
            (
                "a contract account it lacks",
                other_contract,
                Some(Reason::NotAuthorized),
            ),
            (
                "\"all\" delivery accounts",
                all_deliveries,
                Some(Reason::NotAuthorized),
            ),
        ] {
            assert_eq!(outcome(check_grant(&actor, &grant)), expected, "{name}");
        }
        assert_eq!(
            outcome(check_grant(&org_manager(), &Grant::everything())),
            None
        );
    }

    #[test]
    fn profile_matrix() {
        let me = plain_user();
        let colleague = plain_user();
        let mut stranger = plain_user();
        stranger.organization_id = org("b");
        let mut shop_user = user(
            "a",
            Scope::DeliveryAccount(da("DA-1")),
            Role::User,
            UserStatus::Active,
        );
        shop_user.delivery_accounts = only(&["DA-1"]);
        for (name, actor, target, expected) in [
            ("a user, itself", me.clone(), me.clone(), None),
            (
                "a user, a colleague",
                me.clone(),
                colleague.clone(),
                Some(Reason::NotAuthorized),
            ),
            (
                "a manager, its user",
                org_manager(),
                colleague.clone(),
                None,
            ),
            (
                "a delivery-account manager, its shop's user",
                da_manager(),
                shop_user.clone(),
                None,
            ),
            (
                "a delivery-account manager, an org user",
                da_manager(),
                colleague.clone(),
                Some(Reason::NotAuthorized),
            ),
            (
                "anyone, another organization's user",
                org_manager(),
                stranger.clone(),
                Some(Reason::NotFound),
            ),
        ] {
            assert_eq!(
                outcome(check_edit_profile(&actor, &target)),
                expected,
                "{name}"
            );
        }
    }

    #[test]
    fn remove_matrix() {
        let boss = org_manager();
        let target = plain_user();
        let mut other_manager = org_manager();
        other_manager.organization_id = org("a");
        assert_eq!(outcome(check_remove(&boss, &target, 1)), None);
        assert_eq!(
            outcome(check_remove(&boss, &boss, 2)),
            Some(Reason::NotAuthorized),
            "not oneself"
        );
        assert_eq!(
            outcome(check_remove(&plain_user(), &target, 1)),
            Some(Reason::NotAuthorized)
        );
        assert_eq!(outcome(check_remove(&boss, &other_manager, 2)), None);
        assert_eq!(
            outcome(check_remove(&boss, &other_manager, 1)),
            Some(Reason::LastManager)
        );
    }

    #[test]
    fn update_access_keeps_the_target_within_the_actor_and_keeps_a_manager() {
        let boss = org_manager();
        let mut other = org_manager();
        other.id = UserId::new();
        let demote = AccessChanges {
            role: Some(Role::User),
            ..Default::default()
        };
        let decide = |actor: &UserSnapshot, target: &UserSnapshot, c: &AccessChanges, n| {
            outcome(decide_update_access(actor, target, c, &graph(), n).map(|_| ()))
        };
        assert_eq!(decide(&boss, &other, &demote, 2), None);
        assert_eq!(decide(&boss, &other, &demote, 1), Some(Reason::LastManager));
        assert_eq!(
            decide(&boss, &boss, &demote, 1),
            Some(Reason::LastManager),
            "not even itself"
        );
        assert_eq!(
            decide(&limited_manager(), &other, &demote, 2),
            Some(Reason::NotAuthorized),
            "a stronger user is out of reach"
        );
        let mut strong_user = plain_user();
        strong_user.role = Role::User;
        let promote = AccessChanges {
            role: Some(Role::Manager),
            ..Default::default()
        };
        assert_eq!(
            decide(&limited_manager(), &strong_user, &promote, 2),
            Some(Reason::NotAuthorized),
            "a role change hands over everything the target holds"
        );
        let mut da_user = user(
            "a",
            Scope::DeliveryAccount(da("DA-1")),
            Role::User,
            UserStatus::Active,
        );
        da_user.delivery_accounts = only(&["DA-1"]);
        da_user.contract_accounts = only(&["CA-1"]);
        let other_contract = AccessChanges {
            contract_accounts: Some(only(&["CA-2"])),
            ..Default::default()
        };
        assert_eq!(
            decide(&boss, &da_user, &other_contract, 2),
            Some(Reason::Invalid),
            "DA-1 is not linked to CA-2"
        );
        let all_deliveries = AccessChanges {
            delivery_accounts: Some(AccountAccess::All),
            ..Default::default()
        };
        assert_eq!(
            decide(&plain_user(), &da_user, &all_deliveries, 2),
            Some(Reason::NotAuthorized),
            "the actor before the data"
        );
    }

    #[test]
    fn a_delivery_account_user_sees_only_its_delivery_account() {
        let scope = Scope::DeliveryAccount(da("DA-1"));
        let fitted = small_grant().fitted_to(&scope).unwrap();
        assert_eq!(
            fitted.delivery_accounts,
            only(&["DA-1"]),
            "empty means its own"
        );
        let mut own = small_grant();
        own.delivery_accounts = only(&["DA-1"]);
        assert_eq!(
            own.fitted_to(&scope).unwrap().delivery_accounts,
            only(&["DA-1"])
        );
        for wider in [AccountAccess::All, only(&["DA-1", "DA-2"]), only(&["DA-2"])] {
            let mut g = small_grant();
            g.delivery_accounts = wider;
            assert_eq!(g.fitted_to(&scope).unwrap_err().field, "delivery_accounts");
        }
        assert_eq!(
            small_grant().fitted_to(&Scope::MyOrganization).unwrap(),
            small_grant()
        );
    }

    #[test]
    fn actor_and_system_rules() {
        assert_eq!(
            require_actor(None).unwrap_err().reason,
            Reason::NotAuthorized
        );
        let mut expired = plain_user();
        expired.status = UserStatus::Expired;
        assert_eq!(
            require_actor(Some(&expired)).unwrap_err().reason,
            Reason::NotAuthorized
        );
        assert!(require_actor(Some(&plain_user())).is_ok());
        assert!(require_no_actor(false, "x").is_ok());
        assert_eq!(
            require_no_actor(true, "x").unwrap_err().reason,
            Reason::NotAuthorized
        );
    }
}
