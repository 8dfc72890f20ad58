//! The trust model as a whole, proven over generated organizations and
//! command sequences rather than examples.
//!
//! Two organizations share one generated account graph; each starts with a
//! full manager and random users at both scopes with random grants (within
//! the graph). Random actors then send random `invite_user`,
//! `update_access`, `remove_user`, `activate_user`, `resend_activation`
//! and `update_profile` commands. Each is decided by the same domain
//! functions the handlers call and, when allowed, applied to the model.
//! After every step the invariants of the trust model must hold; when one
//! does not, proptest shrinks the sequence to the shortest that breaks it.

use proptest::prelude::*;

use super::access::AccountAccess;
use super::authz;
use super::command::AccessChanges;
use super::email::EmailAddress;
use super::ids::{AccountId, OrganizationId, UserId};
use super::permission::{Permission, PermissionSet};
use super::reply::{Reason, Rejection};
use super::rights::{AccountGraph, Grant, Rights};
use super::user::{Role, Scope, UserSnapshot, UserStatus};

const ORGANIZATIONS: [&str; 2] = ["a", "b"];
const CONTRACT: [&str; 3] = ["CA-1", "CA-2", "CA-3"];
const DELIVERY: [&str; 3] = ["DA-1", "DA-2", "DA-3"];

fn account(id: &str) -> AccountId {
    AccountId::parse(id, "id").expect("a valid account id")
}

fn organization(i: usize) -> OrganizationId {
    OrganizationId::parse(ORGANIZATIONS[i % 2], "id").expect("a valid organization id")
}

/// The names of `all` picked by the bits of `mask`.
fn picked<'a>(all: &[&'a str], mask: u8) -> Vec<&'a str> {
    (0..all.len())
        .filter(|i| mask & (1 << i) != 0)
        .map(|i| all[i])
        .collect()
}

/// Account access as generated: `"all"`, or the ids picked by a mask
/// (an unknown id among them when the mask's high bit is set).
#[derive(Debug, Clone, Copy)]
enum AccessSpec {
    All,
    Only(u8),
}

impl AccessSpec {
    fn build(self, all: &[&str]) -> AccountAccess {
        match self {
            AccessSpec::All => AccountAccess::All,
            AccessSpec::Only(mask) => {
                let mut ids: Vec<&str> = picked(all, mask);
                if mask & 0x80 != 0 {
                    ids.push("X-9");
                }
                AccountAccess::Only(ids.into_iter().map(account).collect())
            }
        }
    }
}

fn access_spec() -> impl Strategy<Value = AccessSpec> {
    prop_oneof![1 => Just(AccessSpec::All), 4 => any::<u8>().prop_map(AccessSpec::Only)]
}

fn permissions(mask: u8) -> PermissionSet {
    (0..8)
        .filter(|i| mask & (1 << i) != 0)
        .map(|i| Permission::ALL[i])
        .collect()
}

fn role(manager: bool) -> Role {
    if manager { Role::Manager } else { Role::User }
}

/// A scope: My Organization, or one of the graph's delivery accounts.
fn scope(pick: Option<usize>) -> Scope {
    match pick {
        None => Scope::MyOrganization,
        Some(i) => Scope::DeliveryAccount(account(DELIVERY[i % DELIVERY.len()])),
    }
}

/// A generated user before it is fitted to the graph.
#[derive(Debug, Clone)]
struct UserSpec {
    organization: usize,
    scope: Option<usize>,
    manager: bool,
    status: UserStatus,
    permissions: u8,
    contract: AccessSpec,
    delivery: AccessSpec,
}

fn status() -> impl Strategy<Value = UserStatus> {
    prop_oneof![
        4 => Just(UserStatus::Active),
        1 => Just(UserStatus::Invited),
        1 => Just(UserStatus::Expired),
        1 => Just(UserStatus::Removed),
    ]
}

fn user_spec() -> impl Strategy<Value = UserSpec> {
    (
        0..2usize,
        proptest::option::of(0..3usize),
        any::<bool>(),
        status(),
        any::<u8>(),
        access_spec(),
        access_spec(),
    )
        .prop_map(
            |(organization, scope, manager, status, permissions, contract, delivery)| UserSpec {
                organization,
                scope,
                manager,
                status,
                permissions,
                contract,
                delivery,
            },
        )
}

