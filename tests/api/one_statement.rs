//! Invites by a manager whose actor row and organization an earlier commit
//! read are written as one statement, without a transaction. They leave
//! exactly what a transaction leaves, and whenever anything changed since
//! that read (the manager, the organization's accounts, an email taken, a
//! command id recorded, even by a transaction still committing), nothing
//! is written that way and the command gets the transaction's answer.

use crate::helpers::batch::{Batch, handler};
use crate::helpers::{TestWorker, WAIT, eventually, invite_data, invite_envelopes};
use serde_json::json;
use std::time::Duration;
use user_lifecycle::broker::client::CommandClient;
use user_lifecycle::handler::Handled;

const ONE_STATEMENT: &str = "user_lifecycle_command_batches_total{written=\"one_statement\"}";
const MISSED: &str = "user_lifecycle_command_batches_total{written=\"missed\"}";

/// A worker with an active manager who has invited once since the worker
/// started (so the worker knows the manager and `acme`).
async fn warm_worker() -> (TestWorker, String) {
    let (mut w, manager) = TestWorker::with_active_manager(&[]).await;
    let first = w.invite(&manager, "acme", "first@acme.example").await;
    assert_eq!(first["status"], "applied", "{first}");
    (w, manager)
}

#[tokio::test]
async fn invites_after_the_first_are_one_statement_each_batch_and_leave_what_a_transaction_leaves()
{
    let (mut w, manager) = warm_worker().await;
    let before = w.metric(ONE_STATEMENT).await.unwrap_or(0.0);
    let envelopes = invite_envelopes(&manager, "acme", "one", 12);
    for reply in w.answers(&envelopes).await {
        assert_eq!(reply["status"], "applied", "{reply}");
    }
    let after = w.metric(ONE_STATEMENT).await.unwrap_or(0.0);
    assert!(after > before, "no batch was written as one statement");

    // State, tokens and audit rows as a transaction writes them.
    assert_eq!(
        w.count("SELECT count(*) FROM users WHERE status = 'invited' AND email LIKE 'one%'")
            .await,
        12
    );
    assert_eq!(
        w.count(
            "SELECT count(*) FROM tokens t JOIN users u ON u.id = t.user_id
             WHERE u.email LIKE 'one%' AND t.purpose = 'activation'"
        )
        .await,
        12
    );
    assert_eq!(
        w.count(
            "SELECT count(*) FROM audit_log a JOIN users u ON u.id = a.user_id
             WHERE u.email LIKE 'one%' AND a.action = 'user.invited'"
        )
        .await,
        12
    );
    for i in 0..12 {
        let email = format!("one{i}@load.example");
        let id: String = {
            let mut db = w.db().await;
            sqlx::query_scalar("SELECT id::text FROM users WHERE email = $1")
                .bind(&email)
                .fetch_one(&mut db)
                .await
                .unwrap()
        };
        // Waits for it (up to `WAIT`), panicking if it never comes.
        w.event("user.invited", Some(&id)).await;
    }
    // The emailed token is the one stored: it activates the user.
    let mail = w.smtp.mail_to("one7@load.example").await;
    assert!(mail.text().contains("Mara Manager"), "{}", mail.text());
    let activated = w
        .send(
            "activate_user",
            json!({"token": mail.token("/activate")}),
            None,
        )
        .await;
    assert_eq!(activated["status"], "applied", "{activated}");
}

#[tokio::test]
async fn a_manager_demoted_since_the_last_read_is_refused() {
    let (mut w, manager) = warm_worker().await;
    let missed = w.metric(MISSED).await.unwrap_or(0.0);
    let mut db = w.db().await;
    sqlx::query("UPDATE users SET role = 'user' WHERE id = $1::uuid")
        .bind(&manager)
        .execute(&mut db)
        .await
        .unwrap();

    let reply = w.invite(&manager, "acme", "late@acme.example").await;
    assert_eq!(reply["status"], "rejected", "{reply}");
    assert_eq!(reply["code"], "not_authorized", "{reply}");
    assert!(w.metric(MISSED).await.unwrap_or(0.0) > missed);
    assert_eq!(
        w.count("SELECT count(*) FROM users WHERE email = 'late@acme.example'")
            .await,
        0
    );
}

#[tokio::test]
async fn a_manager_renamed_since_the_last_read_signs_the_email_with_the_new_name() {
    let (mut w, manager) = warm_worker().await;
    let mut db = w.db().await;
    sqlx::query("UPDATE users SET first_name = 'Mira' WHERE id = $1::uuid")
        .bind(&manager)
        .execute(&mut db)
        .await
        .unwrap();

    let reply = w.invite(&manager, "acme", "renamed@acme.example").await;
    assert_eq!(reply["status"], "applied", "{reply}");
    let mail = w.smtp.mail_to("renamed@acme.example").await;
    assert!(mail.text().contains("Mira Manager"), "{}", mail.text());
}

