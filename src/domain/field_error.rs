//! The one error a value type returns when input does not parse.
//!
//! It names the offending field (dotted path such as `user.phone`) so that an
//! `invalid` reply tells the sender exactly what to fix.

use std::fmt;

/// Why a field of a command could not be parsed into a domain value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted path of the field, e.g. `user.phone`.
    pub field: String,
    /// What is wrong, in words a person can act on. Never echoes secrets.
    pub message: String,
}

impl FieldError {
    /// An error about `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The same error seen from an enclosing object: `phone` becomes `user.phone`.
    pub fn within(mut self, parent: &str) -> Self {
        self.field = if self.field.is_empty() {
            parent.to_owned()
        } else {
            format!("{parent}.{}", self.field)
        };
        self
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for FieldError {}

/// True when `s` contains a character that has no place in a single-line
/// value (control characters, including CR and LF: no header injection).
pub fn has_control_chars(s: &str) -> bool {
    s.chars().any(char::is_control)
}
