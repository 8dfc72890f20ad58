//! What a row looked like when it was read, so that a later statement can
//! check it still does.
//!
//! An invite batch written as one statement (`handler::one_statement`)
//! relies on an actor and an organization read by an earlier transaction;
//! the statement writes only if their fingerprints still match, computed
//! by the database the same way both times.

/// The database's digest of what a row (or a set of rows) said when read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint(String);

impl Fingerprint {
    /// The digest as the database computed it.
    pub(super) fn from_db(digest: String) -> Fingerprint {
        Fingerprint(digest)
    }

    /// The digest, to bind as a parameter.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The fingerprint of a `users` row aliased `$alias`: every column, so any
/// change to the row (role, status, permissions, names) changes it.
macro_rules! user_fingerprint {
    ($alias:literal) => {
        concat!("md5(", $alias, "::text)")
    };
}
pub(super) use user_fingerprint;
