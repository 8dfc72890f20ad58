//! Exactly-once delivery and poison messages: a redelivered command is
//! answered from the record, a message that can never succeed is
//! dead-lettered with the reason and never blocks the queue.

use crate::helpers::{TestWorker, WAIT, bytes, invite_data, invite_envelope};
use serde_json::{Value, json};
use std::time::Duration;
use user_lifecycle::broker::client::CommandClient;

/// `reply` with `"duplicate": true`: what a redelivery must get.
fn as_duplicate(reply: &Value) -> Value {
    let mut dup = reply.clone();
    dup["duplicate"] = json!(true);
    dup
}

/// True when `text` has `word` as a whole word (not inside another one).
fn names(text: &str, word: &str) -> bool {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .any(|w| w == word)
}

/// A well-formed envelope as a JSON value, to break in one place.
fn envelope_value(kind: &str) -> Value {
    CommandClient::envelope(kind, json!({"email": "ann@example.com"}), None)
}

fn without(mut v: Value, key: &str) -> Value {
    v.as_object_mut().unwrap().remove(key);
    v
}

/// Asserts that ivo@acme.example, `user`, got one activation email and
/// one `user.invited`, after a barrier: a later command's email and event
/// (as `manager`). Once they are out, a second copy of either would have
/// been out too.
async fn invited_once(w: &mut TestWorker, manager: &str, user: &str) {
    let marker_id = w.invited_user(manager, "acme", "marker@acme.example").await;
    w.event("user.invited", Some(&marker_id)).await;
    assert_eq!(
        w.smtp.count_to("ivo@acme.example"),
        1,
        "one activation email"
    );
    let again: Vec<Value> = w
        .events_of("user.invited")
        .await
        .into_iter()
        .filter(|e| e["subject"] == user)
        .collect();
    assert!(
        again.is_empty(),
        "one user.invited only; another came: {again:?}"
    );
}

#[tokio::test]
async fn the_same_command_delivered_twice_is_applied_once_and_answered_with_the_original_reply() {
    let mut w = TestWorker::start().await;
    let manager = w.onboard_active_manager("acme", "boss@acme.example").await;
    let envelope = invite_envelope(&manager, "acme", "ivo@acme.example");

    let first = w.send_envelope(&envelope).await;
    assert_eq!(first["status"], "applied", "{first}");
    assert_eq!(first["duplicate"], false);
    assert_eq!(first["command_id"], envelope["id"]);
    let user_id = first["data"]["user_id"].as_str().unwrap().to_owned();
    w.smtp.mail_to("ivo@acme.example").await;
    w.event("user.invited", Some(&user_id)).await;

    let second = w.send_envelope(&envelope).await;
    assert_eq!(second["duplicate"], true, "{second}");
    assert_eq!(
        second,
        as_duplicate(&first),
        "the stored reply, same user_id and data"
    );

    invited_once(&mut w, &manager, &user_id).await;

    let dup = w
        .metric_reaches(
            r#"user_lifecycle_commands_total{type="invite_user",outcome="duplicate"}"#,
            1.0,
        )
        .await;
    assert_eq!(dup, 1.0);
    // Counted once the command is acked, which may follow its reply.
    let applied = w
        .metric_reaches(
            r#"user_lifecycle_commands_total{type="invite_user",outcome="applied"}"#,
            2.0,
        )
        .await;
    assert_eq!(
        applied, 2.0,
        "the original and the marker; the duplicate is not counted as applied"
    );
}

#[tokio::test]
async fn two_simultaneous_deliveries_of_one_command_apply_it_once() {
    let mut w = TestWorker::start().await;
    let manager = w.onboard_active_manager("acme", "boss@acme.example").await;
    let envelope = invite_envelope(&manager, "acme", "ivo@acme.example");
    let body = bytes(&envelope);

    // Both copies are in the queue before either is answered.
    w.client
        .publish_raw("invite_user", &body, "copy-a")
        .await
        .unwrap();
    w.client
        .publish_raw("invite_user", &body, "copy-b")
        .await
        .unwrap();
    let mut replies = std::collections::HashMap::new();
    while replies.len() < 2 {
        let (correlation, reply) = w
            .client
            .next_reply(WAIT)
            .await
            .expect("a reply to each copy");
        replies.insert(correlation, reply);
    }
    let (a, b) = (&replies["copy-a"], &replies["copy-b"]);
    let (original, duplicate) = if a["duplicate"] == false {
        (a, b)
    } else {
        (b, a)
    };
    assert_eq!(original["status"], "applied", "{original}");
    assert_eq!(original["duplicate"], false);
    assert_eq!(
        *duplicate,
        as_duplicate(original),
        "one is applied, the other answered from the record"
    );

    let user_id = original["data"]["user_id"].as_str().unwrap().to_owned();
    w.event("user.invited", Some(&user_id)).await;
    w.smtp.mail_to("ivo@acme.example").await;
    invited_once(&mut w, &manager, &user_id).await;
}

