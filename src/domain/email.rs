//! An email address that is safe to store, to look up and to send mail to.
//!
//! Email addresses arrive from the portal typed by people; they end up in mail
//! headers and in a uniqueness index. Parsing therefore goes
//! further than "looks like an address": it enforces the RFC 5321 length
//! limits, refuses anything that could inject a header (control characters,
//! whitespace), invisible formatting characters that make look-alike
//! addresses, quoted local parts and IP addresses, and requires a host name
//! (letters, digits, hyphens) with at least one dot and a non-numeric
//! top-level label. The syntax itself is checked by the
//! `email_address` crate. A new address must also have a local part in one
//! script (Unicode TR39: no Latin `p` beside a Cyrillic `а`) and a domain
//! that IDNA (UTS 46) accepts.
//!
//! One mailbox is one [`EmailKey`]: the address as people may write it in
//! different ways (case, composed or decomposed accents, a domain as a
//! U-label or its `xn--` A-label) has one key, and lookups and uniqueness
//! compare keys, never the text as typed.

use std::borrow::Cow;
use std::fmt;

use idna::AsciiDenyList;
use serde::{Serialize, Serializer};
use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;
use unicode_security::MixedScript;

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
        let address = EmailAddress::from_stored(s)?;
        let (local, domain) = address.parts();
        if !local.is_single_script() {
            return Err(invalid(
                "the part before the @ mixes letters of different scripts (such as Latin and Cyrillic)",
            ));
        }
        if idna::domain_to_ascii_cow(domain.as_bytes(), AsciiDenyList::STD3).is_err() {
            return Err(invalid(
                "the domain is not a valid internationalized domain name",
            ));
        }
        Ok(address)
    }

    /// Parses an address read back from the database: the rules of
    /// [`EmailAddress::parse`] except those added after addresses were
    /// stored (one script, IDNA), so that a user stored before them still
    /// loads, and still has a key.
    pub fn from_stored(s: &str) -> Result<EmailAddress, FieldError> {
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
        // U+034F is a combining mark, not a format character, yet renders
        // as nothing; composed addresses would otherwise let it through.
        if s.chars().any(|c| is_format_char(c) || c == '\u{034F}') {
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
            .all(|c| c.is_alphanumeric() || is_combining_mark(c) || c == '-' || c == '.')
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
        // Its characters are checked composed: a decomposed accent is a
        // letter and a combining mark, which the crate refuses alone.
        email_address::EmailAddress::parse_with_options(&s.nfc().collect::<String>(), options)
            .map_err(|e| invalid(describe(&e)))?;
        Ok(EmailAddress(s.to_owned()))
    }

    /// The address as given (trimmed), with its original casing.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key of this mailbox, for lookups and global uniqueness.
    pub fn key(&self) -> EmailKey {
        EmailKey::of(&self.0)
    }

    /// The part before and the part after the last `@` (parsing made sure
    /// there is one).
    fn parts(&self) -> (&str, &str) {
        self.0.rsplit_once('@').unwrap_or((&self.0, ""))
    }
}

/// The address to send mail to: the local part as given, the domain in its
/// IDNA ASCII form, so that an internationalized domain needs no SMTPUTF8
/// from the mail server (only a non-ASCII local part does). Total: a
/// domain IDNA refuses is kept as given.
pub fn deliverable(address: &str) -> Cow<'_, str> {
    let Some((local, domain)) = address.rsplit_once('@') else {
        return Cow::Borrowed(address);
    };
    match idna::domain_to_ascii_cow(domain.as_bytes(), AsciiDenyList::EMPTY) {
        Ok(ascii) if ascii != domain => Cow::Owned(format!("{local}@{ascii}")),
        _ => Cow::Borrowed(address),
    }
}

/// The canonical form of an address: the local part NFC-normalized and
/// lowercased (full Unicode lowercase, then NFC again), the domain in its
/// IDNA ASCII form (UTS 46 nontransitional processing, which lowercases and
/// maps the U-label to its `xn--` A-label), joined by `@`.
///
/// Lowercase stands in for case folding: it unifies every case variant of
/// a letter whose capital lowercases back to it (`Ä`/`ä`, `İ`/`i̇`, `Σ`
/// at the end of a word/`ς`), but not the few that case folding would fold
/// further (`ß` and `ss` stay two keys, as do `ς` and `σ` inside a word).
/// The key is its own key, and it never contains whitespace (addresses
/// cannot).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EmailKey(String);

