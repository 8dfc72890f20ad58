//! Password reset: only an active user gets a link; the link is single use,
//! expires, and is no activation token.

use crate::helpers::{TestWorker, user_id};
use serde_json::json;
use std::time::Duration;

const PORTAL_RESET: &str = "https://portal.example.com/reset-password?token=";

/// Requests a reset for an active user, waits for its email (the `nth`, 1-based, to
/// that address) and returns the token.
async fn reset_token(w: &mut TestWorker, email: &str, nth: usize) -> String {
    let reply = w.request_password_reset(email).await;
    assert_eq!(reply["status"], "applied", "{reply}");
    assert_eq!(reply["code"], "ok", "{reply}");
    let mails = w.smtp.wait_for(email, nth, crate::helpers::WAIT).await;
    mails[nth - 1].token("/reset-password")
}

#[tokio::test]
async fn an_invited_user_is_refused_not_activated_gets_no_email_and_the_refusal_is_published() {
    let mut w = TestWorker::start().await;
    let manager = w.onboard_active_manager("acme", "boss@acme.example").await;
    let invited = user_id(&w.invite(&manager, "acme", "ivo@acme.example").await);
    w.smtp.mail_to("ivo@acme.example").await;

    let refused = w.request_password_reset("ivo@acme.example").await;
    assert_eq!(refused["status"], "rejected", "{refused}");
    assert_eq!(refused["code"], "not_activated", "{refused}");
    assert!(
        !refused["message"].as_str().unwrap_or_default().is_empty(),
        "says why in words: {refused}"
    );

    let blocked = w.event("user.password_reset_blocked", Some(&invited)).await;
    assert_eq!(blocked["source"], "user-lifecycle");
    assert_eq!(blocked["data"]["organization_id"], "acme", "{blocked}");
    assert!(
        !blocked.to_string().contains("token"),
        "no event carries a token: {blocked}"
    );
    // Any event of the refused request has arrived past the barrier.
    w.events_barrier(&manager, "acme").await;
    assert!(
        w.events_of("user.password_reset_requested")
            .await
            .is_empty()
    );

    // A reset requested afterwards has arrived, so a reset email to ivo would have too.
    reset_token(&mut w, "boss@acme.example", 2).await;
    assert_eq!(
        w.smtp.count_to("ivo@acme.example"),
        1,
        "only the activation email"
    );
}

#[tokio::test]
async fn an_expired_user_is_refused_not_activated_too() {
    let (mut w, manager) = TestWorker::with_active_manager(&[
        ("ACTIVATION_TTL", "2s"),
        ("EXPIRY_SCHEDULE", "* * * * * *"),
    ])
    .await;
    let invited = user_id(&w.invite(&manager, "acme", "ivo@acme.example").await);
    w.smtp.mail_to("ivo@acme.example").await;
    w.event("user.invite_expired", Some(&invited)).await;
    // The expiry notice (its own row, sent apart from the event) is in
    // before the reset is requested, so the reset email is the third.
    w.smtp
        .wait_for("boss@acme.example", 2, crate::helpers::WAIT)
        .await;

    let refused = w.request_password_reset("ivo@acme.example").await;
    assert_eq!(refused["status"], "rejected", "{refused}");
    assert_eq!(refused["code"], "not_activated", "{refused}");
    w.event("user.password_reset_blocked", Some(&invited)).await;

    // The manager's mail: activation, the expiry notice, then this reset.
    reset_token(&mut w, "boss@acme.example", 3).await;
    assert_eq!(
        w.smtp.count_to("ivo@acme.example"),
        1,
        "only the activation email"
    );
}