#[tokio::test]
async fn an_account_added_since_is_known_and_one_removed_since_is_not() {
    let (mut w, manager) = warm_worker().await;
    let synced = w
        .send(
            "sync_accounts",
            json!({"organization_id": "acme", "contract_accounts": [],
                   "delivery_accounts": [{"id": "DA-2", "name": "Depot", "contract_accounts": ["CA-1"]}]}),
            None,
        )
        .await;
    assert_eq!(synced["status"], "applied", "{synced}");
    let with_da2 = |email: &str| {
        let mut data = invite_data("acme", email);
        data["delivery_accounts"] = json!(["DA-2"]);
        CommandClient::envelope("invite_user", data, Some(&manager))
    };
    let added = w.send_envelope(&with_da2("added@acme.example")).await;
    assert_eq!(added["status"], "applied", "{added}");

    // Gone behind the worker's back (no command removes accounts).
    let mut db = w.db().await;
    sqlx::query("DELETE FROM delivery_accounts WHERE organization_id = 'acme' AND id = 'DA-2'")
        .execute(&mut db)
        .await
        .unwrap();
    let removed = w.send_envelope(&with_da2("removed@acme.example")).await;
    assert_eq!(removed["status"], "invalid", "{removed}");
    assert!(
        removed["message"]
            .as_str()
            .unwrap_or_default()
            .contains("DA-2"),
        "{removed}"
    );
}

#[tokio::test]
async fn a_taken_email_and_a_repeated_command_among_them_get_the_transactions_answers() {
    let (mut w, manager) = warm_worker().await;
    let repeated = CommandClient::envelope(
        "invite_user",
        invite_data("acme", "once@acme.example"),
        Some(&manager),
    );
    let first = w.send_envelope(&repeated).await;
    assert_eq!(first["status"], "applied", "{first}");

    let mut envelopes = invite_envelopes(&manager, "acme", "mix", 4);
    envelopes.insert(
        1,
        CommandClient::envelope(
            "invite_user",
            invite_data("acme", "FIRST@acme.example"),
            Some(&manager),
        ),
    );
    envelopes.insert(3, repeated.clone());
    let replies = w.answers(&envelopes).await;
    assert_eq!(replies[1]["code"], "email_taken", "{}", replies[1]);
    assert_eq!(replies[3]["duplicate"], true, "{}", replies[3]);
    assert_eq!(replies[3]["data"], first["data"], "{}", replies[3]);
    for i in [0, 2, 4, 5] {
        assert_eq!(replies[i]["status"], "applied", "{}", replies[i]);
    }
    assert_eq!(
        w.count("SELECT count(*) FROM users WHERE email_key = 'first@acme.example'")
            .await,
        1
    );
    assert_eq!(
        w.count("SELECT count(*) FROM users WHERE email = 'once@acme.example'")
            .await,
        1
    );
}