#[tokio::test]
async fn a_redelivered_rejection_gets_the_original_rejection_even_when_a_retry_would_now_succeed() {
    // The default cooldown (60 s): the first resend is too soon on any machine.
    let mut w = TestWorker::start().await;
    let manager = w.onboard_active_manager("acme", "boss@acme.example").await;
    let invited_at = tokio::time::Instant::now();
    let invited = w.invite(&manager, "acme", "ivo@acme.example").await;
    let user = invited["data"]["user_id"].as_str().unwrap().to_owned();
    w.smtp.mail_to("ivo@acme.example").await;

    let resend = CommandClient::envelope(
        "resend_activation",
        json!({"user_id": user}),
        Some(&manager),
    );
    let first = w.send_envelope(&resend).await;
    assert_eq!(first["status"], "rejected", "{first}");
    assert_eq!(first["code"], "too_soon");
    assert_eq!(first["duplicate"], false);

    // A 2 s cooldown from now on, and 2 s past the invite: running the
    // resend again would succeed.
    w.restart_with(&[("RESEND_COOLDOWN", "2s")]).await;
    tokio::time::sleep_until(invited_at + Duration::from_millis(2100)).await;
    let again = w.send_envelope(&resend).await;
    assert_eq!(
        again,
        as_duplicate(&first),
        "the original rejection, not a new outcome"
    );

    // Had the redelivery been applied, this new command would be too soon.
    let fresh = w.resend_activation(&manager, &user).await;
    assert_eq!(
        fresh["status"], "applied",
        "the duplicate changed nothing: {fresh}"
    );
    w.event("user.activation_resent", Some(&user)).await;
    let mails = w.smtp.wait_for("ivo@acme.example", 2, WAIT).await;
    assert_eq!(mails.len(), 2, "the invite and the one applied resend");
    // The redelivery was answered before the fresh command was sent, so an
    // event of it would have arrived before the fresh one's, awaited above.
    assert!(
        w.events_of("user.activation_resent").await.is_empty(),
        "a single user.activation_resent"
    );

    let dup = w
        .metric_reaches(
            r#"user_lifecycle_commands_total{type="resend_activation",outcome="duplicate"}"#,
            1.0,
        )
        .await;
    assert_eq!(dup, 1.0);
}

/// A message that is not a command, and what the worker must say about it.
struct Poison {
    what: &'static str,
    body: Vec<u8>,
    reason: &'static str,
    /// Words (or phrases) the `x-error` header and the reply must contain.
    words: &'static [&'static str],
    /// The command id the reply can name, when the message has a usable one.
    command_id: Option<Value>,
}

fn poison(
    what: &'static str,
    body: Vec<u8>,
    reason: &'static str,
    words: &'static [&'static str],
) -> Poison {
    Poison {
        what,
        body,
        reason,
        words,
        command_id: None,
    }
}

/// Whether `text` mentions `word`: phrases as substrings, single words whole.
fn mentions(text: &str, word: &str) -> bool {
    if word.contains(' ') || word.contains('.') {
        text.contains(word)
    } else {
        names(text, word)
    }
}

