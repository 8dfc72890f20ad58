//! Identifiers: those the portal supplies and those this worker mints.
//!
//! Organization and account ids come from upstream systems (the portal, the
//! billing system) and are opaque to us; they are restricted to a safe,
//! printable alphabet and a bounded length so they can be logged, stored and
//! echoed back without surprises. User ids are UUIDs we mint. Command ids are
//! the CloudEvents `id`, our idempotency key: anything printable up to 200
//! characters. Each is its own type so that one can't be passed for another.

use std::fmt;

use serde::{Serialize, Serializer};

use super::field_error::{FieldError, has_control_chars};

/// Longest portal-supplied id, in characters.
const MAX_EXTERNAL_ID: usize = 64;
/// Longest command id, in characters.
const MAX_COMMAND_ID: usize = 200;

/// Checks an id supplied by the portal: 1..=64 characters of `[A-Za-z0-9._:-]`.
fn parse_external_id(s: &str, field: &str) -> Result<String, FieldError> {
    if s.is_empty() {
        return Err(FieldError::new(field, "must not be empty"));
    }
    if s.len() > MAX_EXTERNAL_ID {
        return Err(FieldError::new(
            field,
            format!("is too long: at most {MAX_EXTERNAL_ID} characters are allowed"),
        ));
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
    {
        return Err(FieldError::new(
            field,
            "may contain only letters A-Z and a-z, digits and . _ : -",
        ));
    }
    Ok(s.to_owned())
}

/// Implements `as_str`, `Display` and `Serialize` for a `String` newtype.
macro_rules! string_id {
    ($name:ident) => {
        impl $name {
            /// The id exactly as received.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }
    };
}

/// The portal's id of a customer organization.
///
/// The only way to get one is [`OrganizationId::parse`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OrganizationId(String);

impl OrganizationId {
    /// Parses an organization id: 1..=64 characters of `[A-Za-z0-9._:-]`;
    /// `field` names the field in errors.
    pub fn parse(s: &str, field: &str) -> Result<Self, FieldError> {
        parse_external_id(s, field).map(OrganizationId)
    }
}

string_id!(OrganizationId);

/// The portal's id of a contract account or a delivery account.
///
/// The only way to get one is [`AccountId::parse`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccountId(String);

impl AccountId {
    /// Parses an account id: 1..=64 characters of `[A-Za-z0-9._:-]`;
    /// `field` names the field in errors.
    pub fn parse(s: &str, field: &str) -> Result<Self, FieldError> {
        parse_external_id(s, field).map(AccountId)
    }
}

string_id!(AccountId);

/// Our id of a user: a UUID, minted as v4 by [`UserId::new`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UserId(pub uuid::Uuid);

impl UserId {
    /// A fresh random (v4) user id.
    #[allow(clippy::new_without_default)] // a Default that mints a random id would surprise
    pub fn new() -> UserId {
        UserId(uuid::Uuid::new_v4())
    }

    /// Parses a UUID string (hyphenated, simple, braced or `urn:uuid:` form);
    /// `field` names the field in errors.
    pub fn parse(s: &str, field: &str) -> Result<UserId, FieldError> {
        uuid::Uuid::try_parse(s).map(UserId).map_err(|_| {
            FieldError::new(
                field,
                "must be a UUID such as 0f9e4c2a-1b3d-4e5f-8a7b-6c5d4e3f2a1b",
            )
        })
    }

    /// The underlying UUID.
    pub fn as_uuid(&self) -> uuid::Uuid {
        self.0
    }
}

impl fmt::Display for UserId {
    /// Hyphenated lowercase form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

impl Serialize for UserId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&self.0.hyphenated())
    }
}

/// A command's CloudEvents `id`, the idempotency key.
///
/// The only way to get one is [`CommandId::parse`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CommandId(String);

impl CommandId {
    /// Parses a command id: 1..=200 characters, no control characters.
    /// Errors name the field `id`.
    pub fn parse(s: &str) -> Result<CommandId, FieldError> {
        const FIELD: &str = "id";
        if s.is_empty() {
            return Err(FieldError::new(FIELD, "must not be empty"));
        }
        if s.chars().nth(MAX_COMMAND_ID).is_some() {
            return Err(FieldError::new(
                FIELD,
                format!("is too long: at most {MAX_COMMAND_ID} characters are allowed"),
            ));
        }
        if has_control_chars(s) {
            return Err(FieldError::new(
                FIELD,
                "must not contain line breaks or other control characters",
            ));
        }
        Ok(CommandId(s.to_owned()))
    }
}

