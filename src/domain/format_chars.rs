//! Characters that are not seen but change what is seen.
//!
//! Unicode's format characters (general category Cf: zero-width spaces and
//! joiners, bidirectional controls such as the right-to-left override, the
//! byte order mark, the soft hyphen, tag characters) render as nothing or
//! reorder the text around them, so a value holding one can display as
//! something it is not: `Ann\u{202E}gnp.exe` shows as `Annexe.png`. Line and
//! paragraph separators (U+2028, U+2029) break a line that was meant to be
//! one. Values shown to people (names, email addresses) refuse them; the
//! definition lives here once for all of them.

/// True for a character of Unicode general category Cf (format): the whole
/// list the Unicode Character Database gives.
pub fn is_format_char(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{0600}'..='\u{0605}'
            | '\u{061C}'
            | '\u{06DD}'
            | '\u{070F}'
            | '\u{0890}'..='\u{0891}'
            | '\u{08E2}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206F}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}'
            | '\u{110BD}'
            | '\u{110CD}'
            | '\u{13430}'..='\u{1343F}'
            | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0001}'
            | '\u{E0020}'..='\u{E007F}'
    )
}

/// True for the line separator (U+2028) and the paragraph separator (U+2029).
pub fn is_line_or_paragraph_separator(c: char) -> bool {
    matches!(c, '\u{2028}' | '\u{2029}')
}

/// True when `s` holds a format character or a line or paragraph
/// separator: text that may not read as it displays.
pub fn has_hidden_chars(s: &str) -> bool {
    s.chars()
        .any(|c| is_format_char(c) || is_line_or_paragraph_separator(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bidi_controls_are_format_chars() {
        for c in ('\u{202A}'..='\u{202E}').chain('\u{2066}'..='\u{2069}') {
            assert!(is_format_char(c), "{:X}", c as u32);
        }
        assert!(is_format_char('\u{200E}'));
        assert!(is_format_char('\u{200F}'));
        assert!(is_format_char('\u{061C}'));
    }

    #[test]
    fn zero_width_and_other_invisible_chars_are_format_chars() {
        for c in ['\u{200B}', '\u{200C}', '\u{200D}', '\u{2060}', '\u{2064}'] {
            assert!(is_format_char(c), "{:X}", c as u32);
        }
        assert!(is_format_char('\u{FEFF}'));
        assert!(is_format_char('\u{00AD}'));
        assert!(is_format_char('\u{E0041}'));
    }

    #[test]
    fn letters_spaces_and_separators_are_not_format_chars() {
        for c in ['a', 'é', 'ß', '山', ' ', '\u{00A0}', '-', '\'', '\u{2028}'] {
            assert!(!is_format_char(c), "{:X}", c as u32);
        }
    }

    #[test]
    fn line_and_paragraph_separators_are_hidden() {
        assert!(has_hidden_chars("Ann\u{2028}Smith"));
        assert!(has_hidden_chars("Ann\u{2029}"));
        assert!(!has_hidden_chars("Ann Smith"));
    }

    #[test]
    fn a_right_to_left_override_is_hidden() {
        assert!(has_hidden_chars("Ann\u{202E}gnp.exe"));
    }
}
