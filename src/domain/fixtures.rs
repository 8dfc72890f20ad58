//! Test fixtures the domain's unit tests share: ids and user snapshots.

use crate::domain::access::AccountAccess;
use crate::domain::email::EmailAddress;
use crate::domain::ids::{AccountId, OrganizationId, UserId};
use crate::domain::permission::PermissionSet;
use crate::domain::user::{Role, Scope, UserSnapshot, UserStatus};

/// The organization `id`.
pub fn org(id: &str) -> OrganizationId {
    OrganizationId::parse(id, "o").unwrap()
}

/// The account `id`.
pub fn da(id: &str) -> AccountId {
    AccountId::parse(id, "d").unwrap()
}

/// A user of `organization` with every permission and account.
pub fn snapshot(organization: &str, scope: Scope, role: Role, status: UserStatus) -> UserSnapshot {
    UserSnapshot {
        id: UserId::new(),
        organization_id: org(organization),
        scope,
        role,
        status,
        email: EmailAddress::parse("x@example.com").unwrap(),
        permissions: PermissionSet::all(),
        contract_accounts: AccountAccess::All,
        delivery_accounts: AccountAccess::All,
    }
}
