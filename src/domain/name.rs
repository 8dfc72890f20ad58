//! A person's first or last name, as the person spells it.
//!
//! Names appear in emails and in the portal, so they are kept exactly as
//! typed apart from surrounding whitespace: no case changes and no collapsing
//! of inner spaces, since names are too varied for rules beyond that. Control
//! characters are refused (they have no place in a name and could break mail
//! headers), and so are format characters and line separators (a name with
//! a right-to-left override displays as something it is not, in a subject
//! or a greeting); the length is capped. A group user, such as a distribution
//! list, may have an empty last name; the caller says when empty is allowed.

use std::fmt;

use serde::{Serialize, Serializer};

use super::field_error::{FieldError, has_control_chars};
use super::format_chars::has_hidden_chars;

/// Longest name, in characters (Unicode scalar values).
const MAX_CHARS: usize = 100;

/// Why a name with a format character or a line separator is refused.
pub const HIDDEN_CHARS: &str = "must not contain invisible formatting characters (bidirectional controls, zero-width characters, line or paragraph separators)";

/// A trimmed name of at most 100 characters without control characters,
/// format characters or line separators.
///
/// The only way to get one is [`PersonName::parse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersonName(String);

impl PersonName {
    /// Parses a name for `field` (e.g. `"first_name"`), which names the field
    /// in errors; empty (after trimming) is accepted only when `allow_empty`.
    pub fn parse(s: &str, field: &str, allow_empty: bool) -> Result<PersonName, FieldError> {
        // Looked for before trimming: a line separator is whitespace, and a
        // name that came with one is refused wherever it sits.
        let hidden = has_hidden_chars(s);
        let s = s.trim();
        if s.is_empty() && !allow_empty {
            return Err(FieldError::new(field, "must not be empty"));
        }
        if s.chars().nth(MAX_CHARS).is_some() {
            return Err(FieldError::new(
                field,
                format!("is too long: at most {MAX_CHARS} characters are allowed"),
            ));
        }
        if has_control_chars(s) {
            return Err(FieldError::new(
                field,
                "must not contain line breaks, tabs or other control characters",
            ));
        }
        if hidden {
            return Err(FieldError::new(field, HIDDEN_CHARS));
        }
        Ok(PersonName(s.to_owned()))
    }

