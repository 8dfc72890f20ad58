//! A portal user as the rules see it, and its lifecycle.
//!
//! `invited → active`, `invited → expired` (sweep), `expired → invited`
//! (resend), any → `removed`. Each transition's precondition is a function
//! here so the handler and the sweep ask the same question.

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use super::access::AccountAccess;
use super::email::EmailAddress;
use super::ids::{AccountId, OrganizationId, UserId};
use super::permission::PermissionSet;
use super::reply::{Reason, Rejection};

/// Personal mailbox, or a group such as a distribution list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UserKind {
    /// A person.
    Personal,
    /// A shared mailbox; may have an empty last name.
    Group,
}

impl UserKind {
    /// The wire and database name.
    pub fn as_str(self) -> &'static str {
        match self {
            UserKind::Personal => "personal",
            UserKind::Group => "group",
        }
    }

    /// Parses the wire name.
    pub fn parse(s: &str) -> Option<UserKind> {
        match s {
            "personal" => Some(UserKind::Personal),
            "group" => Some(UserKind::Group),
            _ => None,
        }
    }
}

/// A manager manages users in its scope; a user only its own profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Manages users inside its organization and scope.
    Manager,
    /// Changes only its own profile.
    User,
}

impl Role {
    /// The wire and database name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Manager => "manager",
            Role::User => "user",
        }
    }

    /// Parses the wire name.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "manager" => Some(Role::Manager),
            "user" => Some(Role::User),
            _ => None,
        }
    }
}

/// Where a user lives: the contract's statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UserStatus {
    /// Inactive, activation token valid.
    Invited,
    /// Inactive, activation token past its TTL.
    Expired,
    /// Activated.
    Active,
    /// Portal access ended; the contact is kept.
    Removed,
}

impl UserStatus {
    /// Every status, for metrics.
    pub const ALL: [UserStatus; 4] = [
        UserStatus::Invited,
        UserStatus::Expired,
        UserStatus::Active,
        UserStatus::Removed,
    ];

    /// The wire and database name.
    pub fn as_str(self) -> &'static str {
        match self {
            UserStatus::Invited => "invited",
            UserStatus::Expired => "expired",
            UserStatus::Active => "active",
            UserStatus::Removed => "removed",
        }
    }

    /// Parses the database name.
    pub fn parse(s: &str) -> Option<UserStatus> {
        match s {
            "invited" => Some(UserStatus::Invited),
            "expired" => Some(UserStatus::Expired),
            "active" => Some(UserStatus::Active),
            "removed" => Some(UserStatus::Removed),
            _ => None,
        }
    }
}

/// My Organization, or one delivery account (an end customer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// The customer's own organization.
    MyOrganization,
    /// An end customer's delivery account.
    DeliveryAccount(AccountId),
}

impl Scope {
    /// The delivery account id, `None` for My Organization.
    pub fn delivery_account(&self) -> Option<&AccountId> {
        match self {
            Scope::MyOrganization => None,
            Scope::DeliveryAccount(id) => Some(id),
        }
    }
}

/// What the rules need to know about a user (actor or target).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSnapshot {
    /// Its id.
    pub id: UserId,
    /// Its organization.
    pub organization_id: OrganizationId,
    /// Where it lives in the organization.
    pub scope: Scope,
    /// manager or user.
    pub role: Role,
    /// Lifecycle status.
    pub status: UserStatus,
    /// Its email address.
    pub email: EmailAddress,
    /// Granted permissions.
    pub permissions: PermissionSet,
    /// Contract accounts it may see.
    pub contract_accounts: AccountAccess,
    /// Delivery accounts it may see.
    pub delivery_accounts: AccountAccess,
}

/// May `status` be activated? (The token itself is checked separately.)
pub fn check_activatable(status: UserStatus) -> Result<(), Rejection> {
    match status {
        UserStatus::Invited => Ok(()),
        UserStatus::Expired => Err(Rejection::new(
            Reason::TokenExpired,
            "the invitation has expired; ask your manager to resend the activation email",
        )),
        UserStatus::Active => Err(Rejection::new(
            Reason::AlreadyActive,
            "the account is already active",
        )),
        UserStatus::Removed => Err(removed()),
    }
}

/// May the activation email be resent now? Only to inactive users, and not
/// sooner than `cooldown` after the last one was issued.
pub fn check_resendable(
    status: UserStatus,
    last_issued_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    cooldown: Duration,
) -> Result<(), Rejection> {
    let inactive = match status {
        UserStatus::Invited | UserStatus::Expired => Ok(()),
        UserStatus::Active => Err(Rejection::new(
            Reason::AlreadyActive,
            "the user has activated already; there is nothing to resend",
        )),
        UserStatus::Removed => Err(removed()),
    };
    inactive.and_then(|()| check_cooldown(last_issued_at, now, cooldown))
}

