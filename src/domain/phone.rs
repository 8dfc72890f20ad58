//! A phone number in E.164 form, such as `+31201234567`.
//!
//! People type phone numbers in many ways (`020 123 4567`, `+31 (0)20-1234567`).
//! The contract stores and exchanges them as E.164, so parsing normalises
//! them with the `phonenumber` crate (libphonenumber's metadata) and keeps
//! only numbers that are *valid* for their region, not merely well-formed.
//! A number without a leading `+` is read in the user's country.
//!
//! Input is kept to a small alphabet (digits, spaces and `+ - . ( ) /`) and
//! at most 64 characters before it reaches the parser: that refuses
//! extensions, letters and `tel:` URIs, which E.164 cannot carry anyway, and
//! keeps odd input away from a third-party parser.

use std::fmt;

use serde::{Serialize, Serializer};

use super::country::CountryCode;
use super::field_error::{FieldError, has_control_chars};

const FIELD: &str = "phone";
/// Longest input, in characters, handed to the parser.
const MAX_INPUT: usize = 64;

/// A valid phone number, stored in E.164 form (`+` and digits only).
///
/// The only way to get one is [`PhoneNumber::parse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhoneNumber(String);

impl PhoneNumber {
    /// Parses a phone number; one without a leading `+` is read as a number
    /// of `country`, and is refused when there is no country.
    ///
    /// Surrounding whitespace is ignored. Errors name the field `phone`.
    pub fn parse(s: &str, country: Option<CountryCode>) -> Result<PhoneNumber, FieldError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(invalid("must not be empty"));
        }
        if s.chars().nth(MAX_INPUT).is_some() {
            return Err(invalid(format!(
                "is too long: at most {MAX_INPUT} characters are allowed"
            )));
        }
        if has_control_chars(s) {
            return Err(invalid(
                "must not contain line breaks or other control characters",
            ));
        }
        if !s.chars().all(is_allowed_char) {
            return Err(invalid(
                "may contain only digits, spaces and + - . ( ) /, \
                 without an extension",
            ));
        }
        if !s.chars().any(|c| c.is_ascii_digit()) {
            return Err(invalid("must contain digits"));
        }
        let international = s.starts_with('+');
        if s.strip_prefix('+').unwrap_or(s).contains('+') {
            return Err(invalid("may contain a + only at the start"));
        }
        let region = if international {
            None
        } else {
            let Some(country) = country else {
                return Err(invalid(
                    "must start with + and the country calling code (as in +31...) \
                     when no country is given",
                ));
            };
            match country.as_str().parse::<phonenumber::country::Id>() {
                Ok(id) => Some(id),
                Err(_) => {
                    return Err(invalid(format!(
                        "must start with + and the country calling code: \
                         numbers of {country} cannot be read without it"
                    )));
                }
            }
        };
        let number = phonenumber::parse(region, s).map_err(|_| {
            invalid(match country {
                Some(c) if !international => {
                    format!("is not a phone number that can be read as a number of {c}")
                }
                _ => "is not a phone number that can be read".to_owned(),
            })
        })?;
        if !phonenumber::is_valid(&number) {
            return Err(invalid(match country {
                Some(c) if !international => {
                    format!(
                        "is not a valid phone number for {c}; check the digits or add + and the country calling code"
                    )
                }
                _ => "is not a valid phone number; check the country calling code and the digits"
                    .to_owned(),
            }));
        }
        let e164 = number.format().mode(phonenumber::Mode::E164).to_string();
        Ok(PhoneNumber(e164))
    }

    /// The number in E.164 form, e.g. `"+31201234567"`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for PhoneNumber {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

fn invalid(message: impl Into<String>) -> FieldError {
    FieldError::new(FIELD, message)
}

