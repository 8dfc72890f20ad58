//! Inviting users, resending the activation email, activating.

use crate::helpers::{TestWorker, invite_data, person};
use serde_json::json;

#[tokio::test]
async fn a_manager_invites_a_user_who_gets_an_activation_email_and_activates() {
    let mut w = TestWorker::start().await;
    let manager = w.onboard_active_manager("acme", "boss@acme.example").await;

    let reply = w.invite(&manager, "acme", "ivo@acme.example").await;
    assert_eq!(reply["status"], "applied", "{reply}");
    assert_eq!(reply["code"], "ok");
    assert_eq!(reply["duplicate"], false);
    assert_eq!(reply["data"]["status"], "invited");
    let user_id = reply["data"]["user_id"].as_str().unwrap().to_owned();
    assert!(reply["data"]["activation_expires_at"].is_string());

    let invited = w.event("user.invited", Some(&user_id)).await;
    assert_eq!(invited["source"], "user-lifecycle");
    assert_eq!(invited["data"]["organization_id"], "acme");
    assert_eq!(invited["data"]["invited_by"], manager.as_str());
    assert!(
        !invited.to_string().contains("token"),
        "no event carries a token: {invited}"
    );

    let mail = w.smtp.mail_to("ivo@acme.example").await;
    assert!(mail.is_multipart_alternative());
    assert_eq!(
        mail.header("Auto-Submitted").as_deref(),
        Some("auto-generated")
    );
    assert!(!mail.message_id().is_empty());
    assert!(mail.subject().contains("acme B.V."), "{}", mail.subject());
    assert!(mail.text().contains("Mara Manager"), "names the inviter");
    let token = mail.token("/activate");
    assert_eq!(token.len(), 43, "256-bit token, base64url");
    assert!(
        mail.html()
            .contains("https://portal.example.com/activate?token")
    );

    let activated = w.activate(&token).await;
    assert_eq!(activated["status"], "applied", "{activated}");
    assert_eq!(activated["data"]["user_id"], user_id.as_str());
    assert_eq!(activated["data"]["email"], "ivo@acme.example");
    w.event("user.activated", Some(&user_id)).await;

    let again = w.activate(&token).await;
    assert_eq!(again["status"], "rejected");
    assert_eq!(again["code"], "token_used");
}

#[tokio::test]
async fn email_addresses_are_unique_across_organizations_ignoring_case() {
    let mut w = TestWorker::start().await;
    let acme = w.onboard_active_manager("acme", "boss@acme.example").await;
    let other = w
        .onboard_active_manager("other", "boss@other.example")
        .await;

    assert_eq!(
        w.invite(&acme, "acme", "ann@shared.example").await["status"],
        "applied"
    );
    let taken = w.invite(&other, "other", "ANN@Shared.Example").await;
    assert_eq!(taken["status"], "rejected");
    assert_eq!(taken["code"], "email_taken");
    let manager_taken = w.invite(&acme, "acme", "BOSS@other.example").await;
    assert_eq!(manager_taken["code"], "email_taken");
}

#[tokio::test]
async fn only_an_active_manager_of_the_same_organization_invites() {
    let mut w = TestWorker::start().await;
    let acme = w.onboard_active_manager("acme", "boss@acme.example").await;
    let other = w
        .onboard_active_manager("other", "boss@other.example")
        .await;
    let plain_user = w.active_user(&acme, "acme", "user@acme.example").await;

    let cross = w.invite(&other, "acme", "x@acme.example").await;
    assert_eq!(cross["code"], "not_authorized", "{cross}");
    let by_user = w.invite(&plain_user, "acme", "y@acme.example").await;
    assert_eq!(by_user["code"], "not_authorized", "{by_user}");
    let anonymous = w
        .send("invite_user", invite_data("acme", "z@acme.example"), None)
        .await;
    assert_eq!(anonymous["code"], "not_authorized");
    let unknown_actor = w
        .invite(&uuid::Uuid::new_v4().to_string(), "acme", "z@acme.example")
        .await;
    assert_eq!(unknown_actor["code"], "not_authorized");

    let invited = w.invite(&acme, "acme", "pending@acme.example").await;
    let pending = invited["data"]["user_id"].as_str().unwrap().to_owned();
    let by_inactive = w.invite(&pending, "acme", "w@acme.example").await;
    assert_eq!(
        by_inactive["code"], "not_authorized",
        "an invited (inactive) user does not act"
    );
}