/// A command as generated: who sends it and to whom, by index into the
/// model's users (taken modulo their number when applied).
#[derive(Debug, Clone)]
enum Step {
    Invite {
        actor: usize,
        organization: usize,
        scope: Option<usize>,
        manager: bool,
        permissions: u8,
        contract: AccessSpec,
        delivery: AccessSpec,
    },
    UpdateAccess {
        actor: usize,
        target: usize,
        role: Option<bool>,
        permissions: Option<u8>,
        contract: Option<AccessSpec>,
        delivery: Option<AccessSpec>,
    },
    Remove {
        actor: usize,
        target: usize,
    },
    Activate {
        target: usize,
    },
    Resend {
        actor: usize,
        target: usize,
    },
    EditProfile {
        actor: usize,
        target: usize,
    },
}

fn step() -> impl Strategy<Value = Step> {
    let who = 0..64usize;
    prop_oneof![
        2 => (who.clone(), 0..2usize, proptest::option::of(0..3usize), any::<bool>(), any::<u8>(), access_spec(), access_spec())
            .prop_map(|(actor, organization, scope, manager, permissions, contract, delivery)| Step::Invite {
                actor, organization, scope, manager, permissions, contract, delivery,
            }),
        3 => (who.clone(), who.clone(), proptest::option::of(any::<bool>()), proptest::option::of(any::<u8>()),
              proptest::option::of(access_spec()), proptest::option::of(access_spec()))
            .prop_map(|(actor, target, role, permissions, contract, delivery)| Step::UpdateAccess {
                actor, target, role, permissions, contract, delivery,
            }),
        2 => (who.clone(), who.clone()).prop_map(|(actor, target)| Step::Remove { actor, target }),
        1 => who.clone().prop_map(|target| Step::Activate { target }),
        1 => (who.clone(), who.clone()).prop_map(|(actor, target)| Step::Resend { actor, target }),
        1 => (who.clone(), who).prop_map(|(actor, target)| Step::EditProfile { actor, target }),
    ]
}

/// Each delivery account linked to a non-empty set of contract accounts.
fn graph() -> impl Strategy<Value = AccountGraph> {
    proptest::array::uniform3(1u8..8).prop_map(|links| AccountGraph {
        contract: CONTRACT.iter().map(|c| (*c).to_owned()).collect(),
        delivery: DELIVERY
            .iter()
            .zip(links)
            .map(|(da, mask)| {
                let linked = picked(&CONTRACT, mask).into_iter().map(str::to_owned);
                ((*da).to_owned(), linked.collect())
            })
            .collect(),
    })
}

fn snapshot(organization: usize, scope: Scope, grant: Grant, status: UserStatus) -> UserSnapshot {
    UserSnapshot {
        id: UserId::new(),
        organization_id: self::organization(organization),
        scope,
        role: grant.role,
        status,
        email: EmailAddress::parse("someone@example.test").expect("a valid address"),
        permissions: grant.permissions,
        contract_accounts: grant.contract_accounts,
        delivery_accounts: grant.delivery_accounts,
    }
}

/// `spec` as a user the organization could have: a delivery account's user
/// sees that account and contract accounts linked to it; no unknown ids.
fn fitted_user(spec: &UserSpec, graph: &AccountGraph) -> UserSnapshot {
    let scope = scope(spec.scope);
    let known = |access: AccessSpec| match access {
        AccessSpec::Only(mask) => AccessSpec::Only(mask & 0x7f),
        all => all,
    };
    let mut grant = Grant {
        role: role(spec.manager),
        permissions: permissions(spec.permissions),
        contract_accounts: known(spec.contract).build(&CONTRACT),
        delivery_accounts: known(spec.delivery).build(&DELIVERY),
    };
    if let Scope::DeliveryAccount(da) = &scope {
        grant.delivery_accounts = AccountAccess::Only([da.clone()].into());
        let linked = &graph.delivery[da.as_str()];
        grant.contract_accounts = match &grant.contract_accounts {
            AccountAccess::Only(ids) => AccountAccess::Only(
                ids.iter()
                    .filter(|id| linked.contains(id.as_str()))
                    .cloned()
                    .collect(),
            ),
            AccountAccess::All => AccountAccess::Only(linked.iter().map(|c| account(c)).collect()),
        };
    }
    snapshot(spec.organization, scope, grant, spec.status)
}

