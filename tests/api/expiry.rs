//! Activation expiry: the scheduled sweep, and tokens refused past their TTL
//! whether or not the sweep has run.

use crate::helpers::{TestWorker, person, user_id};
use serde_json::{Value, json};
use std::time::Duration;
use user_lifecycle::outbox::Wakeup;
use user_lifecycle::scheduler::expiry::sweep;
use user_lifecycle::store::expiry::begin_batch;

/// Every second: the sweep runs as soon as an invitation is due.
const SWEEP_EVERY_SECOND: (&str, &str) = ("EXPIRY_SCHEDULE", "* * * * * *");
/// Once a year at new year: the sweep does not run during a test.
const SWEEP_NEVER_SOON: (&str, &str) = ("EXPIRY_SCHEDULE", "0 0 0 1 1 *");

/// The status `check_email` reports for `email`, asked by `actor` of the same organization.
async fn status_of(w: &mut TestWorker, actor: &str, email: &str) -> Value {
    let reply = w
        .send("check_email", json!({"email": email}), Some(actor))
        .await;
    assert_eq!(reply["status"], "applied", "{reply}");
    assert_eq!(reply["data"]["exists"], true, "{reply}");
    reply["data"]["status"].clone()
}

#[tokio::test]
async fn an_invitation_not_activated_in_time_expires_and_the_inviting_manager_is_told() {
    // Long enough for `punctual` to be activated on a loaded machine.
    let (mut w, manager) =
        TestWorker::with_active_manager(&[("ACTIVATION_TTL", "5s"), SWEEP_EVERY_SECOND]).await;

    // Invited first, so due first: any sweep that expires the late one has seen this one.
    let punctual = user_id(&w.invite(&manager, "acme", "punctual@acme.example").await);
    let token = w
        .smtp
        .mail_to("punctual@acme.example")
        .await
        .token("/activate");
    let activated = w.activate(&token).await;
    assert_eq!(activated["status"], "applied", "{activated}");

    let late = user_id(&w.invite(&manager, "acme", "late@acme.example").await);
    w.smtp.mail_to("late@acme.example").await;

    let expired = w.event("user.invite_expired", Some(&late)).await;
    assert_eq!(expired["source"], "user-lifecycle");
    assert_eq!(expired["data"]["organization_id"], "acme");
    assert_eq!(expired["data"]["invited_by"], manager.as_str());
    assert!(
        !expired.to_string().contains("token"),
        "no event carries a token: {expired}"
    );
    assert_eq!(
        status_of(&mut w, &manager, "late@acme.example").await,
        "expired"
    );

    // The manager's mail: its own activation, then the notice about `late`.
    let mails = w
        .smtp
        .wait_for("boss@acme.example", 2, crate::helpers::WAIT)
        .await;
    let notice = &mails[1];
    assert!(
        notice.subject().contains("late@acme.example"),
        "the subject names the invitee: {}",
        notice.subject()
    );
    assert!(
        notice.text().contains("late@acme.example"),
        "{}",
        notice.text()
    );
    assert!(
        notice.text().contains("Ivo Invitee"),
        "names the invitee: {}",
        notice.text()
    );
    assert!(notice.text().contains("Mara"), "greets the manager");
    assert!(notice.html().contains("late@acme.example"));
    assert!(!notice.text().contains("punctual@acme.example"));
    assert!(notice.is_multipart_alternative());
    assert_eq!(
        notice.header("Auto-Submitted").as_deref(),
        Some("auto-generated")
    );

    // Who activated in time (and the manager itself) stays active. The
    // sweep writes its events in due order, punctual (invited first)
    // before late, and no later sweep can expire an active user: late's
    // event, awaited above, is the barrier for any about punctual.
    let all_expired = w.events_of("user.invite_expired").await;
    assert!(
        all_expired
            .iter()
            .all(|e| e["subject"] != punctual.as_str() && e["subject"] != manager.as_str()),
        "only the late invitee expired: {all_expired:?}"
    );
    assert_eq!(
        status_of(&mut w, &manager, "punctual@acme.example").await,
        "active"
    );
    assert_eq!(
        status_of(&mut w, &manager, "boss@acme.example").await,
        "active"
    );
    assert_eq!(
        w.smtp.count_to("boss@acme.example"),
        2,
        "one notice, not one per sweep"
    );

    // Ops see how long the sweep's transactions held their row locks.
    let batches = w
        .metric("user_lifecycle_expiry_batch_seconds_count")
        .await
        .unwrap_or(0.0);
    assert!(batches >= 1.0, "sweep batches timed: {batches}");
    let held = w
        .metric("user_lifecycle_expiry_batch_seconds_sum")
        .await
        .unwrap_or(0.0);
    assert!(held > 0.0, "and for how long: {held}");
}