string_id!(CommandId);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn external_id_of_allowed_chars_is_accepted() {
        let id = OrganizationId::parse("ORG-42:nl_1.a", "organization.id").unwrap();
        assert_eq!(id.as_str(), "ORG-42:nl_1.a");
        assert_eq!(id.to_string(), "ORG-42:nl_1.a");
        assert!(AccountId::parse("1000123456", "contract_accounts").is_ok());
    }

    #[test]
    fn external_id_of_64_chars_is_accepted() {
        assert!(AccountId::parse(&"a".repeat(64), "id").is_ok());
    }

    #[test]
    fn external_id_longer_than_64_chars_is_refused() {
        let e = AccountId::parse(&"a".repeat(65), "delivery_account_id").unwrap_err();
        assert_eq!(e.field, "delivery_account_id");
        assert!(e.message.contains("64"));
    }

    #[test]
    fn empty_external_id_is_refused() {
        let e = OrganizationId::parse("", "organization_id").unwrap_err();
        assert_eq!(e.field, "organization_id");
    }

    #[test]
    fn external_id_with_other_chars_is_refused() {
        for bad in [
            "a b", "a/b", "a\nb", "é", "a\u{0}", "../x", " a", "a@b", "ａ",
        ] {
            let e = OrganizationId::parse(bad, "organization_id").unwrap_err();
            assert_eq!(e.field, "organization_id");
        }
    }

    #[test]
    fn external_ids_order_and_hash_by_value() {
        let a = AccountId::parse("A1", "id").unwrap();
        let b = AccountId::parse("B1", "id").unwrap();
        assert!(a < b);
        let set: std::collections::HashSet<_> = [a.clone(), a.clone(), b].into_iter().collect();
        assert_eq!(set.len(), 2);
    }

    #[test]
    fn new_user_ids_are_v4_and_distinct() {
        let a = UserId::new();
        let b = UserId::new();
        assert_ne!(a, b);
        assert_eq!(a.as_uuid().get_version_num(), 4);
    }

    #[test]
    fn user_id_parses_and_displays_hyphenated() {
        let s = "0f9e4c2a-1b3d-4e5f-8a7b-6c5d4e3f2a1b";
        let id = UserId::parse(s, "user_id").unwrap();
        assert_eq!(id.to_string(), s);
        assert_eq!(UserId::parse(&s.to_uppercase(), "user_id"), Ok(id));
        assert_eq!(serde_json::to_string(&id).unwrap(), format!("\"{s}\""));
    }

    #[test]
    fn malformed_user_id_is_refused() {
        for bad in [
            "",
            "nope",
            "0f9e4c2a-1b3d-4e5f-8a7b",
            "0f9e4c2a-1b3d-4e5f-8a7b-6c5d4e3f2a1bx",
        ] {
            let e = UserId::parse(bad, "user_id").unwrap_err();
            assert_eq!(e.field, "user_id");
        }
    }

    #[test]
    fn command_id_of_printable_text_is_accepted() {
        let id = CommandId::parse("5b0d3c3e-7b1f-4c8e-9a55-0d8a0f1f2a10").unwrap();
        assert_eq!(id.as_str(), "5b0d3c3e-7b1f-4c8e-9a55-0d8a0f1f2a10");
        assert!(CommandId::parse("portal run 7 / step #3 — ok").is_ok());
        assert!(CommandId::parse(&"é".repeat(200)).is_ok());
    }

    #[test]
    fn empty_command_id_is_refused() {
        assert_eq!(CommandId::parse("").unwrap_err().field, "id");
    }

    #[test]
    fn command_id_longer_than_200_chars_is_refused() {
        let e = CommandId::parse(&"x".repeat(201)).unwrap_err();
        assert!(e.message.contains("200"));
        assert!(CommandId::parse(&"x".repeat(10_000_000)).is_err());
    }

    #[test]
    fn command_id_with_control_chars_is_refused() {
        assert!(CommandId::parse("abc\n").is_err());
        assert!(CommandId::parse("a\u{1B}[31m").is_err());
    }

    #[test]
    fn ids_serialize_as_strings() {
        let o = OrganizationId::parse("ORG-1", "id").unwrap();
        let c = CommandId::parse("c-1").unwrap();
        assert_eq!(serde_json::to_string(&o).unwrap(), "\"ORG-1\"");
        assert_eq!(serde_json::to_string(&c).unwrap(), "\"c-1\"");
    }

    proptest! {
        #[test]
        fn organization_id_parses_to_a_stable_value_or_is_refused(s in any::<String>()) {
            if let Ok(v) = OrganizationId::parse(&s, "id") {
                prop_assert_eq!(OrganizationId::parse(v.as_str(), "id"), Ok(v));
            }
        }

        #[test]
        fn account_id_parses_to_a_stable_value_or_is_refused(s in "[A-Za-z0-9._:/ -]{0,70}") {
            match AccountId::parse(&s, "id") {
                Ok(v) => {
                    prop_assert_eq!(v.as_str(), s.as_str());
                    prop_assert_eq!(AccountId::parse(v.as_str(), "id"), Ok(v));
                }
                Err(e) => prop_assert_eq!(e.field, "id"),
            }
        }

        #[test]
        fn user_id_parses_to_a_stable_value_or_is_refused(s in any::<String>()) {
            if let Ok(v) = UserId::parse(&s, "user_id") {
                prop_assert_eq!(UserId::parse(&v.to_string(), "user_id"), Ok(v));
            }
        }

        #[test]
        fn user_id_roundtrips_through_display(bytes in any::<[u8; 16]>()) {
            let id = UserId(uuid::Uuid::from_bytes(bytes));
            prop_assert_eq!(UserId::parse(&id.to_string(), "user_id"), Ok(id));
        }

        #[test]
        fn command_id_parses_to_a_stable_value_or_is_refused(s in any::<String>()) {
            if let Ok(v) = CommandId::parse(&s) {
                prop_assert_eq!(CommandId::parse(v.as_str()), Ok(v));
            }
        }
    }
}