/// The organizations' users and their shared account graph.
struct Model {
    graph: AccountGraph,
    users: Vec<UserSnapshot>,
}

impl Model {
    fn new(graph: AccountGraph, specs: &[UserSpec]) -> Model {
        let founders = (0..2).map(|o| {
            snapshot(
                o,
                Scope::MyOrganization,
                Grant::everything(),
                UserStatus::Active,
            )
        });
        let users = founders
            .chain(specs.iter().map(|s| fitted_user(s, &graph)))
            .collect();
        Model { graph, users }
    }

    fn user(&self, i: usize) -> &UserSnapshot {
        &self.users[i % self.users.len()]
    }

    fn organization_managers(&self, organization: &OrganizationId) -> i64 {
        let counted = self
            .users
            .iter()
            .filter(|u| &u.organization_id == organization && authz::is_organization_manager(u));
        counted.count() as i64
    }

    /// Decides `step` with the domain's rules and applies it when allowed.
    fn apply(&mut self, step: &Step) -> Result<(), TestCaseError> {
        match step {
            Step::Invite {
                actor,
                organization,
                scope: s,
                manager,
                permissions: p,
                contract,
                delivery,
            } => {
                let actor = self.user(*actor).clone();
                let scope = scope(*s);
                let organization = self::organization(*organization);
                let wanted = Grant {
                    role: role(*manager),
                    permissions: permissions(*p),
                    contract_accounts: contract.build(&CONTRACT),
                    delivery_accounts: delivery.build(&DELIVERY),
                };
                let decided =
                    authz::decide_invite(&actor, &organization, &scope, wanted, &self.graph);
                if let Ok(grant) = decided {
                    prop_assert_eq!(
                        &actor.organization_id,
                        &organization,
                        "invited into another organization"
                    );
                    let invited = Rights {
                        scope: scope.clone(),
                        grant: grant.clone(),
                    };
                    prop_assert!(
                        invited.is_within(&Rights::of(&actor)),
                        "invited with more than the actor holds: {:?}",
                        invited
                    );
                    let index = ORGANIZATIONS
                        .iter()
                        .position(|o| *o == organization.as_str())
                        .unwrap_or(0);
                    self.users
                        .push(snapshot(index, scope, grant, UserStatus::Invited));
                }
            }
            Step::UpdateAccess {
                actor,
                target,
                role: r,
                permissions: p,
                contract,
                delivery,
            } => {
                let (actor, index) = (self.user(*actor).clone(), target % self.users.len());
                let target = self.users[index].clone();
                let changes = AccessChanges {
                    role: r.map(role),
                    permissions: p.map(permissions),
                    contract_accounts: contract.map(|c| c.build(&CONTRACT)),
                    delivery_accounts: delivery.map(|d| d.build(&DELIVERY)),
                };
                let managers = self.organization_managers(&target.organization_id);
                let decided =
                    authz::decide_update_access(&actor, &target, &changes, &self.graph, managers);
                check_refusal_is_blind(&actor, &target, decided.as_ref().err())?;
                if let Ok(grant) = decided {
                    check_acted_within(&actor, &target)?;
                    let after = Rights {
                        scope: target.scope.clone(),
                        grant: grant.clone(),
                    };
                    prop_assert!(
                        after.is_within(&Rights::of(&actor)),
                        "left with more than the actor holds: {:?}",
                        after
                    );
                    let changed = &mut self.users[index];
                    changed.role = grant.role;
                    changed.permissions = grant.permissions;
                    changed.contract_accounts = grant.contract_accounts;
                    changed.delivery_accounts = grant.delivery_accounts;
                }
            }
            Step::Remove { actor, target } => {
                let (actor, index) = (self.user(*actor).clone(), target % self.users.len());
                let target = self.users[index].clone();
                let managers = self.organization_managers(&target.organization_id);
                let decided = authz::check_remove(&actor, &target, managers);
                check_refusal_is_blind(&actor, &target, decided.as_ref().err())?;
                if decided.is_ok() {
                    check_acted_within(&actor, &target)?;
                    self.users[index].status = UserStatus::Removed;
                }
            }
            Step::Activate { target } => {
                let index = target % self.users.len();
                if self.users[index].status == UserStatus::Invited {
                    self.users[index].status = UserStatus::Active;
                }
            }
            Step::Resend { actor, target } => {
                let (actor, target) = (self.user(*actor), self.user(*target));
                let decided = authz::check_manages_user(actor, target);
                check_refusal_is_blind(actor, target, decided.as_ref().err())?;
                if decided.is_ok() {
                    check_acted_within(actor, target)?;
                }
            }
            Step::EditProfile { actor, target } => {
                let (actor, target) = (self.user(*actor), self.user(*target));
                let decided = authz::check_edit_profile(actor, target);
                if decided.is_ok() && actor.id != target.id {
                    check_acted_within(actor, target)?;
                }
            }
        }
        Ok(())
    }

