//! Which accounts a user may see: all of its organization's, or a list.
//!
//! Used for both contract accounts and delivery accounts. The subset rule
//! here is what stops anyone granting access it does not hold itself.

use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeSet;

use super::field_error::FieldError;
use super::ids::AccountId;

/// Access to a kind of account: `"all"` or an explicit list of ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountAccess {
    /// Every account of the organization, including ones added later.
    All,
    /// Only these accounts.
    Only(BTreeSet<AccountId>),
}

impl AccountAccess {
    /// Parses the contract's `"all" | [ids]` from JSON; `field` names it in errors.
    pub fn parse(value: &Value, field: &str) -> Result<AccountAccess, FieldError> {
        match value {
            Value::String(s) if s == "all" => Ok(AccountAccess::All),
            Value::Array(items) => {
                let mut ids = BTreeSet::new();
                for (i, item) in items.iter().enumerate() {
                    let Value::String(s) = item else {
                        return Err(FieldError::new(
                            format!("{field}[{i}]"),
                            "must be an account id string",
                        ));
                    };
                    ids.insert(AccountId::parse(s, &format!("{field}[{i}]"))?);
                }
                Ok(AccountAccess::Only(ids))
            }
            _ => Err(FieldError::new(
                field,
                "must be \"all\" or a list of account ids",
            )),
        }
    }

    /// True when everything `self` grants is also granted by `holder`.
    pub fn is_within(&self, holder: &AccountAccess) -> bool {
        match (self, holder) {
            (_, AccountAccess::All) => true,
            (AccountAccess::All, AccountAccess::Only(_)) => false,
            (AccountAccess::Only(wanted), AccountAccess::Only(held)) => wanted.is_subset(held),
        }
    }

    /// The listed ids, or `None` for all (the database's representation).
    pub fn ids(&self) -> Option<Vec<String>> {
        match self {
            AccountAccess::All => None,
            AccountAccess::Only(ids) => Some(ids.iter().map(|i| i.as_str().to_owned()).collect()),
        }
    }

    /// Refuses ids that are not among the organization's `known` accounts.
    pub fn check_known(&self, known: &BTreeSet<String>, field: &str) -> Result<(), FieldError> {
        let AccountAccess::Only(ids) = self else {
            return Ok(());
        };
        let unknown: Vec<&str> = ids
            .iter()
            .map(|i| i.as_str())
            .filter(|i| !known.contains(*i))
            .collect();
        if unknown.is_empty() {
            Ok(())
        } else {
            Err(FieldError::new(
                field,
                format!(
                    "unknown account id(s) in this organization: {}",
                    unknown.join(", ")
                ),
            ))
        }
    }

    /// Ids the wanted access names that `holder` does not hold (for messages).
    pub fn missing_from(&self, holder: &AccountAccess) -> Vec<String> {
        match (self, holder) {
            (_, AccountAccess::All) => Vec::new(),
            (AccountAccess::All, AccountAccess::Only(_)) => vec!["all".to_owned()],
            (AccountAccess::Only(wanted), AccountAccess::Only(held)) => wanted
                .difference(held)
                .map(|i| i.as_str().to_owned())
                .collect(),
        }
    }
}

impl Serialize for AccountAccess {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            AccountAccess::All => s.serialize_str("all"),
            AccountAccess::Only(ids) => ids.serialize(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn only(ids: &[&str]) -> AccountAccess {
        AccountAccess::Only(
            ids.iter()
                .map(|i| AccountId::parse(i, "x").unwrap())
                .collect(),
        )
    }

    #[test]
    fn all_and_lists_parse() {
        assert_eq!(
            AccountAccess::parse(&json!("all"), "c").unwrap(),
            AccountAccess::All
        );
        assert_eq!(
            AccountAccess::parse(&json!(["CA-2", "CA-1", "CA-1"]), "c").unwrap(),
            only(&["CA-1", "CA-2"])
        );
    }

    #[test]
    fn anything_else_is_refused_naming_the_field() {
        let e = AccountAccess::parse(&json!("some"), "contract_accounts").unwrap_err();
        assert_eq!(e.field, "contract_accounts");
        let e = AccountAccess::parse(&json!(["ok", 3]), "contract_accounts").unwrap_err();
        assert_eq!(e.field, "contract_accounts[1]");
    }

    #[test]
    fn unknown_ids_are_named() {
        let known: BTreeSet<String> = ["a".to_owned()].into();
        assert!(only(&["a"]).check_known(&known, "c").is_ok());
        assert!(AccountAccess::All.check_known(&known, "c").is_ok());
        let e = only(&["a", "zz"])
            .check_known(&known, "contract_accounts")
            .unwrap_err();
        assert_eq!(e.field, "contract_accounts");
        assert!(e.message.contains("zz"));
    }

    #[test]
    fn nobody_grants_more_than_it_holds() {
        assert!(AccountAccess::All.is_within(&AccountAccess::All));
        assert!(only(&["a"]).is_within(&AccountAccess::All));
        assert!(!AccountAccess::All.is_within(&only(&["a"])));
        assert!(only(&["a"]).is_within(&only(&["a", "b"])));
        assert!(!only(&["a", "c"]).is_within(&only(&["a", "b"])));
        assert_eq!(
            only(&["a", "c"]).missing_from(&only(&["a", "b"])),
            vec!["c"]
        );
    }
}
