//! Cases 3c and 3d: the `invite_expired` notice goes only to whoever manages
//! the invitee now, and an organization whose first manager never activated
//! can be onboarded again to re-invite its manager.
//!
//! An invitation is made due by moving its expiry (and its token's) into the
//! past, as a week passing would: the sweep that runs every second then
//! expires it, without a test waiting for a time.

use crate::common::{TestWorker, WAIT, person};
use serde_json::{Value, json};

/// Every second: the sweep expires an invitation as soon as it is due.
const SWEEP_EVERY_SECOND: (&str, &str) = ("EXPIRY_SCHEDULE", "* * * * * *");

/// What `onboard_active_manager` gives a manager: everything.
const EVERY_PERMISSION: [&str; 8] = [
    "services.view",
    "services.manage",
    "cases.view",
    "cases.create",
    "orders.view",
    "orders.create",
    "invoices.view",
    "documents.view",
];

fn applied(reply: &Value) -> &Value {
    assert_eq!(reply["status"], "applied", "{reply}");
    &reply["data"]
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
                "permissions": EVERY_PERMISSION,
                "contract_accounts": "all",
                "delivery_accounts": "all",
            }),
            Some(actor),
        )
        .await;
    let id = applied(&reply)["user_id"].as_str().unwrap().to_owned();
    let token = w.smtp.mail_to(email).await.token("/activate");
    let activated = w.send("activate_user", json!({"token": token}), None).await;
    applied(&activated);
    id
}

#[tokio::test]
async fn an_expiry_notice_goes_to_the_managers_who_manage_the_invitee_not_to_a_demoted_inviter() {
    let mut w = TestWorker::start_with(&[SWEEP_EVERY_SECOND]).await;
    let boss = w.onboard_active_manager("acme", "boss@acme.example").await;
    let bert = full_manager(&mut w, &boss, "bert@acme.example", "Bert").await;
    let invited = w.invite(&bert, "acme", "x@acme.example").await;
    let x = applied(&invited)["user_id"].as_str().unwrap().to_owned();
    w.smtp.mail_to("x@acme.example").await;

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
    let invited = w.invite(&bert, "acme", "x@acme.example").await;
    let x = applied(&invited)["user_id"].as_str().unwrap().to_owned();
    w.smtp.mail_to("x@acme.example").await;

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
