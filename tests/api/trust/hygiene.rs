//! What the worker takes in and hands on: names that read as they display,
//! no secrets in dead letters or stored copies, and no replies into the
//! worker's own queues (issue 25, cases 6, 7 and 8).

use std::process::Command;

use lapin::BasicProperties;
use lapin::options::BasicPublishOptions;
use serde_json::{Value, json};
use user_lifecycle::broker::client::CommandClient;
use user_lifecycle::domain::token::SecretToken;

use crate::helpers::{AMQP_URL, TestWorker, WAIT, invite_data, person};

/// A right-to-left override: `Ann\u{202E}gnp.exe` displays as `Annexe.png`.
const LYING_NAME: &str = "Ann\u{202E}gnp.exe";

fn onboarding(org: &str, org_name: &str, manager_email: &str) -> Value {
    json!({
        "organization": {"id": org, "name": org_name},
        "contract_accounts": [{"id": "CA-1", "name": "Main"}],
        "delivery_accounts": [{"id": "DA-1", "name": "Shop", "contract_accounts": ["CA-1"]}],
        "manager": person(manager_email, "Mara", "Manager"),
    })
}

#[tokio::test]
async fn a_name_with_bidi_or_invisible_characters_is_refused_naming_the_field() {
    let (mut w, manager) = TestWorker::with_active_manager(&[]).await;

    let mut data = invite_data("acme", "ann@acme.example");
    data["user"]["first_name"] = json!(LYING_NAME);
    let reply = w.send("invite_user", data, Some(&manager)).await;
    assert_eq!(reply["status"], "invalid", "{reply}");
    let message = reply["message"].as_str().unwrap_or_default();
    assert!(message.contains("user.first_name"), "{reply}");

    for (field, org_name, account_name) in [
        ("organization.name", "Acme\u{2067}B.V.", "Main"),
        ("contract_accounts[0].name", "Acme B.V.", "Main\u{200B}"),
    ] {
        let mut data = onboarding("globex", org_name, "boss@globex.example");
        data["contract_accounts"][0]["name"] = json!(account_name);
        let reply = w.send("onboard_organization", data, None).await;
        assert_eq!(reply["status"], "invalid", "{field}: {reply}");
        let message = reply["message"].as_str().unwrap_or_default();
        assert!(message.contains(field), "{field}: {reply}");
    }

    // The same commands with plain names go through: only the names were wrong.
    let reply = w
        .send(
            "onboard_organization",
            onboarding("globex", "Globex B.V.", "boss@globex.example"),
            None,
        )
        .await;
    assert_eq!(reply["status"], "applied", "{reply}");
    let reply = w
        .send(
            "invite_user",
            invite_data("acme", "ivo@acme.example"),
            Some(&manager),
        )
        .await;
    assert_eq!(reply["status"], "applied", "{reply}");
    w.smtp.mail_to("ivo@acme.example").await;
    w.outbox_drained(WAIT).await;
    assert_eq!(
        w.smtp.count_to("ann@acme.example"),
        0,
        "no email for the refused name"
    );
    assert_eq!(
        w.count("SELECT count(*) FROM users WHERE email = 'ann@acme.example'")
            .await,
        0
    );
}

#[tokio::test]
async fn a_dead_letter_and_its_stored_copy_keep_no_token_and_the_token_still_works() {
    let (mut w, manager) = TestWorker::with_active_manager(&[]).await;
    let reply = w.invite(&manager, "acme", "ivo@acme.example").await;
    assert_eq!(reply["status"], "applied", "{reply}");
    let token = w.smtp.mail_to("ivo@acme.example").await.token("/activate");

    let reply = w
        .send(
            "activate_user",
            json!({"token": token, "remember_me": true}),
            None,
        )
        .await;
    assert_eq!(reply["status"], "invalid", "{reply}");
    assert!(!reply.to_string().contains(&token), "{reply}");
    w.dead_letters_reach(1).await;

    // The stored copy (the outbox row that published the dead letter).
    let mut db = w.db().await;
    let stored: Vec<Value> =
        sqlx::query_scalar("SELECT payload FROM outbox WHERE kind = 'dead_letter'")
            .fetch_all(&mut db)
            .await
            .unwrap();
    assert_eq!(stored.len(), 1);
    let stored_body = base64_decode(stored[0]["body_base64"].as_str().unwrap());
    assert!(!stored_body.contains(&token), "stored: {stored_body}");
    assert!(stored_body.contains("[redacted]"), "stored: {stored_body}");

    // What an operator sees.
    let out = Command::new(env!("CARGO_BIN_EXE_user-lifecycle"))
        .args(["dead-letters", "list", "--show-body", "--json"])
        .env_remove("RUST_LOG")
        .env("AMQP_URL", AMQP_URL)
        .env("AMQP_PREFIX", &w.prefix)
        .output()
        .expect("run dead-letters list");
    assert!(out.status.success(), "{out:?}");
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(!listed.contains(&token), "listed: {listed}");
    assert!(listed.contains("[redacted]"), "listed: {listed}");

    // The dead letter itself.
    let dead = w.dead_letter().await;
    assert_eq!(dead.reason, "invalid_data");
    let body = String::from_utf8_lossy(&dead.body).into_owned();
    assert!(!body.contains(&token), "dead letter: {body}");
    let body: Value = serde_json::from_str(&body).expect("still JSON");
    assert_eq!(body["data"]["token"], "[redacted]");
    assert_eq!(body["data"]["remember_me"], true, "the rest is kept");
    assert_eq!(body["type"], "activate_user");

    // The token reached nobody but the worker: its user can still activate.
    let reply = w.activate(&token).await;
    assert_eq!(reply["status"], "applied", "{reply}");
}

