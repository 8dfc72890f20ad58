//! Onboarding an organization, and onboarding it again when nobody can enter it.
//!
//! An organization whose first manager never activated has no one who can
//! resend the invitation. Onboarding it again re-invites its manager; once
//! it has an active organization-level manager, that manager runs it and
//! onboarding again is refused `organization_exists`.

use super::ids::{OrganizationId, UserId};
use super::reply::{Reason, Rejection};
use super::user::{Role, Scope, UserSnapshot, UserStatus};

/// What an `onboard_organization` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Onboarding {
    /// The organization is new: create it with its first manager.
    Create,
    /// It exists without an active organization-level manager: invite
    /// its manager again.
    Reinvite,
}

/// What `onboard_organization` does, given whether the organization exists
/// and whether it has an active organization-level manager.
pub fn decide(
    exists: bool,
    has_active_organization_manager: bool,
) -> Result<Onboarding, Rejection> {
    match (exists, has_active_organization_manager) {
        (false, _) => Ok(Onboarding::Create),
        (true, false) => Ok(Onboarding::Reinvite),
        (true, true) => Err(Rejection::new(
            Reason::OrganizationExists,
            "the organization was onboarded already and has an active manager",
        )),
    }
}

/// Who is re-invited as the manager of an organization onboarded again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reinvited {
    /// The user with the command's email, an inactive organization-level
    /// manager of this organization: the same user, with a fresh token.
    Same(UserId),
    /// Nobody has the command's email: a new user, invited as a full
    /// organization-level manager.
    New,
}

/// Whom re-onboarding `organization` invites, given the user that already
/// has the command's manager email (if any). Any user with that email other
/// than an inactive organization-level manager of this organization keeps
/// its address: `email_taken`, as at a first onboarding.
pub fn reinvited(
    organization: &OrganizationId,
    holder_of_email: Option<&UserSnapshot>,
) -> Result<Reinvited, Rejection> {
    let Some(holder) = holder_of_email else {
        return Ok(Reinvited::New);
    };
    let inactive = matches!(holder.status, UserStatus::Invited | UserStatus::Expired);
    if &holder.organization_id == organization
        && holder.role == Role::Manager
        && holder.scope == Scope::MyOrganization
        && inactive
    {
        Ok(Reinvited::Same(holder.id))
    } else {
        Err(Rejection::new(
            Reason::EmailTaken,
            "manager.email: a user with this email address already exists",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::access::AccountAccess;
    use crate::domain::email::EmailAddress;
    use crate::domain::ids::AccountId;
    use crate::domain::permission::PermissionSet;

    fn org(id: &str) -> OrganizationId {
        OrganizationId::parse(id, "o").unwrap()
    }

    fn first_manager(status: UserStatus) -> UserSnapshot {
        UserSnapshot {
            id: UserId::new(),
            organization_id: org("acme"),
            scope: Scope::MyOrganization,
            role: Role::Manager,
            status,
            email: EmailAddress::parse("boss@acme.example").unwrap(),
            permissions: PermissionSet::all(),
            contract_accounts: AccountAccess::All,
            delivery_accounts: AccountAccess::All,
        }
    }

    #[test]
    fn a_new_organization_is_created() {
        assert_eq!(decide(false, false), Ok(Onboarding::Create));
    }

    #[test]
    fn an_organization_without_an_active_manager_reinvites_and_one_with_is_refused() {
        assert_eq!(decide(true, false), Ok(Onboarding::Reinvite));
        assert_eq!(
            decide(true, true).unwrap_err().reason,
            Reason::OrganizationExists
        );
    }

    #[test]
    fn the_same_inactive_manager_is_reinvited_with_its_own_id() {
        for status in [UserStatus::Invited, UserStatus::Expired] {
            let m = first_manager(status);
            assert_eq!(reinvited(&org("acme"), Some(&m)), Ok(Reinvited::Same(m.id)));
        }
    }

    #[test]
    fn an_unknown_email_is_invited_as_a_new_manager() {
        assert_eq!(reinvited(&org("acme"), None), Ok(Reinvited::New));
    }

    #[test]
    fn any_other_holder_of_the_email_keeps_it() {
        let taken = |u: &UserSnapshot| reinvited(&org("acme"), Some(u)).unwrap_err().reason;
        for status in [UserStatus::Active, UserStatus::Removed] {
            assert_eq!(taken(&first_manager(status)), Reason::EmailTaken);
        }
        let mut elsewhere = first_manager(UserStatus::Expired);
        elsewhere.organization_id = org("other");
        assert_eq!(taken(&elsewhere), Reason::EmailTaken);
        let mut plain = first_manager(UserStatus::Expired);
        plain.role = Role::User;
        assert_eq!(
            taken(&plain),
            Reason::EmailTaken,
            "no promotion by onboarding"
        );
        let mut da_manager = first_manager(UserStatus::Expired);
        da_manager.scope = Scope::DeliveryAccount(AccountId::parse("DA-1", "d").unwrap());
        assert_eq!(taken(&da_manager), Reason::EmailTaken);
    }
}
