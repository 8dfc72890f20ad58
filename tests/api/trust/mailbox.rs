//! One person per mailbox (issue 25, case 5): every way of writing one
//! address (case, a U-label domain or its A-label) is one user, found by the
//! very text it was invited with; a local part that mixes scripts is refused;
//! users written before there were keys get theirs at start-up, and two of
//! them with one key are both kept and reported.

use serde_json::json;

use user_lifecycle::broker::client::CommandClient;

use crate::helpers::{TestWorker, invite_data, person};

/// The token of the `template` email to `to` waiting in the outbox: the
/// in-test SMTP server offers no SMTPUTF8, so a mailbox with a non-ASCII
/// name is never delivered to, and its email keeps its token.
async fn waiting_token(w: &TestWorker, to: &str, template: &str) -> String {
    let mut db = w.db().await;
    sqlx::query_scalar(
        "SELECT payload->>'token' FROM outbox
         WHERE kind = 'email' AND payload->>'to' = $1 AND payload->>'template' = $2",
    )
    .bind(to)
    .bind(template)
    .fetch_one(&mut db)
    .await
    .unwrap_or_else(|e| panic!("no {template} email to {to} in the outbox: {e}"))
}

#[tokio::test]
async fn an_address_is_found_by_the_very_text_it_was_invited_with() {
    let mut w = TestWorker::start().await;
    let manager = w.onboard_active_manager("acme", "boss@acme.example").await;
    // Unicode lowercases `İ` to `i` and a combining dot; PostgreSQL's
    // lower() (C.UTF-8) to a plain `i`.
    let typed = "İlker.x@example.test";
    let invited = w.invite(&manager, "acme", typed).await;
    assert_eq!(invited["status"], "applied", "{invited}");
    let user = invited["data"]["user_id"].as_str().unwrap().to_owned();
    let token = waiting_token(&w, typed, "activation").await;
    let activated = w.activate(&token).await;
    assert_eq!(activated["status"], "applied", "{activated}");
    assert_eq!(activated["data"]["email"], typed, "{activated}");

    for text in [typed, "İLKER.X@EXAMPLE.TEST"] {
        let found = w
            .send("check_email", json!({"email": text}), Some(&manager))
            .await;
        assert_eq!(found["status"], "applied", "{found}");
        assert_eq!(found["data"]["exists"], true, "{text}: {found}");
        assert_eq!(found["data"]["same_organization"], true, "{found}");
    }

    let reset = w.request_password_reset(typed).await;
    assert_eq!(reset["status"], "applied", "{reset}");
    assert_eq!(reset["data"]["user_id"], user.as_str(), "{reset}");
    // The email goes to the address as it was typed.
    waiting_token(&w, typed, "password_reset").await;
}

#[tokio::test]
async fn a_domain_and_its_a_label_are_one_mailbox() {
    let mut w = TestWorker::start().await;
    let manager = w.onboard_active_manager("acme", "boss@acme.example").await;
    let first = w.invite(&manager, "acme", "ann@müller.example").await;
    assert_eq!(first["status"], "applied", "{first}");
    let mail = w.smtp.mail_to("ann@xn--mller-kva.example").await;
    assert!(
        !mail.token("/activate").is_empty(),
        "delivered to the domain's ASCII form, without SMTPUTF8"
    );

    let second = w
        .invite(&manager, "acme", "ann@xn--mller-kva.example")
        .await;
    assert_eq!(second["status"], "rejected", "{second}");
    assert_eq!(second["code"], "email_taken", "{second}");

    let found = w
        .send(
            "check_email",
            json!({"email": "Ann@XN--MLLER-KVA.example"}),
            Some(&manager),
        )
        .await;
    assert_eq!(found["data"]["exists"], true, "{found}");
    assert_eq!(
        w.count("SELECT count(*) FROM users WHERE email_key = 'ann@xn--mller-kva.example'")
            .await,
        1
    );
}

#[tokio::test]
async fn case_variants_of_an_address_are_one_mailbox() {
    let mut w = TestWorker::start().await;
    let manager = w.onboard_active_manager("acme", "boss@acme.example").await;
    let first = w.invite(&manager, "acme", "ann@example.test").await;
    assert_eq!(first["status"], "applied", "{first}");

    let second = w.invite(&manager, "acme", "ANN@Example.test").await;
    assert_eq!(second["status"], "rejected", "{second}");
    assert_eq!(second["code"], "email_taken", "{second}");

    // Onboarding's first manager is held to the same key.
    let onboarded = w
        .send(
            "onboard_organization",
            json!({
                "organization": {"id": "beta", "name": "Beta B.V."},
                "contract_accounts": [{"id": "CA-1", "name": "Main"}],
                "delivery_accounts": [],
                "manager": person("Boss@ACME.example", "Bo", "Boss"),
            }),
            None,
        )
        .await;
    assert_eq!(onboarded["code"], "email_taken", "{onboarded}");
}

