//! Who is told that an invitation expired.
//!
//! The `invite_expired` email names the invitee and its address, so it goes
//! only to someone who manages the invitee now: the inviter while it still
//! does, else the organization's active managers who do. "Manages" is
//! [`authz::check_manages_user`], the same question every command asks.

use super::authz;
use super::user::UserSnapshot;

/// The people told about one expired invitation.
#[derive(Debug, PartialEq, Eq)]
pub enum Recipients<'a, T> {
    /// The inviter, who still manages the invitee.
    Inviter(&'a T),
    /// There is no inviter or it no longer manages the invitee: the
    /// organization's managers who do (never empty).
    Managers(Vec<&'a T>),
    /// Nobody manages the invitee: nobody is told.
    Nobody,
}

/// Does the inviter (if any) still manage the invitee? When it does, the
/// organization's other managers are not needed to decide.
pub fn inviter_still_manages<T: AsRef<UserSnapshot>>(
    inviter: Option<&T>,
    invitee: &UserSnapshot,
) -> bool {
    inviter.is_some_and(|i| authz::check_manages_user(i.as_ref(), invitee).is_ok())
}

/// Who is told that `invitee`'s invitation expired, given its inviter (if
/// any) and the active managers of its organization (others are ignored).
pub fn recipients<'a, T: AsRef<UserSnapshot>>(
    inviter: Option<&'a T>,
    invitee: &UserSnapshot,
    managers: &'a [T],
) -> Recipients<'a, T> {
    if let Some(inviter) = inviter
        && inviter_still_manages(Some(inviter), invitee)
    {
        return Recipients::Inviter(inviter);
    }
    let managing: Vec<&T> = managers
        .iter()
        .filter(|m| {
            m.as_ref().id != invitee.id && authz::check_manages_user(m.as_ref(), invitee).is_ok()
        })
        .collect();
    if managing.is_empty() {
        Recipients::Nobody
    } else {
        Recipients::Managers(managing)
    }
}

impl AsRef<UserSnapshot> for UserSnapshot {
    fn as_ref(&self) -> &UserSnapshot {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::access::AccountAccess;
    use crate::domain::fixtures::{da, snapshot};
    use crate::domain::ids::{OrganizationId, UserId};
    use crate::domain::user::{Role, Scope, UserStatus};

    fn boss() -> UserSnapshot {
        snapshot(
            "acme",
            Scope::MyOrganization,
            Role::Manager,
            UserStatus::Active,
        )
    }

    fn invitee() -> UserSnapshot {
        snapshot(
            "acme",
            Scope::MyOrganization,
            Role::User,
            UserStatus::Expired,
        )
    }

    fn ids<T: AsRef<UserSnapshot>>(r: &Recipients<'_, T>) -> Vec<UserId> {
        match r {
            Recipients::Inviter(i) => vec![i.as_ref().id],
            Recipients::Managers(ms) => ms.iter().map(|m| m.as_ref().id).collect(),
            Recipients::Nobody => vec![],
        }
    }

    #[test]
    fn an_inviter_who_still_manages_the_invitee_is_told_and_nobody_else() {
        let inviter = boss();
        let others = vec![boss(), boss()];
        let x = invitee();
        assert!(inviter_still_manages(Some(&inviter), &x));
        assert_eq!(
            recipients(Some(&inviter), &x, &others),
            Recipients::Inviter(&inviter)
        );
    }

    #[test]
    fn a_demoted_inviter_is_not_told_the_managers_who_manage_the_invitee_are() {
        let mut inviter = boss();
        inviter.role = Role::User;
        let other = boss();
        let managers = vec![other.clone(), inviter.clone()];
        let x = invitee();
        assert!(!inviter_still_manages(Some(&inviter), &x));
        assert_eq!(ids(&recipients(Some(&inviter), &x, &managers)), [other.id]);
    }

    #[test]
    fn a_removed_or_inactive_inviter_is_not_told() {
        let x = invitee();
        for status in [
            UserStatus::Removed,
            UserStatus::Expired,
            UserStatus::Invited,
        ] {
            let mut inviter = boss();
            inviter.status = status;
            let other = boss();
            assert_eq!(
                ids(&recipients(
                    Some(&inviter),
                    &x,
                    std::slice::from_ref(&other)
                )),
                [other.id],
                "{status:?}"
            );
        }
    }

    #[test]
    fn an_inviter_moved_out_of_the_invitees_delivery_account_is_not_told() {
        let mut x = invitee();
        x.scope = Scope::DeliveryAccount(da("DA-1"));
        let mut inviter = boss();
        inviter.scope = Scope::DeliveryAccount(da("DA-2"));
        let mut da_manager = boss();
        da_manager.scope = Scope::DeliveryAccount(da("DA-1"));
        let mut blind = boss();
        blind.delivery_accounts = AccountAccess::Only([da("DA-2")].into());
        let org_manager = boss();
        let managers = vec![da_manager.clone(), blind, org_manager.clone()];
        assert_eq!(
            ids(&recipients(Some(&inviter), &x, &managers)),
            [da_manager.id, org_manager.id],
            "only the managers whose scope holds DA-1"
        );
    }

    #[test]
    fn without_an_inviter_the_managers_who_manage_the_invitee_are_told() {
        let x = invitee();
        let other = boss();
        assert_eq!(
            ids(&recipients(None, &x, std::slice::from_ref(&other))),
            [other.id]
        );
    }

    #[test]
    fn when_nobody_manages_the_invitee_nobody_is_told() {
        let x = invitee();
        let mut stranger = boss();
        stranger.organization_id = OrganizationId::parse("other", "o").unwrap();
        let mut plain = boss();
        plain.role = Role::User;
        let mut gone = boss();
        gone.status = UserStatus::Removed;
        let mut demoted_inviter = boss();
        demoted_inviter.role = Role::User;
        let managers = vec![stranger, plain, gone];
        assert_eq!(
            recipients(Some(&demoted_inviter), &x, &managers),
            Recipients::Nobody
        );
        assert_eq!(
            recipients::<UserSnapshot>(None, &x, &[]),
            Recipients::Nobody
        );
    }

    #[test]
    fn an_expired_first_manager_is_not_told_about_itself() {
        let mut x = boss();
        x.status = UserStatus::Expired;
        let itself = x.clone();
        assert_eq!(
            recipients(None, &x, std::slice::from_ref(&itself)),
            Recipients::Nobody
        );
    }
}