#[tokio::test]
async fn messages_that_are_not_commands_are_dead_lettered_with_the_reason_and_answered_invalid() {
    let mut w = TestWorker::start().await;
    let mut wrong_version = envelope_value("check_email");
    wrong_version["specversion"] = json!("0.3");
    let mut unknown = envelope_value("check_email");
    unknown["type"] = json!("drop_tables");
    let mut huge = envelope_value("check_email");
    huge["data"]["padding"] = json!("x".repeat(70_000));

    let cases = vec![
        poison(
            "plain text",
            b"hello, I am not JSON".to_vec(),
            "not_json",
            &["not JSON"],
        ),
        poison(
            "binary",
            b"\xff\xfe{\x00".to_vec(),
            "not_json",
            &["not JSON"],
        ),
        poison(
            "truncated JSON",
            br#"{"specversion": "1.0", "id": "#.to_vec(),
            "not_json",
            &["not JSON"],
        ),
        poison(
            "a JSON array",
            b"[1, 2, 3]".to_vec(),
            "not_envelope",
            &["CloudEvents"],
        ),
        poison(
            "a JSON string",
            br#""invite_user""#.to_vec(),
            "not_envelope",
            &["CloudEvents"],
        ),
        poison(
            "no specversion",
            bytes(&without(envelope_value("check_email"), "specversion")),
            "not_envelope",
            &["CloudEvents", "specversion"],
        ),
        poison(
            "no id",
            bytes(&without(envelope_value("check_email"), "id")),
            "not_envelope",
            &["CloudEvents", "id"],
        ),
        poison(
            "no type",
            bytes(&without(envelope_value("check_email"), "type")),
            "not_envelope",
            &["CloudEvents", "type"],
        ),
        Poison {
            command_id: Some(wrong_version["id"].clone()),
            ..poison(
                "specversion 0.3",
                bytes(&wrong_version),
                "not_envelope",
                &["specversion", "1.0"],
            )
        },
        Poison {
            command_id: Some(unknown["id"].clone()),
            ..poison(
                "an unknown type",
                bytes(&unknown),
                "unknown_type",
                &["unknown command type", "drop_tables"],
            )
        },
        poison("over 64 KiB", bytes(&huge), "too_large", &["65536"]),
    ];

    for case in &cases {
        let what = case.what;
        let reply = w.send_raw(&case.body).await;
        assert_eq!(reply["status"], "invalid", "{what}: {reply}");
        assert_eq!(reply["code"], "invalid", "{what}: {reply}");
        assert_eq!(reply["duplicate"], false, "{what}: {reply}");
        if let Some(id) = &case.command_id {
            assert_eq!(
                &reply["command_id"], id,
                "{what}: the reply names the command it answers"
            );
        }
        let message = reply["message"].as_str().unwrap_or_default();

        let dead = w.dead_letter().await;
        assert_eq!(
            dead.reason, case.reason,
            "{what}: x-error-reason; x-error {:?}",
            dead.error
        );
        for word in case.words {
            assert!(
                mentions(&dead.error, word),
                "{what}: x-error should name {word:?}: {:?}",
                dead.error
            );
            assert!(
                mentions(message, word),
                "{what}: the reply's message should name {word:?}: {reply}"
            );
        }
        assert!(
            dead.body == case.body,
            "{what}: the original body is preserved ({} bytes dead-lettered, {} sent)",
            dead.body.len(),
            case.body.len()
        );
    }
    assert_eq!(
        w.dead_letters_waiting().await,
        0,
        "each message dead-lettered once"
    );

    w.dead_lettered_become(&[
        ("not_json", 3.0),
        ("not_envelope", 6.0),
        ("unknown_type", 1.0),
        ("too_large", 1.0),
    ])
    .await;
}

#[tokio::test]
async fn a_burst_of_poison_does_not_block_the_valid_command_behind_it() {
    let mut w = TestWorker::start().await;
    let mut unknown = envelope_value("check_email");
    unknown["type"] = json!("nonsense");
    let mut huge = envelope_value("check_email");
    huge["data"]["padding"] = json!("x".repeat(66_000));
    let poison: Vec<Vec<u8>> = vec![
        b"garbage".to_vec(),
        b"[]".to_vec(),
        bytes(&unknown),
        bytes(&huge),
    ];

    // More bad messages than the worker takes at once (its prefetch is 32).
    let burst = 48;
    for i in 0..burst {
        w.client
            .publish_raw("poison", &poison[i % poison.len()], &format!("poison-{i}"))
            .await
            .unwrap();
    }
    let reply = w
        .send(
            "onboard_organization",
            json!({
                "organization": {"id": "acme", "name": "Acme B.V."},
                "contract_accounts": [{"id": "CA-1", "name": "Main"}],
                "delivery_accounts": [],
                "manager": crate::helpers::person("boss@acme.example", "Mara", "Manager"),
            }),
            None,
        )
        .await;
    assert_eq!(
        reply["status"], "applied",
        "the command behind the poison is applied: {reply}"
    );
    assert!(reply["data"]["manager_id"].is_string(), "{reply}");
    w.event("organization.onboarded", None).await;
    w.smtp.mail_to("boss@acme.example").await;

    w.dead_lettered_become(&[
        ("not_json", 12.0),
        ("not_envelope", 12.0),
        ("unknown_type", 12.0),
        ("too_large", 12.0),
    ])
    .await;
    for _ in 0..burst {
        let dead = w.dead_letter().await;
        assert!(
            !dead.error.is_empty() && !dead.reason.is_empty(),
            "{dead:?}"
        );
    }
    assert_eq!(
        w.dead_letters_waiting().await,
        0,
        "each poison message dead-lettered once"
    );
}

