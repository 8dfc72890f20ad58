//! The ops tools on the worker's binary, run as an operator would, against a
//! running worker: `dead-letters list` shows the dead letters and leaves
//! them in place, in order; `dead-letters replay` moves them back to the
//! command queue to be applied; `preview-email` renders the templates with
//! sample data; `expire-now` runs the expiry sweep at once, under the
//! scheduler's lock.

use crate::helpers::{AMQP_URL, PG_BASE, TestWorker, WAIT, invite_data, resend_envelope};
use serde_json::{Value, json};
use std::process::{Command, Output};
use std::time::Duration;
use user_lifecycle::broker::client::CommandClient;
use user_lifecycle::scheduler::lock::keys;

/// An actor id nobody has: data is checked before the actor.
const NOBODY: &str = "0f9e2f9a-8d4c-4b0a-9c7e-1f2a3b4c5d6e";

fn templates_dir() -> String {
    format!("{}/templates", env!("CARGO_MANIFEST_DIR"))
}

/// Runs `user-lifecycle ARGS` with the worker's environment (off the test's
/// runtime, so the in-test SMTP server and event tap keep going).
async fn ops(w: &TestWorker, args: &[&str]) -> Output {
    let env = vec![
        ("AMQP_URL".to_owned(), AMQP_URL.to_owned()),
        ("AMQP_PREFIX".to_owned(), w.prefix.clone()),
        (
            "DATABASE_URL".to_owned(),
            format!("{PG_BASE}/{}", w.database),
        ),
    ];
    run(args, env).await
}

async fn run(args: &[&str], env: Vec<(String, String)>) -> Output {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_user-lifecycle"))
            .args(&args)
            .env_remove("RUST_LOG")
            .env("TEMPLATES_DIR", templates_dir())
            .envs(env)
            .output()
            .expect("run user-lifecycle")
    })
    .await
    .expect("the tool ran")
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).expect("UTF-8 output")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Stdout of a run that must succeed.
fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {}; stdout:\n{}\nstderr:\n{}",
        out.status,
        stdout(out),
        stderr(out)
    );
    stdout(out)
}

/// The JSON records of `dead-letters list --json`.
async fn listed(w: &TestWorker) -> Vec<Value> {
    ok(&ops(w, &["dead-letters", "list", "--json"]).await)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect()
}

/// An `invite_user` whose data is invalid (`user.email`).
fn invalid_invite() -> Value {
    let mut data = invite_data("acme", "ivo@acme.example");
    data["user"]["email"] = json!("ivo at acme");
    CommandClient::envelope("invite_user", data, Some(NOBODY))
}

