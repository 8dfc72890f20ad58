//! The permission catalog and sets of permissions.
//!
//! What a user may do in the portal is a set of named permissions from a fixed
//! catalog (CONTRACT.md; the same names are seeded into the database by
//! migration). Modelling the catalog as an enum means an unknown name is
//! refused at the edge, and the "nobody grants what it does not hold itself"
//! rule is a plain subset test on [`PermissionSet`].

use std::collections::BTreeSet;
use std::fmt;

use serde::{Serialize, Serializer};

use super::field_error::FieldError;

const FIELD: &str = "permissions";
/// How much of an unknown name an error message repeats.
const MAX_ECHO_CHARS: usize = 40;

/// One permission of the catalog; its wire name is dotted, e.g. `cases.view`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Permission {
    /// `services.view`: see the organization's services.
    ServicesView,
    /// `services.manage`: change the organization's services.
    ServicesManage,
    /// `cases.view`: see support cases.
    CasesView,
    /// `cases.create`: open support cases.
    CasesCreate,
    /// `orders.view`: see orders.
    OrdersView,
    /// `orders.create`: place orders.
    OrdersCreate,
    /// `invoices.view`: see invoices.
    InvoicesView,
    /// `documents.view`: see documents.
    DocumentsView,
}

impl Permission {
    /// The whole catalog, in catalog order.
    pub const ALL: [Permission; 8] = [
        Permission::ServicesView,
        Permission::ServicesManage,
        Permission::CasesView,
        Permission::CasesCreate,
        Permission::OrdersView,
        Permission::OrdersCreate,
        Permission::InvoicesView,
        Permission::DocumentsView,
    ];

    /// The dotted wire name, e.g. `"cases.view"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Permission::ServicesView => "services.view",
            Permission::ServicesManage => "services.manage",
            Permission::CasesView => "cases.view",
            Permission::CasesCreate => "cases.create",
            Permission::OrdersView => "orders.view",
            Permission::OrdersCreate => "orders.create",
            Permission::InvoicesView => "invoices.view",
            Permission::DocumentsView => "documents.view",
        }
    }

    /// Parses a dotted wire name, exactly (case-sensitive, no whitespace).
    ///
    /// Errors name the field `permissions`, the unknown name (shortened if
    /// long) and the valid names.
    pub fn parse(s: &str) -> Result<Permission, FieldError> {
        Permission::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| {
                let valid: Vec<&str> = Permission::ALL.iter().map(Permission::as_str).collect();
                FieldError::new(
                    FIELD,
                    format!(
                        "unknown permission {}; valid permissions are {}",
                        echo(s),
                        valid.join(", ")
                    ),
                )
            })
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Permission {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// A quoted, escaped and shortened rendering of an unknown name for messages.
fn echo(s: &str) -> String {
    let mut chars = s.chars();
    let head: String = chars.by_ref().take(MAX_ECHO_CHARS).collect();
    if chars.next().is_some() {
        format!("{head:?}…")
    } else {
        format!("{head:?}")
    }
}

/// A set of permissions; duplicates collapse, iteration is in catalog order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PermissionSet(BTreeSet<Permission>);

impl PermissionSet {
    /// Parses a list of dotted names; the first unknown name is refused
    /// (field `permissions`). An empty list is the empty set.
    pub fn parse(values: &[String]) -> Result<PermissionSet, FieldError> {
        values
            .iter()
            .map(|v| Permission::parse(v))
            .collect::<Result<BTreeSet<_>, _>>()
            .map(PermissionSet)
    }

    /// Every permission of the catalog.
    pub fn all() -> PermissionSet {
        Permission::ALL.into_iter().collect()
    }

    /// Whether `p` is in the set.
    pub fn contains(&self, p: Permission) -> bool {
        self.0.contains(&p)
    }

    /// Whether every permission of `self` is also in `other`.
    pub fn is_subset(&self, other: &PermissionSet) -> bool {
        self.0.is_subset(&other.0)
    }

    /// The permissions, in catalog order.
    pub fn iter(&self) -> impl Iterator<Item = Permission> + '_ {
        self.0.iter().copied()
    }

    /// The dotted names, in catalog order.
    pub fn names(&self) -> Vec<String> {
        self.iter().map(|p| p.as_str().to_owned()).collect()
    }
}

impl FromIterator<Permission> for PermissionSet {
    /// Collects permissions into a set; duplicates collapse.
    fn from_iter<I: IntoIterator<Item = Permission>>(iter: I) -> Self {
        PermissionSet(iter.into_iter().collect())
    }
}