#[tokio::test]
async fn a_command_with_invalid_data_is_answered_naming_the_field_and_dead_lettered_once() {
    let mut w = TestWorker::start().await;
    let manager = w.onboard_active_manager("acme", "boss@acme.example").await;
    let mut data = invite_data("acme", "ivo@acme.example");
    data["user"]["email"] = json!("ivo at acme");
    let envelope = CommandClient::envelope("invite_user", data, Some(&manager));

    let reply = w.send_envelope(&envelope).await;
    assert_eq!(reply["status"], "invalid", "{reply}");
    assert_eq!(reply["code"], "invalid");
    assert_eq!(reply["command_id"], envelope["id"]);
    assert!(
        reply["message"].as_str().unwrap().contains("user.email"),
        "names the field: {reply}"
    );

    let dead = w.dead_letter().await;
    assert_eq!(dead.reason, "invalid_data", "{dead:?}");
    assert!(
        dead.error.contains("user.email"),
        "x-error names the field: {:?}",
        dead.error
    );
    dead.assert_body_is(&envelope);
    w.metric_becomes(
        r#"user_lifecycle_dead_lettered_total{reason="invalid_data"}"#,
        1.0,
    )
    .await;
    w.metric_becomes(
        r#"user_lifecycle_commands_total{type="invite_user",outcome="invalid"}"#,
        1.0,
    )
    .await;

    // A redelivery gets the same answer and is not dead-lettered again: the
    // next dead letter is a marker sent after it.
    let again = w.send_envelope(&envelope).await;
    assert_eq!(again, as_duplicate(&reply));
    let marker = w.send_raw(b"marker, not JSON").await;
    assert_eq!(marker["status"], "invalid");
    let next = w.dead_letter().await;
    assert_eq!(
        next.body,
        b"marker, not JSON".to_vec(),
        "no second copy of the invalid command: {next:?}"
    );
    assert_eq!(w.dead_letters_waiting().await, 0);
    w.metric_becomes(
        r#"user_lifecycle_dead_lettered_total{reason="invalid_data"}"#,
        1.0,
    )
    .await;

    // Nobody was invited.
    let ok = w.invite(&manager, "acme", "marker@acme.example").await;
    let marker_id = ok["data"]["user_id"].as_str().unwrap().to_owned();
    w.event("user.invited", Some(&marker_id)).await;
    let others: Vec<Value> = w
        .events_of("user.invited")
        .await
        .into_iter()
        .filter(|e| e["subject"] != manager.as_str())
        .collect();
    assert!(
        others.is_empty(),
        "the invalid invite emitted nothing: {others:?}"
    );
}

#[tokio::test]
async fn a_publication_that_cannot_be_published_is_put_back_with_its_error_and_holds_no_reply_back()
{
    let mut w = TestWorker::start().await;
    let mut db = w.db().await;
    // A reply row that does not read as a publication, due now: the
    // publication lane claims it with its next pass.
    let bad: i64 = sqlx::query_scalar(
        "INSERT INTO outbox (kind, payload) VALUES ('reply', '{\"no_body\": true}') RETURNING id",
    )
    .fetch_one(&mut db)
    .await
    .unwrap();
    // Commands keep being answered meanwhile, their publications marked sent.
    let manager = w.onboard_active_manager("acme", "boss@acme.example").await;
    for n in 0..3 {
        let reply = w
            .invite(&manager, "acme", &format!("user{n}@acme.example"))
            .await;
        assert_eq!(reply["status"], "applied", "{reply}");
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (error, attempts, sent, failed): (Option<String>, i32, bool, bool) = sqlx::query_as(
            "SELECT last_error, attempts, sent_at IS NOT NULL, failed_at IS NOT NULL
             FROM outbox WHERE id = $1",
        )
        .bind(bad)
        .fetch_one(&mut db)
        .await
        .unwrap();
        // Never marked sent, never given up on.
        assert!(!sent && !failed, "the bad row stays to be retried");
        let others_unsent = w
            .count(
                "SELECT count(*) FROM outbox
                 WHERE kind IN ('reply', 'event') AND sent_at IS NULL
                   AND payload ? 'body'",
            )
            .await;
        if let Some(error) = &error {
            assert!(
                error.contains("does not read as a publication"),
                "the row is put back with why: {error}"
            );
        }
        // Put back and claimed again for a later attempt, while every other
        // publication went out.
        if error.is_some() && attempts >= 2 && others_unsent == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the bad row put back ({error:?}, {attempts} attempts) and every other publication marked sent ({others_unsent} left)"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
