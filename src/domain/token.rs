//! One-time tokens for activation and password reset.
//!
//! A token is 256 bits from the operating system's CSPRNG, handed out once
//! (in an email link) and stored only as its SHA-256 hash, so a database leak
//! reveals no usable token. The state rules (used, revoked, expired) live here.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use std::fmt;

use super::reply::Reason;

/// Number of random bytes in a token (256 bits).
const TOKEN_BYTES: usize = 32;

/// What a token is for; a token of one purpose never redeems the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenPurpose {
    /// Activates an invited user.
    Activation,
    /// Lets an active user set a new password.
    PasswordReset,
}

impl TokenPurpose {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenPurpose::Activation => "activation",
            TokenPurpose::PasswordReset => "password_reset",
        }
    }
}

/// A token in clear: exists only between issuing and the email that carries it,
/// and between a public command and its hash look-up. Debug never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretToken(String);

impl SecretToken {
    /// A fresh random token from the OS CSPRNG.
    pub fn generate() -> Result<SecretToken, getrandom::Error> {
        let mut bytes = [0u8; TOKEN_BYTES];
        getrandom::fill(&mut bytes)?;
        Ok(SecretToken(URL_SAFE_NO_PAD.encode(bytes)))
    }

    /// A token as presented by a user. `None` when it cannot be one of ours
    /// (wrong length or alphabet): such a token is simply invalid.
    pub fn parse(s: &str) -> Option<SecretToken> {
        let decoded = URL_SAFE_NO_PAD.decode(s.trim()).ok()?;
        (decoded.len() == TOKEN_BYTES).then(|| SecretToken(s.trim().to_owned()))
    }

    /// The text that goes into the link.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The hash stored and looked up instead of the token.
    pub fn hash(&self) -> TokenHash {
        TokenHash(Sha256::digest(self.0.as_bytes()).into())
    }
}

impl fmt::Debug for SecretToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretToken(<redacted>)")
    }
}

/// SHA-256 of a token: the only form in which a token is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenHash(pub [u8; 32]);

impl TokenHash {
    /// The raw bytes, for the database.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// What the store knows about a token found by its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    /// What the token is for.
    pub purpose: TokenPurpose,
    /// When it stops working.
    pub expires_at: DateTime<Utc>,
    /// Set once it has been redeemed.
    pub used_at: Option<DateTime<Utc>>,
    /// Set when a newer token replaced it or its user was removed.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Decides whether a presented token may be redeemed for `purpose` at `now`.
///
/// Order matters: a used token says `token_used` even after it expired, so a
/// user who clicks twice learns they already succeeded. Checked at use, so an
/// expired token is refused whether or not the expiry sweep has run.
pub fn check_redeemable(
    record: Option<&TokenRecord>,
    purpose: TokenPurpose,
    now: DateTime<Utc>,
) -> Result<(), Reason> {
    let Some(record) = record else {
        return Err(Reason::TokenInvalid);
    };
    if record.purpose != purpose || record.revoked_at.is_some() {
        return Err(Reason::TokenInvalid);
    }
    if record.used_at.is_some() {
        return Err(Reason::TokenUsed);
    }
    if record.expires_at <= now {
        return Err(Reason::TokenExpired);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn record(purpose: TokenPurpose, expires_in: i64) -> TokenRecord {
        TokenRecord {
            purpose,
            expires_at: Utc::now() + Duration::seconds(expires_in),
            used_at: None,
            revoked_at: None,
        }
    }

    #[test]
    fn generated_tokens_are_256_bits_and_distinct() {
        let a = SecretToken::generate().unwrap();
        let b = SecretToken::generate().unwrap();
        assert_ne!(a, b);
        assert_eq!(URL_SAFE_NO_PAD.decode(a.expose()).unwrap().len(), 32);
        assert_eq!(SecretToken::parse(a.expose()), Some(a.clone()));
    }

    #[test]
    fn only_the_hash_is_comparable_and_debug_hides_the_token() {
        let t = SecretToken::generate().unwrap();
        assert_eq!(t.hash(), SecretToken::parse(t.expose()).unwrap().hash());
        assert!(!format!("{t:?}").contains(t.expose()));
    }

    #[test]
    fn malformed_tokens_do_not_parse() {
        assert_eq!(SecretToken::parse(""), None);
        assert_eq!(SecretToken::parse("abc"), None);
        assert_eq!(SecretToken::parse(&"A".repeat(44)), None);
        assert_eq!(SecretToken::parse("!!!!"), None);
    }

    #[test]
    fn unknown_token_is_invalid() {
        assert_eq!(
            check_redeemable(None, TokenPurpose::Activation, Utc::now()),
            Err(Reason::TokenInvalid)
        );
    }

    #[test]
    fn token_of_other_purpose_is_invalid() {
        let r = record(TokenPurpose::PasswordReset, 60);
        assert_eq!(
            check_redeemable(Some(&r), TokenPurpose::Activation, Utc::now()),
            Err(Reason::TokenInvalid)
        );
    }

    #[test]
    fn revoked_token_is_invalid() {
        let mut r = record(TokenPurpose::Activation, 60);
        r.revoked_at = Some(Utc::now());
        assert_eq!(
            check_redeemable(Some(&r), TokenPurpose::Activation, Utc::now()),
            Err(Reason::TokenInvalid)
        );
    }

    #[test]
    fn used_token_is_used_even_when_also_expired() {
        let mut r = record(TokenPurpose::Activation, -60);
        r.used_at = Some(Utc::now());
        assert_eq!(
            check_redeemable(Some(&r), TokenPurpose::Activation, Utc::now()),
            Err(Reason::TokenUsed)
        );
    }

    #[test]
    fn token_past_expiry_is_expired_at_use() {
        let r = record(TokenPurpose::Activation, -1);
        assert_eq!(
            check_redeemable(Some(&r), TokenPurpose::Activation, Utc::now()),
            Err(Reason::TokenExpired)
        );
    }

    #[test]
    fn live_token_is_redeemable() {
        let r = record(TokenPurpose::Activation, 60);
        assert_eq!(
            check_redeemable(Some(&r), TokenPurpose::Activation, Utc::now()),
            Ok(())
        );
    }
}
