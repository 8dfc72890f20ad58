//! Password reset: request a link (active users only), redeem it.

use serde_json::json;

use super::participants::load_target;
use super::tokens::{issue_token, redeem as redeem_token};
use super::{Ctx, Effects, HandlerSettings, Outcome, email_time};
use crate::domain::email::EmailAddress;
use crate::domain::event::EventType;
use crate::domain::mail_cap;
use crate::domain::notification::{EmailJob, Template};
use crate::domain::reply::{Reason, Rejection};
use crate::domain::token::{SecretToken, TokenPurpose};
use crate::domain::user;
use crate::store::audit::AuditEntry;
use crate::store::{Tx, tokens, users};

/// `request_password_reset`: an inactive user is refused `not_activated`
/// and gets no email; the refusal is still published as an event.
pub(super) async fn request(
    tx: &mut Tx<'_>,
    ctx: &Ctx,
    settings: &HandlerSettings,
    email: &EmailAddress,
    fx: &mut Effects,
) -> Outcome {
    let found = match &ctx.read.address {
        Some((read, true)) => read.as_deref().cloned(),
        _ => users::lock_by_email(tx, email).await?,
    };
    let target =
        found.ok_or_else(|| Rejection::new(Reason::NotFound, "no user with this email address"))?;
    let user_id = target.snapshot.id;
    super::participants::note_user(user_id);
    let last = tokens::last_issued_at(tx, user_id, TokenPurpose::PasswordReset).await?;
    if let Err(rejection) = user::check_password_resettable(
        target.snapshot.status,
        last,
        ctx.now,
        settings.resend_cooldown,
    ) {
        if rejection.reason == Reason::NotActivated {
            fx.event_on_rejection(
                EventType::UserPasswordResetBlocked,
                user_id,
                json!({
                    "user_id": user_id,
                    "organization_id": target.snapshot.organization_id,
                    "status": target.snapshot.status,
                    "reason": "not_activated",
                }),
            );
        }
        return Err(rejection.into());
    }
    let issued = tokens::issued_since(tx, user_id, ctx.now - mail_cap::window()).await?;
    mail_cap::check_mail_cap(&issued, ctx.now, settings.mail_cap_per_day)?;
    let expires_at = ctx.now + settings.password_reset_ttl;
    let token = issue_token(
        tx,
        user_id,
        TokenPurpose::PasswordReset,
        ctx.now,
        expires_at,
    )
    .await?;
    fx.audit(AuditEntry {
        command_id: Some(&ctx.command_id),
        actor_id: None,
        user_id: Some(user_id.as_uuid()),
        organization_id: target.snapshot.organization_id.as_str(),
        action: "user.password_reset_requested",
        before: None,
        after: Some(json!({"expires_at": expires_at})),
    });
    fx.event(
        EventType::UserPasswordResetRequested,
        user_id,
        json!({
            "user_id": user_id,
            "organization_id": target.snapshot.organization_id,
            "expires_at": expires_at,
        }),
    );
    fx.email(EmailJob {
        template: Template::PasswordReset,
        locale: target.locale.clone(),
        to: target.snapshot.email.as_str().to_owned(),
        to_name: target.display_name(),
        vars: json!({"first_name": target.first_name, "expires_at": email_time(expires_at)}),
        token: Some(token.expose().to_owned()),
        user_id: Some(user_id.to_string()),
    });
    Ok(json!({"user_id": user_id, "expires_at": expires_at}))
}

/// `redeem_password_reset`: consumes the token; the portal then sets the password.
pub(super) async fn redeem(
    tx: &mut Tx<'_>,
    ctx: &Ctx,
    token: Option<SecretToken>,
    fx: &mut Effects,
) -> Outcome {
    let (user_id, hash) = redeem_token(tx, ctx, token, TokenPurpose::PasswordReset).await?;
    let target = load_target(tx, user_id).await?;
    user::check_reset_redeemable(target.snapshot.status)?;
    tokens::mark_used(tx, &hash, ctx.now).await?;
    fx.audit(AuditEntry {
        command_id: Some(&ctx.command_id),
        actor_id: None,
        user_id: Some(user_id.as_uuid()),
        organization_id: target.snapshot.organization_id.as_str(),
        action: "user.password_reset_redeemed",
        before: None,
        after: None,
    });
    Ok(json!({"user_id": user_id, "email": target.snapshot.email}))
}