#[tokio::test]
async fn invalid_user_data_is_refused_naming_the_field() {
    let mut w = TestWorker::start().await;
    let manager = w.onboard_active_manager("acme", "boss@acme.example").await;
    let mut data = invite_data("acme", "ok@acme.example");
    data["user"]["phone"] = json!("not a phone");
    let reply = w.send("invite_user", data, Some(&manager)).await;
    assert_eq!(reply["status"], "invalid");
    assert_eq!(reply["code"], "invalid");
    assert!(
        reply["message"].as_str().unwrap().contains("user.phone"),
        "{reply}"
    );

    let mut data = invite_data("acme", "ok@acme.example");
    data["permissions"] = json!(["cases.view", "admin.everything"]);
    let reply = w.send("invite_user", data, Some(&manager)).await;
    assert_eq!(reply["status"], "invalid");
    assert!(
        reply["message"].as_str().unwrap().contains("permissions"),
        "{reply}"
    );

    let mut data = invite_data("acme", "ok@acme.example");
    data["contract_accounts"] = json!(["CA-404"]);
    let reply = w.send("invite_user", data, Some(&manager)).await;
    assert_eq!(reply["status"], "invalid");
    assert!(
        reply["message"].as_str().unwrap().contains("CA-404"),
        "{reply}"
    );
}

#[tokio::test]
async fn a_resend_revokes_the_earlier_token_and_respects_the_cooldown() {
    let mut w = TestWorker::start().await;
    let manager = w.onboard_active_manager("acme", "boss@acme.example").await;
    let reply = w.invite(&manager, "acme", "ivo@acme.example").await;
    let user = reply["data"]["user_id"].as_str().unwrap().to_owned();
    let first = w.smtp.mail_to("ivo@acme.example").await.token("/activate");

    let too_soon = w.resend_activation(&manager, &user).await;
    assert_eq!(too_soon["code"], "too_soon", "{too_soon}");

    // Once the cooldown is over (here: set to zero) the resend goes out.
    w.restart_with(&[("RESEND_COOLDOWN", "0s")]).await;
    let resent = w.resend_activation(&manager, &user).await;
    assert_eq!(resent["status"], "applied", "{resent}");
    assert_eq!(resent["data"]["status"], "invited");
    w.event("user.activation_resent", Some(&user)).await;
    let mails = w
        .smtp
        .wait_for("ivo@acme.example", 2, crate::helpers::WAIT)
        .await;
    let second = mails[1].token("/activate");
    assert_ne!(first, second);
    assert_ne!(mails[0].message_id(), mails[1].message_id());

    let old = w.activate(&first).await;
    assert_eq!(
        old["code"], "token_invalid",
        "the resend revoked the first token: {old}"
    );
    let new = w.activate(&second).await;
    assert_eq!(new["status"], "applied", "{new}");

    let active = w.resend_activation(&manager, &user).await;
    assert_eq!(active["code"], "already_active");
}

#[tokio::test]
async fn a_manager_cannot_resend_for_another_organizations_user() {
    let mut w = TestWorker::start().await;
    let acme = w.onboard_active_manager("acme", "boss@acme.example").await;
    let other = w
        .onboard_active_manager("other", "boss@other.example")
        .await;
    let reply = w.invite(&acme, "acme", "ivo@acme.example").await;
    let user = reply["data"]["user_id"].as_str().unwrap();
    let cross = w.resend_activation(&other, user).await;
    assert_eq!(
        cross["code"], "not_found",
        "another tenant's user is invisible: {cross}"
    );
    let missing = w
        .send(
            "resend_activation",
            json!({"user_id": uuid::Uuid::new_v4()}),
            Some(&acme),
        )
        .await;
    assert_eq!(missing["code"], "not_found");
}

#[tokio::test]
async fn a_token_that_is_not_ours_is_invalid() {
    let mut w = TestWorker::start().await;
    for token in ["nope", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"] {
        let reply = w.activate(token).await;
        assert_eq!(reply["status"], "rejected");
        assert_eq!(reply["code"], "token_invalid", "{reply}");
    }
}

#[tokio::test]
async fn a_group_mailbox_may_have_no_last_name() {
    let mut w = TestWorker::start().await;
    let manager = w.onboard_active_manager("acme", "boss@acme.example").await;
    let mut data = invite_data("acme", "noc@acme.example");
    data["user"] = person("noc@acme.example", "NOC", "");
    data["user"]["type"] = json!("group");
    let reply = w.send("invite_user", data, Some(&manager)).await;
    assert_eq!(reply["status"], "applied", "{reply}");
    let mail = w.smtp.mail_to("noc@acme.example").await;
    assert!(mail.text().contains("NOC"));
}
