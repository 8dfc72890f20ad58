//! Cases 3c and 3d: the `invite_expired` notice goes only to whoever manages
//! the invitee now, and an organization whose first manager never activated
//! can be onboarded again to re-invite its manager.
//!
//! An invitation is made due by moving its expiry (and its token's) into the
//! past, as a week passing would: the sweep that runs every second then
//! expires it, without a test waiting for a time.

use crate::helpers::{TestWorker, WAIT, applied, person};
use serde_json::{Value, json};
use user_lifecycle::broker::client::CommandClient;
use user_lifecycle::domain::permission::Permission;

/// Every second: the sweep expires an invitation as soon as it is due.
const SWEEP_EVERY_SECOND: (&str, &str) = ("EXPIRY_SCHEDULE", "* * * * * *");

/// What `onboard_active_manager` gives a manager: every permission of the
/// catalog (whose names `domain::permission` pins to the contract).
fn every_permission() -> Vec<&'static str> {
    Permission::ALL.iter().map(Permission::as_str).collect()
}

/// Moves `user`'s invitation and activation tokens a week and a minute
/// back, as if it had been sent that long ago: it is now due.
async fn invitation_sent_a_week_ago(w: &TestWorker, user: &str) {
    let mut db = w.db().await;
    let user: uuid::Uuid = user.parse().unwrap();
    sqlx::query(
        "UPDATE users SET activation_expires_at = now() - interval '1 minute' WHERE id = $1",
    )
    .bind(user)
    .execute(&mut db)
    .await
    .unwrap();
    sqlx::query(
        "UPDATE tokens SET created_at = created_at - interval '7 days 1 minute',
            expires_at = now() - interval '1 minute'
         WHERE user_id = $1 AND purpose = 'activation'",
    )
    .bind(user)
    .execute(&mut db)
    .await
    .unwrap();
}

/// Invites and activates `email` as a manager of acme's My Organization
/// with everything, as `actor`; returns its id.
async fn full_manager(w: &mut TestWorker, actor: &str, email: &str, first: &str) -> String {
    let reply = w
        .send(
            "invite_user",
            json!({
                "organization_id": "acme",
                "delivery_account_id": null,
                "user": person(email, first, "Manager"),
                "role": "manager",
                "permissions": every_permission(),
                "contract_accounts": "all",
                "delivery_accounts": "all",
            }),
            Some(actor),
        )
        .await;
    let id = applied(&reply)["user_id"].as_str().unwrap().to_owned();
    let token = w.smtp.mail_to(email).await.token("/activate");
    let activated = w.activate(&token).await;
    applied(&activated);
    id
}

fn onboarding(manager_email: &str, contract: Value) -> Value {
    json!({
        "organization": {"id": "acme", "name": "acme B.V."},
        "contract_accounts": contract,
        "delivery_accounts": [],
        "manager": person(manager_email, "Mara", "Manager"),
    })
}

#[tokio::test]
async fn an_expiry_notice_goes_to_the_managers_who_manage_the_invitee_not_to_a_demoted_inviter() {
    let mut w = TestWorker::start_with(&[SWEEP_EVERY_SECOND]).await;
    let boss = w.onboard_active_manager("acme", "boss@acme.example").await;
    let bert = full_manager(&mut w, &boss, "bert@acme.example", "Bert").await;
    let x = w.invited_user(&bert, "acme", "x@acme.example").await;

    let demoted = w
        .send(
            "update_access",
            json!({"user_id": bert, "role": "user"}),
            Some(&boss),
        )
        .await;
    assert_eq!(applied(&demoted)["access"]["role"], "user", "{demoted}");

    invitation_sent_a_week_ago(&w, &x).await;
    let expired = w.event("user.invite_expired", Some(&x)).await;
    assert_eq!(
        expired["data"]["invited_by"],
        bert.as_str(),
        "the event still says who invited: {expired}"
    );

    // The boss's mail: its own activation, then the notice about X.
    let mails = w.smtp.wait_for("boss@acme.example", 2, WAIT).await;
    let notice = &mails[1];
    assert!(
        notice.subject().contains("x@acme.example"),
        "{}",
        notice.subject()
    );
    assert!(notice.text().contains("Ivo Invitee"), "{}", notice.text());
    assert!(
        notice.text().contains("Mara"),
        "greets the boss: {}",
        notice.text()
    );

    // Once everything is delivered, the demoted inviter had only its activation.
    w.outbox_drained(WAIT).await;
    assert_eq!(
        w.smtp.count_to("bert@acme.example"),
        1,
        "the demoted inviter no longer manages X and hears nothing of it"
    );
    assert_eq!(w.smtp.count_to("boss@acme.example"), 2, "one notice");
}

#[tokio::test]
async fn an_expiry_notice_goes_to_the_inviter_alone_while_it_still_manages_the_invitee() {
    let mut w = TestWorker::start_with(&[SWEEP_EVERY_SECOND]).await;
    let boss = w.onboard_active_manager("acme", "boss@acme.example").await;
    let bert = full_manager(&mut w, &boss, "bert@acme.example", "Bert").await;
    let x = w.invited_user(&bert, "acme", "x@acme.example").await;

    invitation_sent_a_week_ago(&w, &x).await;
    w.event("user.invite_expired", Some(&x)).await;
    let mails = w.smtp.wait_for("bert@acme.example", 2, WAIT).await;
    assert!(
        mails[1].subject().contains("x@acme.example"),
        "{}",
        mails[1].subject()
    );
    assert!(
        mails[1].text().contains("Bert"),
        "greets the inviter: {}",
        mails[1].text()
    );

    w.outbox_drained(WAIT).await;
    assert_eq!(
        w.smtp.count_to("boss@acme.example"),
        1,
        "the other managers are not told while the inviter manages X"
    );
}