#[tokio::test]
async fn a_token_past_its_ttl_is_refused_even_before_the_sweep_runs() {
    let (mut w, manager) =
        TestWorker::with_active_manager(&[("ACTIVATION_TTL", "2s"), SWEEP_NEVER_SOON]).await;
    let user = user_id(&w.invite(&manager, "acme", "ivo@acme.example").await);
    let token = w.smtp.mail_to("ivo@acme.example").await.token("/activate");

    tokio::time::sleep(Duration::from_millis(2200)).await; // the TTL is the subject here
    let refused = w.activate(&token).await;
    assert_eq!(refused["status"], "rejected", "{refused}");
    assert_eq!(refused["code"], "token_expired", "{refused}");
    // Any event of the refused activation has arrived past the barrier.
    w.events_barrier(&manager, "acme").await;
    assert!(
        w.events_of("user.invite_expired").await.is_empty(),
        "the sweep did not run"
    );
    assert!(
        w.events_of("user.activated")
            .await
            .iter()
            .all(|e| e["subject"] != user.as_str())
    );
    assert_ne!(
        status_of(&mut w, &manager, "ivo@acme.example").await,
        "active"
    );

    // Refused again, not consumed by the first refusal.
    let again = w.activate(&token).await;
    assert_eq!(again["code"], "token_expired", "{again}");
}

#[tokio::test]
async fn after_expiry_a_resend_issues_a_new_token_that_activates_and_the_old_one_stays_dead() {
    let (mut w, manager) = TestWorker::with_active_manager(&[
        ("ACTIVATION_TTL", "2s"),
        ("RESEND_COOLDOWN", "1s"),
        SWEEP_EVERY_SECOND,
    ])
    .await;
    let user = user_id(&w.invite(&manager, "acme", "ivo@acme.example").await);
    let old = w.smtp.mail_to("ivo@acme.example").await.token("/activate");
    w.event("user.invite_expired", Some(&user)).await;
    // From now on a token lives long enough to be used on a loaded machine;
    // the old one is dead already.
    w.restart_with(&[("ACTIVATION_TTL", "60s")]).await;

    let expired = w.activate(&old).await;
    assert_eq!(expired["status"], "rejected", "{expired}");
    assert_eq!(expired["code"], "token_expired", "{expired}");

    let resent = w.resend_activation(&manager, &user).await;
    assert_eq!(resent["status"], "applied", "{resent}");
    assert_eq!(resent["data"]["status"], "invited", "{resent}");
    let event = w.event("user.activation_resent", Some(&user)).await;
    assert!(
        !event.to_string().contains("token"),
        "no event carries a token: {event}"
    );
    assert_eq!(
        status_of(&mut w, &manager, "ivo@acme.example").await,
        "invited"
    );

    let mails = w
        .smtp
        .wait_for("ivo@acme.example", 2, crate::helpers::WAIT)
        .await;
    let new = mails[1].token("/activate");
    assert_ne!(old, new);

    let stale = w.activate(&old).await;
    assert_eq!(
        stale["status"], "rejected",
        "the old token stays dead: {stale}"
    );
    assert!(
        stale["code"] == "token_expired" || stale["code"] == "token_invalid",
        "{stale}"
    );

    let activated = w.activate(&new).await;
    assert_eq!(activated["status"], "applied", "{activated}");
    assert_eq!(activated["data"]["user_id"], user.as_str());
    assert_eq!(activated["data"]["email"], "ivo@acme.example");
    w.event("user.activated", Some(&user)).await;
    assert_eq!(
        status_of(&mut w, &manager, "ivo@acme.example").await,
        "active"
    );
}