impl Serialize for PermissionSet {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter().map(|p| p.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn every_catalog_name_parses_to_itself() {
        for p in Permission::ALL {
            assert_eq!(Permission::parse(p.as_str()), Ok(p));
            assert_eq!(p.to_string(), p.as_str());
        }
    }

    #[test]
    fn catalog_matches_the_contract() {
        let names: Vec<&str> = Permission::ALL.iter().map(Permission::as_str).collect();
        assert_eq!(
            names,
            [
                "services.view",
                "services.manage",
                "cases.view",
                "cases.create",
                "orders.view",
                "orders.create",
                "invoices.view",
                "documents.view",
            ]
        );
    }

    #[test]
    fn unknown_permission_is_refused_naming_it_and_the_valid_ones() {
        let e = Permission::parse("cases.delete").unwrap_err();
        assert_eq!(e.field, "permissions");
        assert!(e.message.contains("\"cases.delete\""));
        for p in Permission::ALL {
            assert!(e.message.contains(p.as_str()));
        }
    }

    #[test]
    fn permission_names_are_case_and_space_sensitive() {
        assert!(Permission::parse("Cases.View").is_err());
        assert!(Permission::parse(" cases.view").is_err());
        assert!(Permission::parse("").is_err());
    }

    #[test]
    fn long_unknown_permission_is_shortened_in_the_message() {
        let e = Permission::parse(&"x".repeat(100_000)).unwrap_err();
        assert!(e.message.len() < 300);
        assert!(e.message.contains('…'));
    }

    #[test]
    fn control_chars_in_unknown_permission_are_escaped() {
        let e = Permission::parse("a\nb\u{1b}").unwrap_err();
        assert!(!e.message.chars().any(char::is_control));
    }

    #[test]
    fn set_collapses_duplicates() {
        let s =
            PermissionSet::parse(&strings(&["cases.view", "cases.view", "orders.view"])).unwrap();
        assert_eq!(s.names(), ["cases.view", "orders.view"]);
    }

    #[test]
    fn set_iterates_in_catalog_order() {
        let s = PermissionSet::parse(&strings(&["documents.view", "services.view"])).unwrap();
        assert_eq!(
            s.iter().collect::<Vec<_>>(),
            [Permission::ServicesView, Permission::DocumentsView]
        );
    }

    #[test]
    fn empty_list_is_the_empty_set() {
        let s = PermissionSet::parse(&[]).unwrap();
        assert_eq!(s, PermissionSet::default());
        assert!(s.names().is_empty());
    }

    #[test]
    fn set_with_an_unknown_name_is_refused() {
        let e = PermissionSet::parse(&strings(&["cases.view", "root"])).unwrap_err();
        assert_eq!(e.field, "permissions");
        assert!(e.message.contains("\"root\""));
    }

    #[test]
    fn all_holds_the_whole_catalog() {
        let all = PermissionSet::all();
        for p in Permission::ALL {
            assert!(all.contains(p));
        }
        assert_eq!(all.names().len(), 8);
    }

    #[test]
    fn subset_is_what_a_granter_may_grant() {
        let granter = PermissionSet::parse(&strings(&["cases.view", "cases.create"])).unwrap();
        let ok = PermissionSet::parse(&strings(&["cases.view"])).unwrap();
        let too_much = PermissionSet::parse(&strings(&["cases.view", "orders.view"])).unwrap();
        assert!(ok.is_subset(&granter));
        assert!(!too_much.is_subset(&granter));
        assert!(PermissionSet::default().is_subset(&granter));
        assert!(granter.is_subset(&PermissionSet::all()));
    }

    #[test]
    fn serializes_as_dotted_strings() {
        let s = PermissionSet::parse(&strings(&["orders.create", "cases.view"])).unwrap();
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            r#"["cases.view","orders.create"]"#
        );
        assert_eq!(
            serde_json::to_string(&Permission::InvoicesView).unwrap(),
            r#""invoices.view""#
        );
    }

    fn catalog_name() -> impl Strategy<Value = String> {
        prop::sample::select(Permission::ALL.to_vec()).prop_map(|p| p.as_str().to_owned())
    }

    proptest! {
        #[test]
        fn any_string_parses_to_a_stable_permission_or_is_refused(s in any::<String>()) {
            if let Ok(p) = Permission::parse(&s) {
                prop_assert_eq!(Permission::parse(p.as_str()), Ok(p));
            }
        }

        #[test]
        fn any_list_parses_to_a_stable_set_or_is_refused(
            values in prop::collection::vec(prop_oneof![catalog_name(), any::<String>()], 0..12)
        ) {
            match PermissionSet::parse(&values) {
                Ok(set) => {
                    prop_assert_eq!(PermissionSet::parse(&set.names()), Ok(set.clone()));
                    prop_assert_eq!(set.iter().count(), values.iter().collect::<BTreeSet<_>>().len());
                }
                Err(e) => prop_assert_eq!(e.field, "permissions"),
            }
        }
    }
}
