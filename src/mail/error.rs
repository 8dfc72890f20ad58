//! A failed send, classified for the outbox: retry it or give up.

use thiserror::Error;

/// A failed send.
#[derive(Debug, Error)]
#[error("{detail}")]
pub struct MailError {
    /// True when retrying cannot help (5xx answer, unbuildable message).
    pub permanent: bool,
    /// What went wrong (never the message body).
    pub detail: String,
}

impl MailError {
    /// A failure that retrying cannot fix.
    pub fn permanent(detail: impl Into<String>) -> MailError {
        MailError {
            permanent: true,
            detail: detail.into(),
        }
    }
}