#[tokio::test]
async fn list_shows_dead_letters_with_their_reasons_and_leaves_them_in_place_in_order() {
    let mut w = TestWorker::start().await;
    let not_json: &[u8] = b"not json, but personal: ann.private@example.com";
    assert_eq!(w.send_raw(not_json).await["status"], "invalid");
    w.dead_letters_reach(1).await;
    let unknown = CommandClient::envelope("make_coffee", json!({}), None);
    assert_eq!(w.send_envelope(&unknown).await["status"], "invalid");
    w.dead_letters_reach(2).await;
    let invalid = invalid_invite();
    assert_eq!(w.send_envelope(&invalid).await["status"], "invalid");
    w.dead_letters_reach(3).await;
    let bodies = [
        not_json.to_vec(),
        serde_json::to_vec(&unknown).unwrap(),
        serde_json::to_vec(&invalid).unwrap(),
    ];

    let first = ops(&w, &["dead-letters", "list"]).await;
    let text = ok(&first);
    println!("[list]\n{text}{}", stderr(&first));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 6, "two lines per dead letter: {text}");
    assert_eq!(
        lines[0],
        format!("#1 reason=not_json id=- type=- size={}", bodies[0].len())
    );
    assert!(lines[1].starts_with("    error: "), "{text}");
    assert_eq!(
        lines[2],
        format!(
            "#2 reason=unknown_type id={} type=make_coffee size={}",
            unknown["id"].as_str().unwrap(),
            bodies[1].len()
        )
    );
    assert!(lines[3].contains("make_coffee"), "x-error says why: {text}");
    assert_eq!(
        lines[4],
        format!(
            "#3 reason=invalid_data id={} type=invite_user size={}",
            invalid["id"].as_str().unwrap(),
            bodies[2].len()
        )
    );
    assert!(
        lines[5].contains("user.email"),
        "x-error names the field: {text}"
    );
    assert!(
        !text.contains("ann.private") && !text.contains("ivo at acme"),
        "no bodies unless asked: {text}"
    );
    assert!(
        stderr(&first).contains("3 of 3 dead letter(s)"),
        "{}",
        stderr(&first)
    );

    // Listing changes nothing: the same output again, the same queue.
    let second = ops(&w, &["dead-letters", "list"]).await;
    assert_eq!(ok(&second), text, "listing twice shows the same");
    assert_eq!(w.dead_letters_waiting().await, 3);

    let records = listed(&w).await;
    assert_eq!(records.len(), 3, "{records:?}");
    for (i, (record, reason)) in records
        .iter()
        .zip(["not_json", "unknown_type", "invalid_data"])
        .enumerate()
    {
        assert_eq!(record["position"], i + 1, "{record}");
        assert_eq!(record["reason"], reason, "{record}");
        assert_eq!(record["size"], bodies[i].len(), "{record}");
        assert!(record["error"].as_str().is_some_and(|e| !e.is_empty()));
        assert!(
            record.get("body").is_none(),
            "no body unless asked: {record}"
        );
    }
    assert_eq!(records[0]["id"], Value::Null);
    assert_eq!(records[2]["id"], invalid["id"]);
    assert_eq!(records[2]["type"], "invite_user");

    let limited = ops(
        &w,
        &[
            "dead-letters",
            "list",
            "--json",
            "--limit",
            "1",
            "--show-body",
        ],
    )
    .await;
    let limited = ok(&limited);
    assert_eq!(limited.lines().count(), 1, "{limited}");
    let head: Value = serde_json::from_str(limited.trim()).unwrap();
    assert_eq!(head["position"], 1);
    assert_eq!(head["body"], String::from_utf8_lossy(not_json).as_ref());
    assert_eq!(head["body_truncated"], false);

    // Still all there, in their order, with their bodies.
    assert_eq!(w.dead_letters_waiting().await, 3);
    for (body, reason) in bodies
        .iter()
        .zip(["not_json", "unknown_type", "invalid_data"])
    {
        let dead = w.dead_letter().await;
        assert_eq!(dead.reason, reason);
        assert!(
            dead.body == *body,
            "{}",
            String::from_utf8_lossy(&dead.body)
        );
    }
    assert_eq!(w.dead_letters_waiting().await, 0);
    assert_eq!(listed(&w).await, Vec::<Value>::new());
}

#[tokio::test]
async fn replay_all_applies_a_command_dead_lettered_for_a_transient_failure() {
    let mut w = TestWorker::start_with(&[
        ("COMMAND_MAX_DELIVERIES", "1"),
        ("DATABASE_LOCK_TIMEOUT", "200ms"),
        ("RESEND_COOLDOWN", "0s"),
    ])
    .await;
    let manager = w.onboard_active_manager("acme", "boss@acme.example").await;
    let x = "xavier@acme.example";
    let x_id = w.invited_user(&manager, "acme", x).await;

    // X's row is locked past DATABASE_LOCK_TIMEOUT: the resend is dead-lettered.
    let lock = w.lock_user_row(x).await;
    let resend_id = w.publish(&resend_envelope(&manager, &x_id)).await;
    w.dead_letters_reach(1).await;
    let records = listed(&w).await;
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["reason"], "transient", "{}", records[0]);
    assert_eq!(records[0]["id"], resend_id.as_str());
    assert_eq!(records[0]["type"], "resend_activation");

    let dry = ops(&w, &["dead-letters", "replay", "--all", "--dry-run"]).await;
    assert!(
        ok(&dry).contains("would replay 1 dead letter(s)"),
        "{}",
        stdout(&dry)
    );
    assert_eq!(
        w.dead_letters_waiting().await,
        1,
        "a dry run changes nothing"
    );

    // The cause is gone; replay.
    lock.release().await;
    let replay = ops(&w, &["dead-letters", "replay", "--all"]).await;
    let out = ok(&replay);
    println!("[replay]\n{out}");
    assert!(out.contains("replayed 1 dead letter(s)"), "{out}");
    assert!(
        out.contains(&format!(
            "replayed #1 id={resend_id} type=resend_activation reason=transient"
        )),
        "{out}"
    );

    // Applied now, answered on the original reply_to with the original correlation id.
    let reply = w.reply_for(&resend_id, WAIT).await;
    assert_eq!(reply["status"], "applied", "{reply}");
    assert_eq!(reply["duplicate"], false, "{reply}");
    w.event("user.activation_resent", Some(&x_id)).await;
    let mails = w.smtp.wait_for(x, 2, WAIT).await;
    let token = mails[1].token("/activate");
    let activated = w.activate(&token).await;
    assert_eq!(activated["status"], "applied", "{activated}");

    assert_eq!(w.dead_letters_waiting().await, 0);
    assert_eq!(listed(&w).await, Vec::<Value>::new());
}