fn is_allowed_char(c: char) -> bool {
    c.is_ascii_digit() || matches!(c, ' ' | '+' | '-' | '.' | '(' | ')' | '/')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn nl() -> Option<CountryCode> {
        Some(CountryCode::parse("NL").unwrap())
    }

    fn refused(s: &str, country: Option<CountryCode>) -> FieldError {
        match PhoneNumber::parse(s, country) {
            Ok(v) => panic!("expected {s:?} to be refused, got {v:?}"),
            Err(e) => {
                assert_eq!(e.field, "phone");
                e
            }
        }
    }

    #[test]
    fn international_number_is_stored_as_e164() {
        let p = PhoneNumber::parse("+31 20 123 4567", None).unwrap();
        assert_eq!(p.as_str(), "+31201234567");
        assert_eq!(p.to_string(), "+31201234567");
    }

    #[test]
    fn national_number_uses_the_country_as_default_region() {
        assert_eq!(
            PhoneNumber::parse("020-123 4567", nl()).unwrap().as_str(),
            "+31201234567"
        );
        assert_eq!(
            PhoneNumber::parse("(06) 12345678", nl()).unwrap().as_str(),
            "+31612345678"
        );
    }

    #[test]
    fn leading_plus_wins_over_the_country() {
        let be = Some(CountryCode::parse("BE").unwrap());
        assert_eq!(
            PhoneNumber::parse("+31201234567", be).unwrap().as_str(),
            "+31201234567"
        );
    }

    #[test]
    fn national_number_without_country_is_refused() {
        assert!(refused("020 123 4567", None).message.contains('+'));
    }

    #[test]
    fn invalid_number_for_region_is_refused() {
        refused("+31 12", None);
        refused("+31 20 123", None);
        refused("0000000000", nl());
        refused("+999 123456789", None);
    }

    #[test]
    fn empty_number_is_refused() {
        refused("", nl());
        refused("   ", nl());
    }

    #[test]
    fn number_longer_than_64_chars_is_refused() {
        let long = format!("+31201234567{}", " ".repeat(60));
        let long = format!("{long}1");
        assert!(refused(&long, None).message.contains("64"));
        refused(&"1".repeat(1_000_000), nl());
    }

    #[test]
    fn control_chars_are_refused() {
        assert!(refused("+3120\n1234567", None).message.contains("control"));
        refused("+3120\r\n1234567", None);
        refused("+31\u{0}201234567", None);
    }

    #[test]
    fn letters_and_extensions_are_refused() {
        refused("+31 20 123 4567 ext. 12", None);
        refused("tel:+31-20-123-4567", None);
        refused("+1 800 FLOWERS", None);
    }

    #[test]
    fn non_ascii_digits_are_refused() {
        refused("+３１２０１２３４５６７", None);
    }

    #[test]
    fn misplaced_plus_is_refused() {
        refused("31+201234567", nl());
        refused("++31201234567", None);
    }

    #[test]
    fn no_digits_is_refused() {
        refused("+", None);
        refused("(-)", nl());
    }

    #[test]
    fn serializes_as_string() {
        let p = PhoneNumber::parse("+31 20 123 4567", None).unwrap();
        assert_eq!(serde_json::to_string(&p).unwrap(), "\"+31201234567\"");
    }

    fn assert_roundtrip(s: &str, country: Option<CountryCode>) {
        if let Ok(v) = PhoneNumber::parse(s, country) {
            assert_eq!(PhoneNumber::parse(v.as_str(), None), Ok(v.clone()));
            assert_eq!(PhoneNumber::parse(v.as_str(), country), Ok(v));
        }
    }

    fn any_country() -> impl Strategy<Value = Option<CountryCode>> {
        prop_oneof![
            Just(None),
            "[A-Z]{2}".prop_map(|s| CountryCode::parse(&s).ok()),
        ]
    }

    proptest! {
        #[test]
        fn any_string_parses_to_a_stable_value_or_is_refused(
            s in any::<String>(),
            country in any_country(),
        ) {
            assert_roundtrip(&s, country);
        }

        #[test]
        fn phone_like_strings_parse_to_a_stable_value_or_are_refused(
            s in r"\+?[0-9 ()./+-]{0,20}",
            country in any_country(),
        ) {
            assert_roundtrip(&s, country);
        }

        #[test]
        fn dutch_mobile_numbers_are_accepted(rest in "[1-5][0-9]{7}") {
            let p = PhoneNumber::parse(&format!("06{rest}"), nl()).unwrap();
            prop_assert_eq!(p.as_str(), format!("+316{rest}"));
        }
    }
}
