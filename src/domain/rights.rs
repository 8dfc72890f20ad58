//! What a user holds, and when one user's rights contain another's.
//!
//! Every trust rule compares rights: a manager acts only on users whose
//! rights are within its own, and never leaves a user with rights outside
//! its own. Rights also have to agree with the organization's account graph
//! (which contract accounts each delivery account is linked to), so that a
//! grant never names an account its holder cannot reach. A leaf module: the
//! commands and the authorization rules both build on it.

use std::collections::{BTreeMap, BTreeSet};

use super::access::AccountAccess;
use super::field_error::FieldError;
use super::permission::PermissionSet;
use super::user::{Role, Scope, UserSnapshot};

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

    /// The grant `user` holds now.
    pub fn of(user: &UserSnapshot) -> Grant {
        Grant {
            role: user.role,
            permissions: user.permissions.clone(),
            contract_accounts: user.contract_accounts.clone(),
            delivery_accounts: user.delivery_accounts.clone(),
        }
    }

    /// The grant as it applies to a user living in `scope`: a user of a
    /// delivery account sees that delivery account only (an empty list means
    /// exactly that one); anything wider is refused, naming the field.
    pub fn fitted_to(mut self, scope: &Scope) -> Result<Grant, FieldError> {
        let Scope::DeliveryAccount(own) = scope else {
            return Ok(self);
        };
        match &self.delivery_accounts {
            AccountAccess::Only(ids) if ids.iter().all(|id| id == own) => {
                self.delivery_accounts = AccountAccess::Only([own.clone()].into());
                Ok(self)
            }
            _ => Err(FieldError::new(
                "delivery_accounts",
                format!("a user of delivery account {own} can only have access to {own}"),
            )),
        }
    }
}

/// Everything a user holds: where it lives and what it was granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rights {
    /// My Organization or one delivery account.
    pub scope: Scope,
    /// Role, permissions and accounts.
    pub grant: Grant,
}

impl Rights {
    /// The rights `user` holds now.
    pub fn of(user: &UserSnapshot) -> Rights {
        Rights {
            scope: user.scope.clone(),
            grant: Grant::of(user),
        }
    }

    /// True when everything `self` holds is also held by `holder`: the role
    /// (a manager only within a manager), the scope (a delivery account only
    /// within My Organization with access to it, or within itself), every
    /// permission, and every contract and delivery account (`"all"` only
    /// within `"all"`).
    pub fn is_within(&self, holder: &Rights) -> bool {
        let role = self.grant.role == Role::User || holder.grant.role == Role::Manager;
        role && self.scope_is_within(holder)
            && self.grant.permissions.is_subset(&holder.grant.permissions)
            && (self.grant.contract_accounts).is_within(&holder.grant.contract_accounts)
            && (self.grant.delivery_accounts).is_within(&holder.grant.delivery_accounts)
    }

    fn scope_is_within(&self, holder: &Rights) -> bool {
        match (&holder.scope, &self.scope) {
            (Scope::MyOrganization, Scope::MyOrganization) => true,
            (Scope::MyOrganization, Scope::DeliveryAccount(da)) => {
                AccountAccess::Only([da.clone()].into()).is_within(&holder.grant.delivery_accounts)
            }
            (Scope::DeliveryAccount(own), Scope::DeliveryAccount(da)) => own == da,
            (Scope::DeliveryAccount(_), Scope::MyOrganization) => false,
        }
    }
}

/// An organization's accounts: its contract accounts, and for each delivery
/// account the contract accounts it is linked to (as onboarding and
/// `sync_accounts` define them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccountGraph {
    /// Contract account ids.
    pub contract: BTreeSet<String>,
    /// Delivery account id → the contract account ids it is linked to.
    pub delivery: BTreeMap<String, BTreeSet<String>>,
}

impl AccountGraph {
    /// The delivery account ids.
    pub fn delivery_ids(&self) -> BTreeSet<String> {
        self.delivery.keys().cloned().collect()
    }