#[tokio::test]
async fn replay_by_id_moves_only_the_selected_message_and_keeps_the_others_in_order() {
    let mut w = TestWorker::start().await;
    w.send_raw(b"not json").await;
    w.dead_letters_reach(1).await;
    let invalid = invalid_invite();
    let invalid_id = invalid["id"].as_str().unwrap().to_owned();
    let first = w.send_envelope(&invalid).await;
    assert_eq!(first["status"], "invalid", "{first}");
    w.dead_letters_reach(2).await;
    let unknown = CommandClient::envelope("make_coffee", json!({}), None);
    w.send_envelope(&unknown).await;
    w.dead_letters_reach(3).await;

    let dry = ops(
        &w,
        &["dead-letters", "replay", "--id", &invalid_id, "--dry-run"],
    )
    .await;
    assert!(
        ok(&dry).contains("would replay 1 dead letter(s)"),
        "{}",
        stdout(&dry)
    );
    assert_eq!(w.dead_letters_waiting().await, 3);

    let replay = ops(&w, &["dead-letters", "replay", "--id", &invalid_id]).await;
    let out = ok(&replay);
    assert!(out.contains("replayed 1 dead letter(s)"), "{out}");
    assert!(out.contains("2 left in"), "{out}");

    // The worker gets it back and answers it as the duplicate it is:
    // commands are idempotent by id. (No reply to see here: a dead letter
    // for invalid data is copied from the outbox without its reply_to.)
    w.metric_reaches(
        r#"user_lifecycle_commands_total{type="invite_user",outcome="duplicate"}"#,
        1.0,
    )
    .await;

    let records = listed(&w).await;
    let reasons: Vec<&str> = records
        .iter()
        .map(|r| r["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons, ["not_json", "unknown_type"], "{records:?}");

    let missing = ops(&w, &["dead-letters", "replay", "--id", "no-such-id"]).await;
    assert!(!missing.status.success());
    assert!(stdout(&missing).contains("replayed 0 dead letter(s)"));
    assert!(
        stderr(&missing).contains("has id no-such-id"),
        "{}",
        stderr(&missing)
    );
    assert_eq!(w.dead_letters_waiting().await, 2);

    let unknown_prefix = run(
        &["dead-letters", "list"],
        vec![("AMQP_PREFIX".into(), "ult_no_such_prefix".into())],
    )
    .await;
    assert!(!unknown_prefix.status.success());
    assert!(
        stderr(&unknown_prefix).contains("ult_no_such_prefix.commands.dead does not exist"),
        "{}",
        stderr(&unknown_prefix)
    );
}

#[tokio::test]
async fn preview_email_renders_each_template_in_dutch_with_escaped_names() {
    for template in ["activation", "password_reset", "invite_expired"] {
        let html = run(
            &[
                "preview-email",
                template,
                "--locale",
                "nl",
                "--format",
                "html",
            ],
            vec![],
        )
        .await;
        let html_out = ok(&html);
        assert!(html_out.contains("<html lang=\"nl\">"), "{template}");
        assert!(html_out.contains("Beste"), "{template} in Dutch");
        assert!(
            html_out.contains("&lt;Annie&gt;") || html_out.contains("&lt;Boss&gt;"),
            "{template}: the name escaped"
        );
        assert!(
            !html_out.contains("<Annie>") && !html_out.contains("<Boss>"),
            "{template}: nothing unescaped"
        );
        assert!(stderr(&html).is_empty(), "{template}: {}", stderr(&html));

        let text = ok(&run(
            &[
                "preview-email",
                template,
                "--locale",
                "nl",
                "--format",
                "text",
            ],
            vec![],
        )
        .await);
        assert!(
            text.contains("Dit is een automatisch bericht"),
            "{template}: {text}"
        );
        assert!(text.contains("<Annie>"), "text is not HTML: {text}");
        if template != "invite_expired" {
            assert!(text.contains("?token=SAMPLE-TOKEN"), "{text}");
        }

        let all = ok(&run(&["preview-email", template, "--locale", "nl"], vec![]).await);
        assert!(all.starts_with("Subject: "), "{all}");
        assert!(all.contains("----- text -----") && all.contains("----- html -----"));
    }

    let subject = ok(&run(
        &[
            "preview-email",
            "activation",
            "--format",
            "subject",
            "--portal-url",
            "https://portal.example.com",
        ],
        vec![],
    )
    .await);
    assert_eq!(subject.lines().count(), 1, "{subject}");
    assert!(subject.contains("Jansen & Zonen <Logistiek>"), "{subject}");

    let regional = run(
        &[
            "preview-email",
            "activation",
            "--locale",
            "nl-BE",
            "--format",
            "text",
        ],
        vec![],
    )
    .await;
    assert!(ok(&regional).contains("Beste"));
    assert!(stderr(&regional).contains("`nl`"), "{}", stderr(&regional));

    let unknown_locale = run(
        &[
            "preview-email",
            "activation",
            "--locale",
            "pt",
            "--format",
            "text",
        ],
        vec![],
    )
    .await;
    assert!(ok(&unknown_locale).contains("Hello Anna <Annie>"));
    assert!(
        stderr(&unknown_locale).contains("rendered the `en` templates"),
        "{}",
        stderr(&unknown_locale)
    );

    let unknown_template = run(&["preview-email", "welcome"], vec![]).await;
    assert!(!unknown_template.status.success());
    let err = stderr(&unknown_template);
    for valid in ["activation", "password_reset", "invite_expired"] {
        assert!(err.contains(valid), "lists {valid}: {err}");
    }
}

#[tokio::test]
async fn expire_now_expires_due_invitations_under_the_scheduler_lock_and_the_worker_delivers() {
    let (mut w, manager) = TestWorker::with_active_manager(&[
        ("ACTIVATION_TTL", "1s"),
        ("EXPIRY_SCHEDULE", "0 0 0 1 1 *"),
    ])
    .await;
    let mut users = Vec::new();
    for email in ["late1@acme.example", "late2@acme.example"] {
        let invited = w.invite(&manager, "acme", email).await;
        assert_eq!(invited["status"], "applied", "{invited}");
        users.push(invited["data"]["user_id"].as_str().unwrap().to_owned());
        w.smtp.mail_to(email).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await; // past the TTL

    // Another worker's sweep holds the lock: nothing happens, and it says so.
    let mut other = w.db().await;
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(keys::EXPIRY)
        .execute(&mut other)
        .await
        .unwrap();
    let busy = ops(&w, &["expire-now"]).await;
    assert_eq!(busy.status.code(), Some(75), "{}", stderr(&busy));
    assert!(
        stderr(&busy).contains("running elsewhere"),
        "{}",
        stderr(&busy)
    );
    assert_eq!(
        w.count("SELECT count(*) FROM users WHERE status = 'expired'")
            .await,
        0
    );
    sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(keys::EXPIRY)
        .execute(&mut other)
        .await
        .unwrap();

    let run = ops(&w, &["expire-now", "--batch", "1"]).await;
    let out = ok(&run);
    println!("[expire-now] {out}");
    assert_eq!(out.trim(), "expired 2 invitation(s) in 3 batch(es)");
    assert_eq!(
        w.count("SELECT count(*) FROM users WHERE status = 'expired'")
            .await,
        2
    );

    // The running worker delivers what the sweep put in the outbox.
    for user in &users {
        let event = w.event("user.invite_expired", Some(user)).await;
        assert_eq!(event["data"]["invited_by"], manager.as_str(), "{event}");
    }
    let mails = w.smtp.wait_for("boss@acme.example", 3, WAIT).await;
    assert!(
        mails[1..]
            .iter()
            .all(|m| m.subject().starts_with("Invitation expired")),
        "{:?}",
        mails.iter().map(|m| m.subject()).collect::<Vec<_>>()
    );

    let again = ops(&w, &["expire-now"]).await;
    assert_eq!(ok(&again).trim(), "expired 0 invitation(s) in 1 batch(es)");
}
