//! A user's locale, a small subset of BCP 47 such as `nl`, `nl-BE` or `zh-Hant`.
//!
//! The locale picks the email templates (`templates/<locale>/…`, falling back
//! to the language and then to `en`). Only the shapes the portal sends are
//! accepted: a 2–3 letter language, optionally followed by a 2-letter region
//! or a 4-letter script. Casing and separator are normalised (`nl_be` →
//! `nl-BE`, `ZH-hant` → `zh-Hant`) so that one locale has one spelling and can
//! safely name a directory.

use std::fmt;

use serde::{Serialize, Serializer};

use super::field_error::FieldError;

const FIELD: &str = "locale";

/// A normalised locale tag: `ll`, `lll`, `ll-RR` or `ll-Ssss`.
///
/// The only ways to get one are [`Locale::parse`] and [`Locale::default_locale`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Locale(String);

impl Locale {
    /// Parses a tag like `nl`, `nl-BE`, `nl_be` or `zh-Hant`, in any case.
    ///
    /// Surrounding whitespace is ignored. Errors name the field `locale`.
    pub fn parse(s: &str) -> Result<Locale, FieldError> {
        let s = s.trim();
        let refuse = || {
            FieldError::new(
                FIELD,
                "must be a language code optionally followed by a region or script, \
                 such as en, nl-BE or zh-Hant",
            )
        };
        let (language, rest) = match s.split_once(['-', '_']) {
            Some((language, rest)) => (language, Some(rest)),
            None => (s, None),
        };
        if !(2..=3).contains(&language.len()) || !is_ascii_letters(language) {
            return Err(refuse());
        }
        let mut tag = language.to_ascii_lowercase();
        match rest {
            None => {}
            Some(region) if region.len() == 2 && is_ascii_letters(region) => {
                tag.push('-');
                tag.push_str(&region.to_ascii_uppercase());
            }
            Some(script) if script.len() == 4 && is_ascii_letters(script) => {
                let (first, others) = script.split_at(1);
                tag.push('-');
                tag.push_str(&first.to_ascii_uppercase());
                tag.push_str(&others.to_ascii_lowercase());
            }
            Some(_) => return Err(refuse()),
        }
        Ok(Locale(tag))
    }

    /// The locale used when none is given: `en`.
    pub fn default_locale() -> Locale {
        Locale("en".to_owned())
    }

    /// The normalised tag, e.g. `"nl-BE"`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The language part, e.g. `"nl"` for `nl-BE`.
    pub fn language(&self) -> &str {
        self.0.split('-').next().unwrap_or(&self.0)
    }
}

impl Default for Locale {
    /// Same as [`Locale::default_locale`]: `en`.
    fn default() -> Self {
        Locale::default_locale()
    }
}

impl fmt::Display for Locale {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for Locale {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

fn is_ascii_letters(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_alphabetic())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parsed(s: &str) -> String {
        Locale::parse(s).unwrap().as_str().to_owned()
    }

    fn refused(s: &str) {
        let e = Locale::parse(s).unwrap_err();
        assert_eq!(e.field, "locale");
    }

    #[test]
    fn language_only_is_accepted_lowercased() {
        assert_eq!(parsed("nl"), "nl");
        assert_eq!(parsed("EN"), "en");
        assert_eq!(parsed("fil"), "fil");
    }

    #[test]
    fn region_is_uppercased_and_separator_normalised() {
        assert_eq!(parsed("nl-BE"), "nl-BE");
        assert_eq!(parsed("nl_be"), "nl-BE");
        assert_eq!(parsed("NL-be"), "nl-BE");
    }

    #[test]
    fn script_is_titlecased() {
        assert_eq!(parsed("zh-Hant"), "zh-Hant");
        assert_eq!(parsed("ZH_HANT"), "zh-Hant");
        assert_eq!(parsed("sr-latn"), "sr-Latn");
    }

    #[test]
    fn surrounding_whitespace_is_ignored() {
        assert_eq!(parsed(" en "), "en");
    }

    #[test]
    fn language_returns_the_language_part() {
        assert_eq!(Locale::parse("nl-BE").unwrap().language(), "nl");
        assert_eq!(Locale::parse("zh-Hant").unwrap().language(), "zh");
        assert_eq!(Locale::parse("de").unwrap().language(), "de");
    }

    #[test]
    fn default_is_english() {
        assert_eq!(Locale::default_locale().as_str(), "en");
        assert_eq!(Locale::default(), Locale::default_locale());
    }

    #[test]
    fn empty_locale_is_refused() {
        refused("");
        refused("  ");
    }

    #[test]
    fn language_of_wrong_length_is_refused() {
        refused("e");
        refused("engl");
        refused("-BE");
    }

    #[test]
    fn subtag_of_wrong_length_is_refused() {
        refused("nl-");
        refused("nl-B");
        refused("nl-BEL");
        refused("zh-Hantx");
    }

    #[test]
    fn numeric_region_and_extra_subtags_are_refused() {
        refused("es-419");
        refused("zh-Hant-TW");
        refused("nl-BE-x");
        refused("nl--BE");
    }

    #[test]
    fn path_characters_are_refused() {
        refused("../en");
        refused("en/..");
        refused("e.");
    }

    #[test]
    fn non_ascii_letters_are_refused() {
        refused("né");
        refused("ｎｌ");
    }

    #[test]
    fn serializes_as_string() {
        let l = Locale::parse("nl_be").unwrap();
        assert_eq!(serde_json::to_string(&l).unwrap(), "\"nl-BE\"");
        assert_eq!(l.to_string(), "nl-BE");
    }

    fn assert_roundtrip(s: &str) {
        if let Ok(v) = Locale::parse(s) {
            assert_eq!(Locale::parse(v.as_str()), Ok(v));
        }
    }

    proptest! {
        #[test]
        fn any_string_parses_to_a_stable_value_or_is_refused(s in any::<String>()) {
            assert_roundtrip(&s);
        }

        #[test]
        fn tag_like_strings_parse_to_a_stable_value_or_are_refused(
            s in "[a-zA-Z]{1,4}([-_][a-zA-Z0-9]{0,5})?"
        ) {
            assert_roundtrip(&s);
        }
    }
}