#[tokio::test]
async fn ways_of_writing_one_address_in_one_batch_are_one_mailbox() {
    let mut w = TestWorker::start().await;
    let manager = w.onboard_active_manager("acme", "boss@acme.example").await;
    // An invite committed first: the batch below may be written as one
    // statement against this actor and organization.
    let warm = w.invite(&manager, "acme", "warm@acme.example").await;
    assert_eq!(warm["status"], "applied", "{warm}");

    let envelopes: Vec<_> = [
        "bea@acme.example",
        "ann@müller.example",
        "cor@acme.example",
        "ANN@xn--mller-kva.example",
        "dirk@acme.example",
    ]
    .iter()
    .map(|e| CommandClient::envelope("invite_user", invite_data("acme", e), Some(&manager)))
    .collect();
    let replies = w.answers(&envelopes).await;
    assert_eq!(replies[1]["status"], "applied", "{}", replies[1]);
    assert_eq!(replies[3]["code"], "email_taken", "{}", replies[3]);
    for i in [0, 2, 4] {
        assert_eq!(replies[i]["status"], "applied", "{}", replies[i]);
    }
    assert_eq!(
        w.count("SELECT count(*) FROM users WHERE email_key = 'ann@xn--mller-kva.example'")
            .await,
        1
    );
}

#[tokio::test]
async fn a_local_part_that_mixes_scripts_is_invalid() {
    let mut w = TestWorker::start().await;
    let manager = w.onboard_active_manager("acme", "boss@acme.example").await;
    // Latin p, y, p, a, l and a Cyrillic а (U+0430).
    let lookalike = "p\u{430}ypal@example.test";

    let invited = w.invite(&manager, "acme", lookalike).await;
    assert_eq!(invited["status"], "invalid", "{invited}");
    assert_eq!(invited["code"], "invalid", "{invited}");
    let message = invited["message"].as_str().unwrap_or_default();
    assert!(message.contains("user.email"), "{invited}");
    assert!(message.contains("scripts"), "{invited}");
    assert_eq!(
        w.count("SELECT count(*) FROM users WHERE email LIKE '%ypal@example.test'")
            .await,
        0
    );

    let checked = w
        .send("check_email", json!({"email": lookalike}), Some(&manager))
        .await;
    assert_eq!(checked["status"], "invalid", "{checked}");
    assert!(
        checked["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("email"),
        "{checked}"
    );

    // One script, however unusual, is an address like any other.
    let cyrillic = w
        .invite(
            &manager,
            "acme",
            "\u{438}\u{432}\u{430}\u{43D}@example.test",
        )
        .await;
    assert_eq!(cyrillic["status"], "applied", "{cyrillic}");
}

#[tokio::test]
async fn users_stored_without_a_key_get_theirs_at_start_up_and_two_with_one_key_are_kept_and_reported()
 {
    let mut w = TestWorker::start().await;
    let manager = w.onboard_active_manager("acme", "boss@acme.example").await;
    // Users written as a worker without keys wrote them: the older of two
    // ways of writing one mailbox keeps it.
    let mut db = w.db().await;
    let insert = |id: &str, email: &str, age: &str| {
        format!(
            "INSERT INTO users (id, organization_id, kind, email, first_name, last_name, phone,
                 country, locale, role, permissions, status, created_at)
             VALUES ('{id}', 'acme', 'personal', '{email}', 'Ann', 'Old', '+31201234567', 'NL',
                 'en', 'user', '{{}}', 'active', now() - interval '{age}')"
        )
    };
    let older = "00000000-0000-4000-8000-00000000000a";
    let younger = "00000000-0000-4000-8000-00000000000b";
    let alone = "00000000-0000-4000-8000-00000000000c";
    for sql in [
        insert(younger, "ann@xn--mller-kva.example", "1 day"),
        insert(older, "Ann@Müller.example", "2 days"),
        insert(alone, "Solo@Example.TEST", "3 days"),
        format!("UPDATE users SET email_key = NULL WHERE id = '{manager}'"),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut db)
            .await
            .unwrap();
    }

    w.restart_with(&[]).await;

    let key_of = |id: &str| format!("SELECT email_key FROM users WHERE id = '{id}'");
    let mut keys = Vec::new();
    for id in [older, younger, alone, manager.as_str()] {
        let key: Option<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(key_of(id)))
            .fetch_one(&mut db)
            .await
            .unwrap();
        keys.push(key);
    }
    assert_eq!(keys[0].as_deref(), Some("ann@xn--mller-kva.example"));
    assert_eq!(
        keys[1].as_deref(),
        Some(format!("ann@xn--mller-kva.example {younger}").as_str())
    );
    assert_eq!(keys[2].as_deref(), Some("solo@example.test"));
    assert_eq!(keys[3].as_deref(), Some("boss@acme.example"));

    let warned = w
        .log_lines_once("warning about the shared key", |l| {
            l["level"] == "WARN" && l["kept_user_id"] == older && l["other_user_id"] == younger
        })
        .await;
    assert!(!warned.is_empty());
    assert_eq!(
        w.metric("user_lifecycle_email_key_collisions_total").await,
        Some(1.0)
    );

    // The older is the one found; the mailbox stays taken.
    let found = w.request_password_reset("ANN@müller.example").await;
    assert_eq!(found["data"]["user_id"], older, "{found}");
    let again = w.invite(&manager, "acme", "ann@MÜLLER.example").await;
    assert_eq!(again["code"], "email_taken", "{again}");
    let solo = w.invite(&manager, "acme", "solo@example.test").await;
    assert_eq!(solo["code"], "email_taken", "{solo}");
}
