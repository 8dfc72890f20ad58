//! An email address that is safe to store, to look up and to send mail to.
//!
//! Email addresses arrive from the portal typed by people; they end up in mail
//! headers and in a case-insensitive uniqueness index. Parsing therefore goes
//! further than "looks like an address": it enforces the RFC 5321 length
//! limits, refuses anything that could inject a header (control characters,
//! whitespace), invisible formatting characters that make look-alike
//! addresses, quoted local parts and IP addresses, and requires a host name
//! (letters, digits, hyphens) with at least one dot and a non-numeric
//! top-level label. The syntax itself is checked by the
//! `email_address` crate.

use std::fmt;

use serde::{Serialize, Serializer};

use super::field_error::{FieldError, has_control_chars};
use super::format_chars::is_format_char;

const FIELD: &str = "email";
/// RFC 5321 §4.5.3.1.3 (path) minus the angle brackets.
const MAX_TOTAL: usize = 254;
/// RFC 5321 §4.5.3.1.1.
const MAX_LOCAL: usize = 64;
/// RFC 5321 §4.5.3.1.2.
const MAX_DOMAIN: usize = 255;

/// A syntactically valid email address, trimmed, with its original casing.
///
/// The only way to get one is [`EmailAddress::parse`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EmailAddress(String);