    /// The name as stored (trimmed), possibly empty when that was allowed.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PersonName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for PersonName {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

/// How a user is named to people (greetings, the inviter in an email, a
/// recipient's display name): `First Last`, or the first name alone when
/// there is no last name (a group mailbox).
pub fn display_name(first_name: &str, last_name: &str) -> String {
    if last_name.is_empty() {
        first_name.to_owned()
    } else {
        format!("{first_name} {last_name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_display_name_has_the_last_name_only_when_there_is_one() {
        assert_eq!(display_name("Ann", "de Vries"), "Ann de Vries");
        assert_eq!(display_name("Support desk", ""), "Support desk");
    }
    use proptest::prelude::*;

    /// Characters no name may hold, listed here apart from the rule's own
    /// table: bidi controls, zero-width and other format characters, line
    /// and paragraph separators.
    const HIDDEN: &[char] = &[
        '\u{202A}',
        '\u{202B}',
        '\u{202C}',
        '\u{202D}',
        '\u{202E}',
        '\u{2066}',
        '\u{2067}',
        '\u{2068}',
        '\u{2069}',
        '\u{2028}',
        '\u{2029}',
        '\u{200B}',
        '\u{200C}',
        '\u{200D}',
        '\u{200E}',
        '\u{200F}',
        '\u{2060}',
        '\u{2061}',
        '\u{2062}',
        '\u{2063}',
        '\u{2064}',
        '\u{FEFF}',
        '\u{00AD}',
        '\u{061C}',
        '\u{180E}',
        '\u{E0041}',
    ];

    fn refused(s: &str, allow_empty: bool) -> FieldError {
        let e = PersonName::parse(s, "first_name", allow_empty).unwrap_err();
        assert_eq!(e.field, "first_name");
        e
    }

    #[test]
    fn plain_name_is_accepted() {
        let n = PersonName::parse("Jane", "first_name", false).unwrap();
        assert_eq!(n.as_str(), "Jane");
        assert_eq!(n.to_string(), "Jane");
    }

    #[test]
    fn surrounding_whitespace_is_trimmed_and_inner_kept() {
        let n = PersonName::parse("  van  der Berg \t", "last_name", false).unwrap();
        assert_eq!(n.as_str(), "van  der Berg");
    }

    #[test]
    fn unicode_names_are_accepted() {
        assert!(PersonName::parse("Zoë O'Brien-Łukasiewicz", "last_name", false).is_ok());
        assert!(PersonName::parse("山田 太郎", "first_name", false).is_ok());
        assert!(PersonName::parse("क्ष", "first_name", false).is_ok());
    }

    #[test]
    fn a_right_to_left_override_is_refused() {
        let e = refused("Ann\u{202E}gnp.exe", false);
        assert_eq!(e.message, HIDDEN_CHARS);
    }

    #[test]
    fn zero_width_and_separator_chars_are_refused() {
        // A zero-width joiner is invisible too: in a name shown in mail it
        // can only hide something, so it goes with the other format chars.
        refused("क्\u{200D}ष", false);
        refused("Ann\u{200B}", false);
        refused("\u{FEFF}Ann", false);
        refused("An\u{00AD}n", false);
        refused("Ann\u{2028}Smith", false);
        refused("Ann\u{2029}", true);
    }

    #[test]
    fn every_format_char_is_refused() {
        let hidden = (0..=0x10FFFF_u32)
            .filter_map(char::from_u32)
            .filter(|c| crate::domain::format_chars::is_format_char(*c));
        for c in hidden {
            refused(&format!("A{c}n"), true);
        }
    }

    #[test]
    fn empty_name_is_refused_unless_allowed() {
        assert!(refused("", false).message.contains("empty"));
        refused("   ", false);
        assert_eq!(
            PersonName::parse("  ", "last_name", true).unwrap().as_str(),
            ""
        );
    }

    #[test]
    fn error_names_the_given_field() {
        let e = PersonName::parse("", "last_name", false).unwrap_err();
        assert_eq!(e.field, "last_name");
    }

    #[test]
    fn name_of_100_chars_is_accepted() {
        assert!(PersonName::parse(&"é".repeat(100), "first_name", false).is_ok());
    }

    #[test]
    fn name_longer_than_100_chars_is_refused() {
        assert!(refused(&"é".repeat(101), false).message.contains("100"));
        refused(&"a".repeat(1_000_000), true);
    }

    #[test]
    fn control_chars_are_refused() {
        refused("Jane\nDoe", false);
        refused("Jane\tDoe", false);
        refused("Jane\u{0}", false);
        refused("Jane\u{7F}", false);
        refused("Jane\u{85}Doe", false);
    }

    #[test]
    fn serializes_as_string() {
        let n = PersonName::parse("Jane", "first_name", false).unwrap();
        assert_eq!(serde_json::to_string(&n).unwrap(), "\"Jane\"");
    }

    proptest! {
        #[test]
        fn any_string_parses_to_a_stable_value_or_is_refused(
            s in any::<String>(),
            allow_empty in any::<bool>(),
        ) {
            if let Ok(v) = PersonName::parse(&s, "first_name", allow_empty) {
                prop_assert_eq!(PersonName::parse(v.as_str(), "first_name", allow_empty), Ok(v));
            }
        }

        #[test]
        fn any_name_with_a_hidden_char_is_refused_naming_the_field(
            before in "\\PC{0,40}",
            hidden in proptest::sample::select(HIDDEN),
            after in "\\PC{0,40}",
            field in proptest::sample::select(&["first_name", "last_name", "user.first_name", "manager.last_name"][..]),
            allow_empty in any::<bool>(),
        ) {
            let name = format!("{before}{hidden}{after}");
            let e = PersonName::parse(&name, field, allow_empty).unwrap_err();
            prop_assert_eq!(e.field, field);
        }

        #[test]
        fn printable_names_up_to_100_chars_are_accepted(s in "[^\\p{C}\\p{Zl}\\p{Zp}]{1,100}") {
            let trimmed = s.trim();
            let parsed = PersonName::parse(&s, "first_name", false);
            if trimmed.is_empty() {
                prop_assert!(parsed.is_err());
            } else {
                let parsed = parsed.unwrap();
                prop_assert_eq!(parsed.as_str(), trimmed);
            }
        }
    }
}