#[tokio::test]
async fn an_active_user_gets_a_reset_link_that_redeems_once() {
    let mut w = TestWorker::start().await;
    let manager = w.onboard_active_manager("acme", "boss@acme.example").await;
    let ana = w.active_user(&manager, "acme", "ana@acme.example").await;

    let reply = w.request_password_reset("ana@acme.example").await;
    assert_eq!(reply["status"], "applied", "{reply}");
    assert_eq!(reply["duplicate"], false);

    let mails = w
        .smtp
        .wait_for("ana@acme.example", 2, crate::helpers::WAIT)
        .await;
    let mail = &mails[1];
    assert!(mail.is_multipart_alternative());
    assert_eq!(
        mail.header("Auto-Submitted").as_deref(),
        Some("auto-generated")
    );
    assert!(!mail.message_id().is_empty());
    assert_ne!(mail.message_id(), mails[0].message_id());
    assert!(!mail.subject().is_empty());
    assert!(
        mail.text().contains("Ivo"),
        "greets the user: {}",
        mail.text()
    );
    let token = mail.token("/reset-password");
    assert_eq!(token.len(), 43, "256-bit token, base64url");
    assert!(
        mail.text().contains(&format!("{PORTAL_RESET}{token}")),
        "{}",
        mail.text()
    );
    assert!(
        mail.html()
            .contains("https://portal.example.com/reset-password?token"),
        "{}",
        mail.html()
    );

    let requested = w.event("user.password_reset_requested", Some(&ana)).await;
    assert_eq!(requested["source"], "user-lifecycle");
    assert_eq!(requested["data"]["organization_id"], "acme", "{requested}");
    assert!(
        !requested.to_string().contains("token"),
        "no event carries a token: {requested}"
    );
    assert!(!requested.to_string().contains(&token));

    let redeemed = w
        .send("redeem_password_reset", json!({"token": token}), None)
        .await;
    assert_eq!(redeemed["status"], "applied", "{redeemed}");
    assert_eq!(redeemed["code"], "ok");
    assert_eq!(redeemed["data"]["user_id"], ana.as_str());
    assert_eq!(redeemed["data"]["email"], "ana@acme.example");

    let again = w
        .send("redeem_password_reset", json!({"token": token}), None)
        .await;
    assert_eq!(again["status"], "rejected", "{again}");
    assert_eq!(again["code"], "token_used", "{again}");
}

#[tokio::test]
async fn activation_and_reset_tokens_are_not_interchangeable() {
    let mut w = TestWorker::start().await;
    let manager = w.onboard_active_manager("acme", "boss@acme.example").await;
    let invited = user_id(&w.invite(&manager, "acme", "ivo@acme.example").await);
    let activation = w.smtp.mail_to("ivo@acme.example").await.token("/activate");
    let reset = reset_token(&mut w, "boss@acme.example", 2).await;

    let as_reset = w
        .send("redeem_password_reset", json!({"token": activation}), None)
        .await;
    assert_eq!(as_reset["status"], "rejected", "{as_reset}");
    assert_eq!(
        as_reset["code"], "token_invalid",
        "an activation token resets no password: {as_reset}"
    );
    let as_activation = w.activate(&reset).await;
    assert_eq!(as_activation["status"], "rejected", "{as_activation}");
    assert_eq!(
        as_activation["code"], "token_invalid",
        "a reset token activates nobody: {as_activation}"
    );

    // The misuse consumed neither.
    let activated = w.activate(&activation).await;
    assert_eq!(activated["status"], "applied", "{activated}");
    assert_eq!(activated["data"]["user_id"], invited.as_str());
    let redeemed = w
        .send("redeem_password_reset", json!({"token": reset}), None)
        .await;
    assert_eq!(redeemed["status"], "applied", "{redeemed}");
    assert_eq!(redeemed["data"]["user_id"], manager.as_str());
    assert_eq!(redeemed["data"]["email"], "boss@acme.example");

    let unknown = w
        .send(
            "redeem_password_reset",
            json!({"token": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}),
            None,
        )
        .await;
    assert_eq!(unknown["code"], "token_invalid", "{unknown}");
}

