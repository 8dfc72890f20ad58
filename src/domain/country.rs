//! An ISO 3166-1 alpha-2 country code, such as `NL`.
//!
//! A user's country is stored and exchanged as the two-letter code; it also
//! serves as the default region when a phone number is given without `+`.
//! Only codes that the `isocountry` crate knows as assigned are accepted, so
//! a value that exists always names a real country.

use std::fmt;

use serde::{Serialize, Serializer};

use super::field_error::FieldError;

const FIELD: &str = "country";

/// An assigned ISO 3166-1 alpha-2 country code, stored uppercase.
///
/// The only way to get one is [`CountryCode::parse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CountryCode(isocountry::CountryCode);

impl CountryCode {
    /// Parses a two-letter code in any case (`nl`, `NL`, `Nl`).
    ///
    /// Surrounding whitespace is ignored. Errors name the field `country`.
    pub fn parse(s: &str) -> Result<CountryCode, FieldError> {
        let s = s.trim();
        // Check the shape before asking `isocountry`: its caseless lookup
        // uppercases with Unicode rules, which would turn "ß" into "SS".
        if s.len() != 2 || !s.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(FieldError::new(
                FIELD,
                "must be a two-letter ISO 3166-1 country code, such as NL",
            ));
        }
        let upper = s.to_ascii_uppercase();
        isocountry::CountryCode::for_alpha2(&upper)
            .map(CountryCode)
            .map_err(|_| {
                FieldError::new(
                    FIELD,
                    format!("{upper} is not an assigned ISO 3166-1 country code"),
                )
            })
    }

    /// The uppercase two-letter code, e.g. `"NL"`.
    pub fn as_str(&self) -> &str {
        self.0.alpha2()
    }
}

impl fmt::Display for CountryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for CountryCode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn refused(s: &str) -> FieldError {
        let e = CountryCode::parse(s).unwrap_err();
        assert_eq!(e.field, "country");
        e
    }

    #[test]
    fn uppercase_code_is_accepted() {
        assert_eq!(CountryCode::parse("NL").unwrap().as_str(), "NL");
    }

    #[test]
    fn any_case_is_accepted_and_stored_uppercase() {
        assert_eq!(CountryCode::parse("nl").unwrap().as_str(), "NL");
        assert_eq!(CountryCode::parse("bE").unwrap().as_str(), "BE");
        assert_eq!(CountryCode::parse(" de ").unwrap().to_string(), "DE");
    }

    #[test]
    fn every_assigned_code_is_accepted() {
        for c in isocountry::CountryCode::as_array() {
            assert_eq!(CountryCode::parse(c.alpha2()).unwrap().as_str(), c.alpha2());
        }
    }

    #[test]
    fn unassigned_code_is_refused() {
        assert!(refused("XX").message.contains("XX"));
        refused("zz");
        refused("UK"); // the United Kingdom is GB
    }

    #[test]
    fn wrong_length_is_refused() {
        refused("");
        refused("N");
        refused("NLD");
        refused("Netherlands");
    }

    #[test]
    fn non_letters_are_refused() {
        refused("N1");
        refused("1N");
        refused("N-");
    }

    #[test]
    fn unicode_that_uppercases_to_a_code_is_refused() {
        refused("ß"); // uppercases to "SS" (South Sudan)
        refused("\u{FB06}"); // ligature "st" uppercases to "ST"
        refused("ＮＬ"); // full-width letters
    }

    #[test]
    fn serializes_as_string() {
        let c = CountryCode::parse("nl").unwrap();
        assert_eq!(serde_json::to_string(&c).unwrap(), "\"NL\"");
    }

    proptest! {
        #[test]
        fn any_string_parses_to_a_stable_value_or_is_refused(s in any::<String>()) {
            if let Ok(v) = CountryCode::parse(&s) {
                prop_assert_eq!(CountryCode::parse(v.as_str()), Ok(v));
            }
        }

        #[test]
        fn two_letter_strings_parse_to_a_stable_value_or_are_refused(s in "[a-zA-Z]{2}") {
            match CountryCode::parse(&s) {
                Ok(v) => {
                    prop_assert_eq!(v.as_str(), s.to_ascii_uppercase());
                    prop_assert_eq!(CountryCode::parse(v.as_str()), Ok(v));
                }
                Err(e) => prop_assert_eq!(e.field, "country"),
            }
        }
    }
}