impl EmailKey {
    /// The key of an address's text. Total: a domain IDNA refuses (only a
    /// stored address that predates that rule can have one) is keyed as
    /// the local part is.
    pub fn of(address: &str) -> EmailKey {
        let address = address.trim();
        let Some((local, domain)) = address.rsplit_once('@') else {
            return EmailKey(fold(address));
        };
        let domain = idna::domain_to_ascii_cow(domain.as_bytes(), AsciiDenyList::EMPTY)
            .map(|ascii| ascii.to_ascii_lowercase())
            .unwrap_or_else(|_| fold(domain));
        EmailKey(format!("{}@{domain}", fold(local)))
    }

    /// The key as text (what the `users.email_key` column holds).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EmailKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// NFC, full Unicode lowercase, NFC again (lowercasing can decompose, as
/// `İ` becomes `i` and a combining dot).
fn fold(s: &str) -> String {
    s.nfc().collect::<String>().to_lowercase().nfc().collect()
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

    fn key(s: &str) -> String {
        EmailAddress::parse(s).unwrap().key().as_str().to_owned()
    }

    #[test]
    fn casing_is_kept_and_the_key_lowercases() {
        let e = EmailAddress::parse("Jane.Doe@Example.COM").unwrap();
        assert_eq!(e.as_str(), "Jane.Doe@Example.COM");
        assert_eq!(e.key().as_str(), "jane.doe@example.com");
        assert_eq!(e.to_string(), "Jane.Doe@Example.COM");
    }

    #[test]
    fn a_capital_dotted_i_has_the_key_of_its_lowercase() {
        // Unicode lowercases `İ` to `i` and a combining dot above.
        assert_eq!(key("İlker.x@example.test"), "i\u{307}lker.x@example.test");
        assert_eq!(key("İLKER.X@EXAMPLE.TEST"), key("İlker.x@example.test"));
        assert_eq!(key("ILKER.X@example.test"), "ilker.x@example.test");
    }

    #[test]
    fn composed_and_decomposed_accents_have_one_key() {
        assert_eq!(
            key("j\u{FC}rgen@example.de"),
            key("ju\u{308}rgen@example.de")
        );
        assert_eq!(
            key("J\u{DC}RGEN@example.de"),
            key("ju\u{308}rgen@example.de")
        );
        assert_eq!(
            key("m\u{FC}ller@m\u{FC}ller.example"),
            key("mu\u{308}ller@mu\u{308}ller.example")
        );
    }

    #[test]
    fn a_u_label_domain_and_its_a_label_have_one_key() {
        assert_eq!(key("ann@müller.example"), "ann@xn--mller-kva.example");
        assert_eq!(
            key("ann@xn--mller-kva.example"),
            "ann@xn--mller-kva.example"
        );
        assert_eq!(key("Ann@MÜLLER.Example"), "ann@xn--mller-kva.example");
        assert_eq!(
            key("ann@XN--MLLER-KVA.EXAMPLE"),
            "ann@xn--mller-kva.example"
        );
    }

    #[test]
    fn the_key_keeps_what_case_does_not_change() {
        assert_eq!(
            key("Ops+Alerts_1@Mail.Example.com"),
            "ops+alerts_1@mail.example.com"
        );
        assert_ne!(key("ann@example.test"), key("ann@example.tes"));
        assert_ne!(key("ann.b@example.test"), key("annb@example.test"));
    }

    #[test]
    fn a_stored_address_always_has_a_key() {
        // Stored before the IDNA rule: keyed as the local part is.
        let e = EmailAddress::from_stored("Ann@XN--ZZ.example").unwrap();
        assert!(EmailAddress::parse("Ann@XN--ZZ.example").is_err());
        assert_eq!(e.key().as_str(), "ann@xn--zz.example");
        assert_eq!(EmailKey::of("NO-AT-SIGN").as_str(), "no-at-sign");
    }

    #[test]
    fn a_local_part_that_mixes_scripts_is_refused() {
        // Latin p, y, p, a, l with a Cyrillic а (U+0430).
        let e = refused("p\u{430}ypal@example.test");
        assert!(e.message.contains("scripts"), "{}", e.message);
        refused("\u{3B1}lpha@example.test"); // Greek alpha, Latin rest
        refused("\u{43F}aypal@example.test"); // Cyrillic п, Latin rest
    }

    #[test]
    fn a_local_part_in_one_script_is_accepted() {
        for s in [
            "jane.doe+1@example.test",
            "jürgen_2@example.test",
            "\u{438}\u{432}\u{430}\u{43D}.42@example.test", // иван.42
            "\u{3B1}\u{3BB}\u{3AD}\u{3BE}\u{3B7}\u{3C2}@example.test", // αλέξης
            "\u{5C71}\u{7530}\u{305F}\u{308D}\u{3046}@example.jp", // 山田たろう (Japanese)
        ] {
            assert!(EmailAddress::parse(s).is_ok(), "{s}");
        }
    }

    #[test]
    fn a_stored_address_that_mixes_scripts_still_loads() {
        let e = EmailAddress::from_stored("p\u{430}ypal@example.test").unwrap();
        assert_eq!(e.key().as_str(), "p\u{430}ypal@example.test");
    }

    #[test]
    fn a_domain_idna_refuses_is_refused() {
        let e = refused("ann@xn--zz.example");
        assert!(e.message.contains("domain"), "{}", e.message);
    }

    #[test]
    fn mail_goes_to_the_ascii_form_of_the_domain_and_the_local_part_as_given() {
        assert_eq!(
            deliverable("Ann@Müller.example"),
            "Ann@xn--mller-kva.example"
        );
        assert_eq!(deliverable("İlker.x@example.test"), "İlker.x@example.test");
        assert!(matches!(deliverable("ann@example.test"), Cow::Borrowed(_)));
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

    /// Letters whose capital lowercases back to them, by script: a local
    /// part in one of them, a domain in Latin (the U-labels of most
    /// European domains), and which characters to capitalize.
    fn one_script_address() -> impl Strategy<Value = (String, String, Vec<bool>)> {
        let latin = "[a-zà-öø-þ]";
        let greek = "[αβγδεζηθικλμνξοπρτυφχψωάέήίόύώ]";
        let cyrillic = "[а-яё]";
        let in_script = |letter: &str| {
            proptest::string::string_regex(&format!(
                "{letter}{{1,10}}([.+_-]?{letter}{{1,5}})?[0-9]{{0,2}}"
            ))
            .unwrap()
        };
        let local = prop_oneof![in_script(latin), in_script(greek), in_script(cyrillic)];
        let domain = "[a-zäöüéèçñå]{1,10}[0-9]{0,2}\\.(example|test|de|nl)";
        (
            local,
            domain,
            proptest::collection::vec(any::<bool>(), 1..8),
        )
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
        fn the_key_of_any_text_is_its_own_key(s in any::<String>()) {
            let k = EmailKey::of(&s);
            prop_assert_eq!(EmailKey::of(k.as_str()), k);
        }

        #[test]
        fn the_key_of_an_address_is_its_own_key(
            s in "[a-zA-ZÀ-ÖØ-öø-ÿİı0-9.+_-]{1,20}@[a-zA-ZÀ-ÖØ-öø-ÿ0-9-]{1,12}\\.[a-zA-ZÀ-ÖØ-öø-ÿ]{2,6}"
        ) {
            if let Ok(a) = EmailAddress::parse(&s) {
                let k = a.key();
                prop_assert_eq!(EmailKey::of(k.as_str()), k.clone());
                if let Ok(again) = EmailAddress::parse(k.as_str()) {
                    prop_assert_eq!(again.key(), k);
                }
            }
        }

        #[test]
        fn case_variants_of_an_address_have_one_key(
            (local, domain, upper) in one_script_address(),
        ) {
            let lower = format!("{local}@{domain}");
            let variant: String = lower
                .chars()
                .zip(upper.iter().cycle())
                .map(|(c, up)| if *up { c.to_uppercase().collect() } else { c.to_string() })
                .collect();
            let a = EmailAddress::parse(&lower).unwrap();
            let b = EmailAddress::parse(&variant).unwrap();
            prop_assert_eq!(a.key(), b.key(), "{} and {}", lower, variant);
        }

        #[test]
        fn composed_and_decomposed_forms_of_an_address_have_one_key(
            (local, domain, _) in one_script_address(),
        ) {
            let s = format!("{local}@{domain}");
            let nfc: String = s.nfc().collect();
            let nfd: String = s.nfd().collect();
            let a = EmailAddress::parse(&nfc).unwrap();
            let b = EmailAddress::parse(&nfd).unwrap();
            prop_assert_eq!(a.key(), b.key(), "{:?} and {:?}", nfc, nfd);
        }

        #[test]
        fn any_u_label_domain_and_its_a_label_have_one_key(
            (local, domain, _) in one_script_address(),
        ) {
            let ascii = idna::domain_to_ascii(&domain).unwrap();
            let u = EmailAddress::parse(&format!("{local}@{domain}")).unwrap();
            let a = EmailAddress::parse(&format!("{local}@{ascii}")).unwrap();
            prop_assert_eq!(u.key(), a.key(), "{} and {}", domain, ascii);
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