    /// Refuses a grant, for a user living in `scope`, that names an account
    /// the organization does not have, a delivery account that does not
    /// exist as its scope, or (for a delivery account's user) a contract
    /// account that delivery account is not linked to. Errors name the field.
    pub fn check(&self, scope: &Scope, grant: &Grant) -> Result<(), FieldError> {
        if let Scope::DeliveryAccount(da) = scope
            && !self.delivery.contains_key(da.as_str())
        {
            return Err(FieldError::new(
                "delivery_account_id",
                format!("unknown delivery account {da} in this organization"),
            ));
        }
        grant
            .contract_accounts
            .check_known(&self.contract, "contract_accounts")?;
        grant
            .delivery_accounts
            .check_known(&self.delivery_ids(), "delivery_accounts")?;
        let Scope::DeliveryAccount(da) = scope else {
            return Ok(());
        };
        let linked = self.delivery.get(da.as_str()).cloned().unwrap_or_default();
        let outside: Vec<String> = match &grant.contract_accounts {
            AccountAccess::All => vec!["all".to_owned()],
            AccountAccess::Only(ids) => ids
                .iter()
                .filter(|id| !linked.contains(id.as_str()))
                .map(|id| id.as_str().to_owned())
                .collect(),
        };
        if outside.is_empty() {
            return Ok(());
        }
        let linked: Vec<&str> = linked.iter().map(String::as_str).collect();
        Err(FieldError::new(
            "contract_accounts",
            format!(
                "a user of delivery account {da} can only have contract accounts linked to it ({}), not: {}",
                linked.join(", "),
                outside.join(", ")
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ids::AccountId;
    use crate::domain::permission::Permission;

    fn id(s: &str) -> AccountId {
        AccountId::parse(s, "x").unwrap()
    }

    fn only(ids: &[&str]) -> AccountAccess {
        AccountAccess::Only(ids.iter().map(|i| id(i)).collect())
    }

    fn rights(
        scope: Scope,
        role: Role,
        permissions: &[Permission],
        ca: AccountAccess,
        da: AccountAccess,
    ) -> Rights {
        Rights {
            scope,
            grant: Grant {
                role,
                permissions: permissions.iter().copied().collect(),
                contract_accounts: ca,
                delivery_accounts: da,
            },
        }
    }

    fn everything() -> Rights {
        Rights {
            scope: Scope::MyOrganization,
            grant: Grant::everything(),
        }
    }

    fn graph() -> AccountGraph {
        AccountGraph {
            contract: ["CA-1".to_owned(), "CA-2".to_owned()].into(),
            delivery: [("DA-1".to_owned(), ["CA-1".to_owned()].into())].into(),
        }
    }

    #[test]
    fn everything_contains_every_right_and_nothing_contains_everything_but_itself() {
        let limited = rights(
            Scope::MyOrganization,
            Role::Manager,
            &[Permission::CasesView],
            only(&["CA-1"]),
            only(&["DA-1"]),
        );
        assert!(limited.is_within(&everything()));
        assert!(everything().is_within(&everything()));
        assert!(!everything().is_within(&limited));
    }

    #[test]
    fn a_manager_is_within_a_manager_only() {
        let user = rights(Scope::MyOrganization, Role::User, &[], only(&[]), only(&[]));
        let manager = Rights {
            grant: Grant {
                role: Role::Manager,
                ..user.grant.clone()
            },
            ..user.clone()
        };
        assert!(user.is_within(&manager));
        assert!(!manager.is_within(&user));
    }

    #[test]
    fn a_delivery_account_is_within_my_organization_only_with_access_to_it() {
        let shop = rights(
            Scope::DeliveryAccount(id("DA-1")),
            Role::User,
            &[],
            only(&[]),
            only(&["DA-1"]),
        );
        let org_with = rights(
            Scope::MyOrganization,
            Role::Manager,
            &[],
            only(&[]),
            only(&["DA-1"]),
        );
        let org_without = rights(
            Scope::MyOrganization,
            Role::Manager,
            &[],
            only(&[]),
            only(&["DA-2"]),
        );
        let shop_manager = rights(
            Scope::DeliveryAccount(id("DA-1")),
            Role::Manager,
            &[],
            only(&[]),
            only(&["DA-1"]),
        );
        assert!(shop.is_within(&org_with));
        assert!(!shop.is_within(&org_without));
        assert!(shop.is_within(&shop_manager));
        assert!(
            !org_with.is_within(&shop_manager),
            "My Organization is never within a shop"
        );
    }

    #[test]
    fn the_account_graph_bounds_a_delivery_account_users_contract_accounts() {
        let shop = Scope::DeliveryAccount(id("DA-1"));
        let mut grant = Grant {
            role: Role::User,
            permissions: PermissionSet::all(),
            contract_accounts: only(&["CA-1"]),
            delivery_accounts: only(&["DA-1"]),
        };
        assert!(graph().check(&shop, &grant).is_ok());
        grant.contract_accounts = only(&["CA-2"]);
        let e = graph().check(&shop, &grant).unwrap_err();
        assert_eq!(e.field, "contract_accounts");
        assert!(e.message.contains("CA-2"), "{}", e.message);
        grant.contract_accounts = AccountAccess::All;
        assert_eq!(
            graph().check(&shop, &grant).unwrap_err().field,
            "contract_accounts"
        );
        grant.contract_accounts = only(&["CA-2"]);
        assert!(
            graph().check(&Scope::MyOrganization, &grant).is_ok(),
            "My Organization sees every contract account"
        );
        grant.contract_accounts = only(&["CA-9"]);
        assert_eq!(
            graph()
                .check(&Scope::MyOrganization, &grant)
                .unwrap_err()
                .field,
            "contract_accounts"
        );
        let e = graph()
            .check(&Scope::DeliveryAccount(id("DA-9")), &grant)
            .unwrap_err();
        assert_eq!(e.field, "delivery_account_id");
    }
}