    /// What must hold after every step.
    fn check_invariants(&self, had_manager: &[bool]) -> Result<(), TestCaseError> {
        for (i, had) in had_manager.iter().enumerate() {
            // Counted here by the rule's own words, not by the domain's
            // function that the decisions are given the count by.
            let managers = self.users.iter().filter(|u| {
                u.organization_id == organization(i)
                    && u.role == Role::Manager
                    && u.scope == Scope::MyOrganization
                    && u.status == UserStatus::Active
            });
            if *had {
                prop_assert!(
                    managers.count() >= 1,
                    "organization {} lost its last My Organization manager",
                    ORGANIZATIONS[i]
                );
            }
        }
        let onboarding = Rights {
            scope: Scope::MyOrganization,
            grant: Grant::everything(),
        };
        for user in self
            .users
            .iter()
            .filter(|u| u.status != UserStatus::Removed)
        {
            let rights = Rights::of(user);
            prop_assert!(
                rights.is_within(&onboarding),
                "beyond what onboarding gave: {:?}",
                rights
            );
            let fits = self.graph.check(&rights.scope, &rights.grant);
            prop_assert!(
                fits.is_ok(),
                "outside the account graph: {:?} {:?}",
                rights,
                fits
            );
        }
        Ok(())
    }
}

/// An allowed action on another user: same organization, and the target's
/// rights (scope included) within the actor's.
fn check_acted_within(actor: &UserSnapshot, target: &UserSnapshot) -> Result<(), TestCaseError> {
    prop_assert_eq!(
        &actor.organization_id,
        &target.organization_id,
        "acted across organizations"
    );
    prop_assert!(
        Rights::of(target).is_within(&Rights::of(actor)),
        "acted on a user with more rights: {:?} over {:?}",
        Rights::of(actor),
        Rights::of(target)
    );
    Ok(())
}

/// A refusal of an actor that does not manage the target names nothing
/// about the target: the same refusal as for any other user it does not
/// manage.
fn check_refusal_is_blind(
    actor: &UserSnapshot,
    target: &UserSnapshot,
    refusal: Option<&Rejection>,
) -> Result<(), TestCaseError> {
    let (Some(refusal), Err(_)) = (refusal, authz::check_manages_user(actor, target)) else {
        return Ok(());
    };
    prop_assert!(
        matches!(refusal.reason, Reason::NotAuthorized | Reason::NotFound),
        "a refused actor was told {:?}: {}",
        refusal.reason,
        refusal.message
    );
    let blind = [
        authz::NOT_YOURS,
        "no such user",
        "only a manager may manage users",
    ];
    prop_assert!(
        blind.contains(&refusal.message.as_str()),
        "the refusal names the target: {}",
        refusal.message
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn nobody_gains_what_they_were_not_given(
        graph in graph(),
        users in proptest::collection::vec(user_spec(), 0..6),
        steps in proptest::collection::vec(step(), 1..24),
    ) {
        let mut model = Model::new(graph, &users);
        let had_manager = [true, true];
        model.check_invariants(&had_manager)?;
        for step in &steps {
            model.apply(step)?;
            model.check_invariants(&had_manager)?;
        }
    }
}