#[tokio::test]
async fn a_second_request_within_the_cooldown_is_too_soon_and_sends_nothing() {
    let mut w = TestWorker::start().await;
    let manager = w.onboard_active_manager("acme", "boss@acme.example").await;
    w.active_user(&manager, "acme", "ana@acme.example").await;

    let first = reset_token(&mut w, "ana@acme.example", 2).await;
    let too_soon = w.request_password_reset("ana@acme.example").await;
    assert_eq!(too_soon["status"], "rejected", "{too_soon}");
    assert_eq!(too_soon["code"], "too_soon", "{too_soon}");

    // A reset requested afterwards has arrived, so a second email to ana would have too.
    reset_token(&mut w, "boss@acme.example", 2).await;
    assert_eq!(
        w.smtp.count_to("ana@acme.example"),
        2,
        "activation and one reset"
    );

    // Once the cooldown is over (here: set to zero), a new request works and
    // revokes the earlier link.
    w.restart_with(&[("RESEND_COOLDOWN", "0s")]).await;
    let second = reset_token(&mut w, "ana@acme.example", 3).await;
    assert_ne!(first, second);
    let revoked = w
        .send("redeem_password_reset", json!({"token": first}), None)
        .await;
    assert_eq!(revoked["code"], "token_invalid", "{revoked}");
    let redeemed = w
        .send("redeem_password_reset", json!({"token": second}), None)
        .await;
    assert_eq!(redeemed["status"], "applied", "{redeemed}");
}

#[tokio::test]
async fn the_default_cooldown_refuses_an_immediate_second_request() {
    let mut w = TestWorker::start().await;
    w.onboard_active_manager("acme", "boss@acme.example").await;
    reset_token(&mut w, "boss@acme.example", 2).await;
    tokio::time::sleep(Duration::from_millis(1100)).await; // longer than a short cooldown, far below 60 s
    let too_soon = w.request_password_reset("boss@acme.example").await;
    assert_eq!(too_soon["code"], "too_soon", "{too_soon}");
}

#[tokio::test]
async fn an_unknown_address_is_not_found_and_a_malformed_one_is_invalid() {
    let mut w = TestWorker::start().await;
    let manager = w.onboard_active_manager("acme", "boss@acme.example").await;

    let unknown = w.request_password_reset("nobody@acme.example").await;
    assert_eq!(unknown["status"], "rejected", "{unknown}");
    assert_eq!(unknown["code"], "not_found", "{unknown}");

    for data in [
        json!({"email": "not an email"}),
        json!({"email": "boss@"}),
        json!({}),
    ] {
        let reply = w.send("request_password_reset", data.clone(), None).await;
        assert_eq!(reply["status"], "invalid", "{data}: {reply}");
        assert_eq!(reply["code"], "invalid", "{data}: {reply}");
        assert!(
            reply["message"]
                .as_str()
                .unwrap_or_default()
                .contains("email"),
            "names the field: {reply}"
        );
    }
    // Any event of those requests has arrived past the barrier.
    w.events_barrier(&manager, "acme").await;
    assert!(
        w.events_of("user.password_reset_requested")
            .await
            .is_empty()
    );
    assert!(w.events_of("user.password_reset_blocked").await.is_empty());
}

#[tokio::test]
async fn a_reset_token_past_its_ttl_is_expired() {
    let mut w = TestWorker::start_with(&[("PASSWORD_RESET_TTL", "1s")]).await;
    w.onboard_active_manager("acme", "boss@acme.example").await;
    let token = reset_token(&mut w, "boss@acme.example", 2).await;

    tokio::time::sleep(Duration::from_millis(1200)).await; // the TTL is the subject here
    let expired = w
        .send("redeem_password_reset", json!({"token": token}), None)
        .await;
    assert_eq!(expired["status"], "rejected", "{expired}");
    assert_eq!(expired["code"], "token_expired", "{expired}");
}