impl EmailAddress {
    /// Parses an address typed by a person (surrounding whitespace is ignored).
    ///
    /// Errors name the field `email` and never repeat the input.
    pub fn parse(s: &str) -> Result<EmailAddress, FieldError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(invalid("must not be empty"));
        }
        if s.len() > MAX_TOTAL {
            return Err(invalid(format!(
                "is too long: at most {MAX_TOTAL} bytes are allowed"
            )));
        }
        if has_control_chars(s) || s.chars().any(char::is_whitespace) {
            return Err(invalid(
                "must not contain spaces, line breaks or other control characters",
            ));
        }
        if s.chars().any(is_format_char) {
            return Err(invalid(
                "must not contain invisible formatting characters (zero-width or bidirectional marks)",
            ));
        }
        let Some((local, domain)) = s.rsplit_once('@') else {
            return Err(invalid("must contain an @ between the name and the domain"));
        };
        if local.is_empty() {
            return Err(invalid("must have a name before the @"));
        }
        if local.len() > MAX_LOCAL {
            return Err(invalid(format!(
                "the part before the @ is too long: at most {MAX_LOCAL} bytes are allowed"
            )));
        }
        if domain.is_empty() {
            return Err(invalid("must have a domain after the @"));
        }
        if domain.len() > MAX_DOMAIN {
            return Err(invalid(format!(
                "the domain is too long: at most {MAX_DOMAIN} bytes are allowed"
            )));
        }
        if local.contains('"') {
            return Err(invalid("quoted names (\"...\"@) are not supported"));
        }
        if domain.starts_with('[') || domain.ends_with(']') {
            return Err(invalid(
                "must use a domain name after the @, not an IP address literal",
            ));
        }
        if !domain.contains('.') {
            return Err(invalid(
                "the domain must contain a dot, as in name@example.com",
            ));
        }
        if !domain
            .chars()
            .all(|c| c.is_alphanumeric() || c == '-' || c == '.')
        {
            return Err(invalid(
                "the domain may contain only letters, digits, hyphens and dots",
            ));
        }
        if domain
            .rsplit('.')
            .next()
            .is_some_and(|tld| !tld.is_empty() && tld.chars().all(|c| c.is_ascii_digit()))
        {
            return Err(invalid(
                "the domain must end in a name such as .com, not in digits or an IP address",
            ));
        }
        let options = email_address::Options::default()
            .without_display_text()
            .without_domain_literal()
            .with_required_tld();
        email_address::EmailAddress::parse_with_options(s, options)
            .map_err(|e| invalid(describe(&e)))?;
        Ok(EmailAddress(s.to_owned()))
    }

    /// The address as given (trimmed), with its original casing.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The lowercased address, the key for case-insensitive global uniqueness.
    pub fn normalized(&self) -> String {
        self.0.to_lowercase()
    }
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for EmailAddress {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

fn invalid(message: impl Into<String>) -> FieldError {
    FieldError::new(FIELD, message)
}

/// A person-readable reason for an `email_address` parse error.
fn describe(e: &email_address::Error) -> &'static str {
    use email_address::Error as E;
    match e {
        E::InvalidCharacter => "contains a character that is not allowed in an email address",
        E::MissingSeparator => "must contain an @ between the name and the domain",
        E::LocalPartEmpty => "must have a name before the @",
        E::LocalPartTooLong => "the part before the @ is too long: at most 64 bytes are allowed",
        E::DomainEmpty => "must have a domain after the @",
        E::DomainTooLong => "the domain is too long",
        E::SubDomainEmpty => "the domain must not contain empty parts (such as two dots in a row)",
        E::SubDomainTooLong => "a part of the domain is longer than 63 characters",
        E::DomainTooFew => "the domain must contain a dot, as in name@example.com",
        E::DomainInvalidSeparator => "the domain has a misplaced dot",
        E::UnbalancedQuotes => "quoted names (\"...\"@) are not supported",
        E::InvalidComment => "comments in email addresses are not supported",
        E::InvalidIPAddress | E::UnsupportedDomainLiteral => {
            "must use a domain name after the @, not an IP address literal"
        }
        E::UnsupportedDisplayName | E::MissingDisplayName | E::MissingEndBracket => {
            "must be a bare address such as name@example.com, without a display name or <>"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn refused(s: &str) -> FieldError {
        match EmailAddress::parse(s) {
            Ok(v) => panic!("expected {s:?} to be refused, got {v:?}"),
            Err(e) => {
                assert_eq!(e.field, "email");
                e
            }
        }
    }

    #[test]
    fn plain_address_is_accepted() {
        let e = EmailAddress::parse("jane.doe@example.com").unwrap();
        assert_eq!(e.as_str(), "jane.doe@example.com");
    }

    #[test]
    fn surrounding_whitespace_is_trimmed() {
        let e = EmailAddress::parse("  jane@example.com \t\n").unwrap();
        assert_eq!(e.as_str(), "jane@example.com");
    }

    #[test]
    fn casing_is_kept_and_normalized_lowercases() {
        let e = EmailAddress::parse("Jane.Doe@Example.COM").unwrap();
        assert_eq!(e.as_str(), "Jane.Doe@Example.COM");
        assert_eq!(e.normalized(), "jane.doe@example.com");
        assert_eq!(e.to_string(), "Jane.Doe@Example.COM");
    }

    #[test]
    fn plus_and_subdomains_are_accepted() {
        assert!(EmailAddress::parse("ops+alerts@mail.eu.example.co.uk").is_ok());
    }

    #[test]
    fn unicode_letters_are_accepted() {
        assert!(EmailAddress::parse("jürgen@müller.de").is_ok());
    }

    #[test]
    fn empty_email_is_refused() {
        assert!(refused("").message.contains("empty"));
        assert!(refused("   ").message.contains("empty"));
    }

    #[test]
    fn email_longer_than_254_chars_is_refused() {
        let domain = format!(
            "{}.{}.{}.com",
            "a".repeat(63),
            "b".repeat(63),
            "c".repeat(60)
        );
        let ok = format!("{}@{domain}", "x".repeat(254 - domain.len() - 1));
        assert_eq!(ok.len(), 254);
        assert!(EmailAddress::parse(&ok).is_ok());
        let too_long = format!("x{ok}");
        assert!(refused(&too_long).message.contains("254"));
    }

    #[test]
    fn local_part_longer_than_64_chars_is_refused() {
        assert!(EmailAddress::parse(&format!("{}@example.com", "a".repeat(64))).is_ok());
        let e = refused(&format!("{}@example.com", "a".repeat(65)));
        assert!(e.message.contains("64"));
    }

    #[test]
    fn huge_input_is_refused_without_echo() {
        let e = refused(&"a@b.c".repeat(100_000));
        assert!(e.message.len() < 100);
    }

    #[test]
    fn header_injection_is_refused() {
        refused("jane@example.com\r\nBcc: evil@example.org");
        refused("jane@example.com\nx");
        refused("jane\0@example.com");
    }

    #[test]
    fn whitespace_inside_is_refused() {
        refused("jane doe@example.com");
        refused("jane@exam ple.com");
        refused("jane\u{00A0}doe@example.com");
    }

    #[test]
    fn invisible_formatting_characters_are_refused() {
        refused("ja\u{200B}ne@example.com");
        refused("jane@exa\u{202E}mple.com");
        refused("\u{FEFF}jane@example.com\u{200D}");
    }

    #[test]
    fn missing_at_is_refused() {
        assert!(refused("jane.example.com").message.contains('@'));
    }

    #[test]
    fn missing_local_part_or_domain_is_refused() {
        refused("@example.com");
        refused("jane@");
        refused("@");
    }

    #[test]
    fn domain_without_dot_is_refused() {
        assert!(refused("jane@localhost").message.contains("dot"));
    }

    #[test]
    fn ip_literal_domain_is_refused() {
        assert!(refused("jane@[127.0.0.1]").message.contains("IP"));
        refused("jane@[IPv6:::1]");
    }

    #[test]
    fn bare_ip_address_or_numeric_tld_is_refused() {
        assert!(refused("jane@1.2.3.4").message.contains("IP"));
        refused("jane@example.123");
    }

    #[test]
    fn domain_with_characters_not_allowed_in_host_names_is_refused() {
        assert!(refused("jane@exa_mple.com").message.contains("domain"));
        refused("jane@exa!mple.com");
        refused("jane@example.com:25");
    }

    #[test]
    fn quoted_local_part_is_refused() {
        assert!(refused("\"jane\"@example.com").message.contains("quoted"));
        assert!(refused("\"ja@ne\"@example.com").message.contains("quoted"));
        refused("\"jane doe\"@example.com");
    }

    #[test]
    fn display_name_form_is_refused() {
        refused("Jane <jane@example.com>");
        refused("<jane@example.com>");
    }

    #[test]
    fn malformed_dots_are_refused() {
        refused("jane@example..com");
        refused("jane@.example.com");
        assert!(refused("jane@example.com.").message.contains("empty parts"));
        refused(".jane@example.com");
        refused("ja..ne@example.com");
    }

    #[test]
    fn two_at_signs_are_refused() {
        refused("jane@doe@example.com");
    }

    #[test]
    fn comments_are_refused() {
        refused("jane(comment)@example.com");
    }

    #[test]
    fn serializes_as_plain_string() {
        let e = EmailAddress::parse("Jane@Example.com").unwrap();
        assert_eq!(serde_json::to_string(&e).unwrap(), "\"Jane@Example.com\"");
    }

    fn assert_roundtrip(s: &str) {
        if let Ok(v) = EmailAddress::parse(s) {
            assert_eq!(EmailAddress::parse(v.as_str()), Ok(v.clone()));
            assert_eq!(EmailAddress::parse(&v.to_string()), Ok(v));
        }
    }

    proptest! {
        #[test]
        fn any_string_parses_to_a_stable_value_or_is_refused(s in any::<String>()) {
            assert_roundtrip(&s);
        }

        #[test]
        fn address_like_strings_parse_to_a_stable_value_or_are_refused(
            s in r#"\s?[a-zA-Z0-9.+_"\[\]() -]{0,70}@[a-zA-Z0-9.\[\]:-]{0,70}\s?"#
        ) {
            assert_roundtrip(&s);
        }

        #[test]
        fn simple_addresses_are_accepted(
            s in "[a-z0-9]{1,20}(\\.[a-z0-9]{1,10})?@[a-z0-9]{1,20}\\.[a-z]{2,6}"
        ) {
            let v = EmailAddress::parse(&s).unwrap();
            prop_assert_eq!(v.as_str(), s.as_str());
        }
    }
}