#[tokio::test]
async fn a_body_that_is_not_json_is_dead_lettered_without_its_token() {
    let mut w = TestWorker::start().await;
    let token = SecretToken::generate().unwrap();
    let token = token.expose();
    let envelope = CommandClient::envelope("activate_user", json!({"token": token}), None);
    let mut body = serde_json::to_vec(&envelope).unwrap();
    body.push(0xff);
    let reply = w.send_raw(&body).await;
    assert_eq!(reply["status"], "invalid", "{reply}");
    let dead = w.dead_letter().await;
    assert_eq!(dead.reason, "not_json");
    let kept = String::from_utf8_lossy(&dead.body);
    assert!(!kept.contains(token), "dead letter: {kept}");
    assert!(
        kept.contains(r#""token":"[redacted]""#),
        "dead letter: {kept}"
    );
    assert!(
        kept.contains(r#""type":"activate_user""#),
        "the rest is kept: {kept}"
    );
}

#[tokio::test]
async fn a_command_replying_into_the_workers_own_queues_is_dead_lettered_unapplied() {
    let mut w = TestWorker::start().await;
    let dead_queue = format!("{}.commands.dead", w.prefix);
    let envelope = CommandClient::envelope(
        "onboard_organization",
        onboarding("acme", "Acme B.V.", "boss@acme.example"),
        None,
    );
    let id = envelope["id"].as_str().unwrap().to_owned();

    let amqp = lapin::Connection::connect(AMQP_URL, lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let channel = amqp.create_channel().await.unwrap();
    channel
        .confirm_select(lapin::options::ConfirmSelectOptions::default())
        .await
        .unwrap();
    let confirm = channel
        .basic_publish(
            format!("{}.commands", w.prefix).as_str().into(),
            "onboard_organization".into(),
            BasicPublishOptions::default(),
            &serde_json::to_vec(&envelope).unwrap(),
            BasicProperties::default()
                .with_content_type("application/cloudevents+json".into())
                .with_delivery_mode(2)
                .with_reply_to(dead_queue.as_str().into())
                .with_correlation_id(id.as_str().into()),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(confirm.is_ack());

    w.metric_reaches(
        "user_lifecycle_dead_lettered_total{reason=\"bad_reply_to\"}",
        1.0,
    )
    .await;
    w.log_lines_once("naming the command with the bad reply_to", |l| {
        l["command_id"] == id.as_str() && l["reply_to"] == dead_queue.as_str()
    })
    .await;

    // Not applied: onboarding it again (replying where it should) is
    // applied, not `organization_exists`.
    let again = CommandClient::envelope(
        "onboard_organization",
        onboarding("acme", "Acme B.V.", "boss@acme.example"),
        None,
    );
    let reply = w.send_envelope(&again).await;
    assert_eq!(reply["status"], "applied", "{reply}");
    w.smtp.mail_to("boss@acme.example").await;
    w.outbox_drained(WAIT).await;

    // The dead-letter queue holds the dead letter and nothing else: no reply.
    assert_eq!(w.dead_letters_waiting().await, 1);
    let dead = w.dead_letter().await;
    assert_eq!(dead.reason, "bad_reply_to", "{}", dead.error);
    let body: Value = serde_json::from_slice(&dead.body).unwrap();
    assert_eq!(body["id"], id.as_str());
    assert_eq!(w.smtp.count_to("boss@acme.example"), 1, "one onboarding");
}

fn base64_decode(s: &str) -> String {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s)
        .expect("base64");
    String::from_utf8_lossy(&bytes).into_owned()
}