#[tokio::test]
async fn an_organization_whose_manager_never_activated_is_onboarded_again_and_its_manager_reinvited()
 {
    let mut w = TestWorker::start_with(&[SWEEP_EVERY_SECOND]).await;
    let contract = json!([{"id": "CA-1", "name": "Main"}]);
    let first = w
        .send(
            "onboard_organization",
            onboarding("boss@acme.example", contract.clone()),
            None,
        )
        .await;
    let manager = applied(&first)["manager_id"].as_str().unwrap().to_owned();
    let old = w.smtp.mail_to("boss@acme.example").await.token("/activate");

    invitation_sent_a_week_ago(&w, &manager).await;
    w.event("user.invite_expired", Some(&manager)).await;
    // Nobody manages the expired first manager: nobody is told, and the log says so.
    w.log_lines_once("saying nobody is told of the expiry", |l| {
        l["user_id"] == manager.as_str()
            && l["message"]
                .as_str()
                .is_some_and(|m| m.contains("nobody is told"))
    })
    .await;
    let dead = w.activate(&old).await;
    assert_eq!(dead["code"], "token_expired", "{dead}");

    // Onboarding again: the same organization and manager, a fresh invitation.
    let again = CommandClient::envelope(
        "onboard_organization",
        onboarding("boss@acme.example", contract.clone()),
        None,
    );
    let reinvited = w.send_envelope(&again).await;
    let data = applied(&reinvited);
    assert_eq!(data["organization_id"], "acme", "{reinvited}");
    assert_eq!(
        data["manager_id"],
        manager.as_str(),
        "the same user: {reinvited}"
    );
    let resent = w.event("user.activation_resent", Some(&manager)).await;
    assert!(resent["data"]["resent_by"].is_null(), "{resent}");
    assert_eq!(resent["data"]["previous_status"], "expired", "{resent}");
    let expires: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(resent["data"]["activation_expires_at"].clone()).unwrap();
    assert!(
        expires > chrono::Utc::now() + chrono::Duration::days(6),
        "a fresh seven days: {expires}"
    );

    // The same command again is answered from its record, and sends nothing more.
    let duplicate = w.send_envelope(&again).await;
    assert_eq!(duplicate["duplicate"], true, "{duplicate}");
    assert_eq!(duplicate["data"]["manager_id"], manager.as_str());

    let mails = w.smtp.wait_for("boss@acme.example", 2, WAIT).await;
    let new = mails[1].token("/activate");
    assert_ne!(new, old);
    let stale = w.activate(&old).await;
    assert_eq!(
        stale["status"], "rejected",
        "the old link stays dead: {stale}"
    );
    let activated = w.activate(&new).await;
    assert_eq!(applied(&activated)["user_id"], manager.as_str());

    // With an active manager it is the manager's organization again.
    let third = w
        .send(
            "onboard_organization",
            onboarding("boss@acme.example", contract),
            None,
        )
        .await;
    assert_eq!(third["status"], "rejected", "{third}");
    assert_eq!(third["code"], "organization_exists", "{third}");
    w.outbox_drained(WAIT).await;
    assert_eq!(
        w.smtp.count_to("boss@acme.example"),
        2,
        "one email per invitation"
    );
}

#[tokio::test]
async fn onboarding_again_with_another_manager_email_invites_that_person_as_a_new_full_manager() {
    let mut w = TestWorker::start_with(&[SWEEP_EVERY_SECOND]).await;
    let first = w
        .send(
            "onboard_organization",
            onboarding("boss@acme.example", json!([{"id": "CA-1", "name": "Main"}])),
            None,
        )
        .await;
    let gone = applied(&first)["manager_id"].as_str().unwrap().to_owned();
    w.smtp.mail_to("boss@acme.example").await;
    invitation_sent_a_week_ago(&w, &gone).await;
    w.event("user.invite_expired", Some(&gone)).await;

    // The repeated command's accounts are upserted, as sync_accounts does.
    let again = w
        .send(
            "onboard_organization",
            onboarding("new@acme.example", json!([{"id": "CA-9", "name": "Later"}])),
            None,
        )
        .await;
    let manager = applied(&again)["manager_id"].as_str().unwrap().to_owned();
    assert_ne!(manager, gone, "another person, another user");
    let invited = w.event("user.invited", Some(&manager)).await;
    assert_eq!(invited["data"]["role"], "manager", "{invited}");
    assert_eq!(invited["data"]["contract_accounts"], "all", "{invited}");
    assert!(invited["data"]["invited_by"].is_null(), "{invited}");

    let token = w.smtp.mail_to("new@acme.example").await.token("/activate");
    let activated = w.activate(&token).await;
    applied(&activated);
    let mut data = crate::helpers::invite_data("acme", "ivo@acme.example");
    data["contract_accounts"] = json!(["CA-1", "CA-9"]);
    let invite = w.send("invite_user", data, Some(&manager)).await;
    applied(&invite);
}