#[tokio::test]
async fn an_onboarded_manager_invited_by_nobody_expires_without_a_notice_email() {
    let mut w = TestWorker::start_with(&[("ACTIVATION_TTL", "2s"), SWEEP_EVERY_SECOND]).await;
    let onboarded = w
        .send(
            "onboard_organization",
            json!({
                "organization": {"id": "acme", "name": "acme B.V."},
                "contract_accounts": [{"id": "CA-1", "name": "Main"}],
                "delivery_accounts": [],
                "manager": person("boss@acme.example", "Mara", "Manager"),
            }),
            None,
        )
        .await;
    assert_eq!(onboarded["status"], "applied", "{onboarded}");
    let manager = onboarded["data"]["manager_id"].as_str().unwrap().to_owned();
    w.smtp.mail_to("boss@acme.example").await;

    let expired = w.event("user.invite_expired", Some(&manager)).await;
    assert_eq!(expired["data"]["organization_id"], "acme");
    assert!(
        expired["data"]["invited_by"].is_null(),
        "nobody invited the first manager: {expired}"
    );

    // An email sent after the expiry has arrived, so any notice would have too.
    let second = w
        .send(
            "onboard_organization",
            json!({
                "organization": {"id": "other", "name": "Other B.V."},
                "contract_accounts": [{"id": "CA-1", "name": "Main"}],
                "delivery_accounts": [],
                "manager": person("boss@other.example", "Olga", "Other"),
            }),
            None,
        )
        .await;
    assert_eq!(second["status"], "applied", "{second}");
    w.smtp.mail_to("boss@other.example").await;

    let mails = w.smtp.mails();
    assert_eq!(
        mails.len(),
        2,
        "only the two activation emails, no invite_expired notice: {:?}",
        mails
            .iter()
            .map(|m| (m.to.clone(), m.subject()))
            .collect::<Vec<_>>()
    );
    assert_eq!(w.smtp.count_to("boss@acme.example"), 1);
}

#[tokio::test]
async fn a_sweep_batch_commits_without_waiting_for_the_disk_and_leaves_its_connection_durable() {
    let (mut w, manager) = TestWorker::with_active_manager(&[SWEEP_NEVER_SOON]).await;
    for n in 0..3 {
        user_id(
            &w.invite(&manager, "acme", &format!("late{n}@acme.example"))
                .await,
        );
    }
    let mut db = w.db().await;
    sqlx::query(
        "UPDATE users SET activation_expires_at = now() - interval '1 minute' WHERE status = 'invited'",
    )
    .execute(&mut db)
    .await
    .unwrap();
    // One connection: whatever the sweep's transactions set, the checks below see.
    let pool = w.pool(1).await;
    let show = "SHOW synchronous_commit";

    let mut batch = begin_batch(&pool).await.unwrap();
    let inside: String = sqlx::query_scalar(show)
        .fetch_one(&mut *batch)
        .await
        .unwrap();
    assert_eq!(inside, "off", "a sweep batch does not wait for the disk");
    batch.rollback().await.unwrap();
    let after_rollback: String = sqlx::query_scalar(show).fetch_one(&pool).await.unwrap();
    assert_eq!(after_rollback, "on", "the setting ends with the batch");

    let report = sweep(&pool, 2, &Wakeup::default()).await.unwrap();
    assert_eq!(report.expired, 3, "{report:?}");
    assert!(report.batches >= 2, "two at a time: {report:?}");
    let after_sweep: String = sqlx::query_scalar(show).fetch_one(&pool).await.unwrap();
    assert_eq!(
        after_sweep, "on",
        "the connection goes back to the pool committing durably, as commands need"
    );
    assert_eq!(
        w.count("SELECT count(*) FROM users WHERE status = 'expired'")
            .await,
        3
    );
}