/// Waits until a statement of the worker waits for a lock.
async fn until_the_worker_waits_for_a_lock(w: &TestWorker) {
    let what = "a statement of the worker waiting for the test's transaction";
    eventually(what, WAIT, || async {
        let waiting = w
            .count(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
            )
            .await;
        (waiting > 0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn an_email_being_taken_by_a_transaction_still_committing_fails_the_statement_whole() {
    use sqlx::Connection as _;
    let (mut w, manager) = warm_worker().await;
    let missed = w.metric(MISSED).await.unwrap_or(0.0);
    let mut db = w.db().await;
    let mut elsewhere = db.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO users (id, organization_id, kind, email, email_key, first_name, last_name,
             phone, country, locale, role, permissions, status)
         VALUES (gen_random_uuid(), 'acme', 'personal', 'race@acme.example',
             'race@acme.example', 'Rae', 'Racer', '+31201234567', 'NL', 'en', 'user', '{}',
             'active')",
    )
    .execute(&mut *elsewhere)
    .await
    .unwrap();

    let envelope = CommandClient::envelope(
        "invite_user",
        invite_data("acme", "race@acme.example"),
        Some(&manager),
    );
    let ids = w.publish_all(std::slice::from_ref(&envelope)).await;
    until_the_worker_waits_for_a_lock(&w).await;
    elsewhere.commit().await.unwrap();

    let replies = w.replies_for(&ids, Duration::from_secs(30)).await;
    let reply = &replies[&ids[0]][0];
    assert_eq!(reply["code"], "email_taken", "{reply}");
    assert!(w.metric(MISSED).await.unwrap_or(0.0) > missed);
    // Nothing of the statement stayed: no token, no audit row, and the
    // command is recorded once, as refused.
    assert_eq!(
        w.count(
            "SELECT count(*) FROM tokens t JOIN users u ON u.id = t.user_id
             WHERE u.email = 'race@acme.example'"
        )
        .await,
        0
    );
    let mut db = w.db().await;
    let audited: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_log WHERE command_id = $1 AND action = 'user.invited'",
    )
    .bind(&ids[0])
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(audited, 0);
    let recorded: Vec<String> =
        sqlx::query_scalar("SELECT status FROM processed_commands WHERE command_id = $1")
            .bind(&ids[0])
            .fetch_all(&mut db)
            .await
            .unwrap();
    assert_eq!(recorded, ["rejected"]);
}

#[tokio::test]
async fn a_command_id_being_recorded_by_a_transaction_still_committing_is_a_duplicate() {
    use sqlx::Connection as _;
    let (mut w, manager) = warm_worker().await;
    let missed = w.metric(MISSED).await.unwrap_or(0.0);
    let envelope = CommandClient::envelope(
        "invite_user",
        invite_data("acme", "twice@acme.example"),
        Some(&manager),
    );
    let id = envelope["id"].as_str().unwrap().to_owned();
    let mut db = w.db().await;
    let mut elsewhere = db.begin().await.unwrap();
    let stored = json!({"command_id": id, "status": "applied", "code": "ok", "message": "applied",
                        "data": {"answered": "elsewhere"}, "duplicate": false});
    sqlx::query(
        "INSERT INTO processed_commands (command_id, command_type, status, reply)
         VALUES ($1, 'invite_user', 'applied', $2)",
    )
    .bind(&id)
    .bind(&stored)
    .execute(&mut *elsewhere)
    .await
    .unwrap();

    let ids = w.publish_all(std::slice::from_ref(&envelope)).await;
    until_the_worker_waits_for_a_lock(&w).await;
    elsewhere.commit().await.unwrap();

    let replies = w.replies_for(&ids, Duration::from_secs(30)).await;
    let reply = &replies[&ids[0]][0];
    assert_eq!(reply["duplicate"], true, "{reply}");
    assert_eq!(reply["data"]["answered"], "elsewhere", "{reply}");
    assert!(w.metric(MISSED).await.unwrap_or(0.0) > missed);
    assert_eq!(
        w.count("SELECT count(*) FROM users WHERE email = 'twice@acme.example'")
            .await,
        0
    );
}

#[tokio::test]
async fn invites_of_managers_of_several_organizations_in_one_batch_see_each_manager_as_it_is_now() {
    let (mut w, acme) = TestWorker::with_active_manager(&[]).await;
    let beta = w.onboard_active_manager("beta", "boss@beta.example").await;
    let handler = handler(&w.pool(2).await);
    let invite = |manager: &str, org: &str, email: &str| {
        CommandClient::envelope("invite_user", invite_data(org, email), Some(manager))
    };
    // The first batch reads both managers; the handler keeps them.
    let first = Batch::of(&[
        invite(&acme, "acme", "a1@acme.example"),
        invite(&beta, "beta", "b1@beta.example"),
    ]);
    for result in first.handle(&handler).await {
        assert!(
            matches!(result, Ok(Handled::Processed { .. })),
            "{result:?}"
        );
    }
    // One of them renamed behind the handler's back.
    let mut db = w.db().await;
    sqlx::query("UPDATE users SET first_name = 'Bea' WHERE id = $1::uuid")
        .bind(&beta)
        .execute(&mut db)
        .await
        .unwrap();
    let second = Batch::of(&[
        invite(&acme, "acme", "a2@acme.example"),
        invite(&beta, "beta", "b2@beta.example"),
        invite(&acme, "acme", "a3@acme.example"),
    ]);
    for result in second.handle(&handler).await {
        assert!(
            matches!(result, Ok(Handled::Processed { .. })),
            "{result:?}"
        );
    }
    let renamed = w.smtp.mail_to("b2@beta.example").await;
    assert!(renamed.text().contains("Bea Manager"), "{}", renamed.text());
    let unchanged = w.smtp.mail_to("a3@acme.example").await;
    assert!(
        unchanged.text().contains("Mara Manager"),
        "{}",
        unchanged.text()
    );
    assert_eq!(
        w.count("SELECT count(*) FROM users WHERE email ~ '^[ab][123]@'")
            .await,
        5
    );
}

#[tokio::test]
async fn a_redelivered_batch_is_answered_from_the_records_and_the_manager_stays_known() {
    let (mut w, manager) = warm_worker().await;
    let envelopes = invite_envelopes(&manager, "acme", "again", 8);
    for reply in w.answers(&envelopes).await {
        assert_eq!(reply["status"], "applied", "{reply}");
    }
    // A publisher retrying the whole batch.
    for reply in w.answers(&envelopes).await {
        assert_eq!(reply["status"], "applied", "{reply}");
        assert_eq!(reply["duplicate"], true, "{reply}");
    }
    assert_eq!(
        w.count("SELECT count(*) FROM users WHERE email LIKE 'again%'")
            .await,
        8
    );
    // The next invite is still written as one statement: nothing was forgotten.
    let before = w.metric(ONE_STATEMENT).await.unwrap_or(0.0);
    let next = w.invite(&manager, "acme", "next@acme.example").await;
    assert_eq!(next["status"], "applied", "{next}");
    let after = w.metric_reaches(ONE_STATEMENT, before + 1.0).await;
    assert_eq!(after, before + 1.0, "the manager was forgotten");
}