/// May a password reset be issued? Never before activation, and not
/// sooner than `cooldown` after the last one.
pub fn check_password_resettable(
    status: UserStatus,
    last_issued_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    cooldown: Duration,
) -> Result<(), Rejection> {
    check_reset_redeemable(status).and_then(|()| check_cooldown(last_issued_at, now, cooldown))
}

/// A password reset is redeemed only by a user who is still active.
pub fn check_reset_redeemable(status: UserStatus) -> Result<(), Rejection> {
    match status {
        UserStatus::Active => Ok(()),
        UserStatus::Removed => Err(removed()),
        UserStatus::Invited | UserStatus::Expired => Err(Rejection::new(
            Reason::NotActivated,
            "password reset is not available until the account has been activated",
        )),
    }
}

/// A removed user's contact is kept but nothing more happens to it.
pub fn check_not_removed(status: UserStatus) -> Result<(), Rejection> {
    if status == UserStatus::Removed {
        Err(Rejection::new(Reason::Removed, "the user was removed"))
    } else {
        Ok(())
    }
}

fn check_cooldown(
    last_issued_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    cooldown: Duration,
) -> Result<(), Rejection> {
    match last_issued_at {
        Some(last) if now < last + cooldown => {
            let wait = (last + cooldown - now).num_seconds().max(1);
            Err(Rejection::new(
                Reason::TooSoon,
                format!("an email was sent moments ago; try again in {wait} s"),
            ))
        }
        _ => Ok(()),
    }
}

/// The refusal for acting on a removed user.
fn removed() -> Rejection {
    Rejection::new(Reason::Removed, "the user was removed")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        Utc::now()
    }

    #[test]
    fn only_invited_users_activate() {
        assert!(check_activatable(UserStatus::Invited).is_ok());
        let reason = |s| check_activatable(s).unwrap_err().reason;
        assert_eq!(reason(UserStatus::Expired), Reason::TokenExpired);
        assert_eq!(reason(UserStatus::Active), Reason::AlreadyActive);
        assert_eq!(reason(UserStatus::Removed), Reason::Removed);
    }

    #[test]
    fn resend_goes_to_invited_and_expired_users_after_the_cooldown() {
        let cd = Duration::seconds(60);
        assert!(check_resendable(UserStatus::Invited, None, now(), cd).is_ok());
        assert!(
            check_resendable(
                UserStatus::Expired,
                Some(now() - Duration::days(8)),
                now(),
                cd
            )
            .is_ok()
        );
        let soon = check_resendable(
            UserStatus::Invited,
            Some(now() - Duration::seconds(5)),
            now(),
            cd,
        );
        assert_eq!(soon.unwrap_err().reason, Reason::TooSoon);
        assert_eq!(
            check_resendable(UserStatus::Active, None, now(), cd)
                .unwrap_err()
                .reason,
            Reason::AlreadyActive
        );
        assert_eq!(
            check_resendable(UserStatus::Removed, None, now(), cd)
                .unwrap_err()
                .reason,
            Reason::Removed
        );
    }

    #[test]
    fn password_reset_is_blocked_until_activation() {
        let cd = Duration::seconds(60);
        for s in [UserStatus::Invited, UserStatus::Expired] {
            assert_eq!(
                check_password_resettable(s, None, now(), cd)
                    .unwrap_err()
                    .reason,
                Reason::NotActivated
            );
            assert_eq!(
                check_reset_redeemable(s).unwrap_err().reason,
                Reason::NotActivated
            );
        }
        assert!(check_password_resettable(UserStatus::Active, None, now(), cd).is_ok());
        assert_eq!(
            check_password_resettable(UserStatus::Active, Some(now()), now(), cd)
                .unwrap_err()
                .reason,
            Reason::TooSoon
        );
        assert_eq!(
            check_password_resettable(UserStatus::Removed, None, now(), cd)
                .unwrap_err()
                .reason,
            Reason::Removed
        );
    }

    #[test]
    fn names_round_trip() {
        for s in UserStatus::ALL {
            assert_eq!(UserStatus::parse(s.as_str()), Some(s));
        }
        for r in [Role::Manager, Role::User] {
            assert_eq!(Role::parse(r.as_str()), Some(r));
        }
        for k in [UserKind::Personal, UserKind::Group] {
            assert_eq!(UserKind::parse(k.as_str()), Some(k));
        }
    }
}
