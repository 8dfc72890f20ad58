//! Issuing and redeeming one-time tokens inside a command's transaction.

use chrono::{DateTime, Utc};

use super::{Ctx, Fail, HandleError};
use crate::domain::ids::UserId;
use crate::domain::reply::{Reason, Rejection};
use crate::domain::token::{self, SecretToken, TokenHash, TokenPurpose};
use crate::store::{Tx, tokens};

/// Issues a fresh token of `purpose` for `user`, revoking earlier ones.
pub(super) async fn issue_token(
    tx: &mut Tx<'_>,
    user: UserId,
    purpose: TokenPurpose,
    issued_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
) -> Result<SecretToken, Fail> {
    tokens::revoke_all(tx, user, Some(purpose)).await?;
    let secret = new_secret()?;
    tokens::insert(tx, &secret.hash(), user, purpose, issued_at, expires_at).await?;
    Ok(secret)
}

/// A fresh secret from the OS generator (a new user's first token is
/// stored with the user, see `users::insert_invited`).
pub(super) fn new_secret() -> Result<SecretToken, Fail> {
    SecretToken::generate().map_err(|e| Fail::Error(HandleError::Random(e.to_string())))
}

/// Redeems `token` for `purpose`: the token must exist, be of that purpose,
/// unused, unrevoked and unexpired (checked at use, sweep or no sweep). Marks
/// nothing; returns the owner and the hash for `tokens::mark_used`.
pub(super) async fn redeem(
    tx: &mut Tx<'_>,
    ctx: &Ctx,
    token: Option<SecretToken>,
    purpose: TokenPurpose,
) -> Result<(UserId, TokenHash), Fail> {
    let what = match purpose {
        TokenPurpose::Activation => "activation",
        TokenPurpose::PasswordReset => "password reset",
    };
    let refuse = |reason| Rejection::new(reason, message(reason, what));
    let token = token.ok_or_else(|| refuse(Reason::TokenInvalid))?;
    let hash = token.hash();
    let found = tokens::lock_by_hash(tx, &hash).await?;
    token::check_redeemable(found.as_ref().map(|(_, r)| r), purpose, ctx.now).map_err(refuse)?;
    match found {
        Some((user_id, _)) => Ok((user_id, hash)),
        None => Err(refuse(Reason::TokenInvalid).into()),
    }
}

/// A person-readable message for a refused token.
fn message(reason: Reason, what: &str) -> String {
    match reason {
        Reason::TokenExpired => format!("this {what} link has expired"),
        Reason::TokenUsed => format!("this {what} link was used already"),
        _ => format!("this {what} link is not valid"),
    }
}
