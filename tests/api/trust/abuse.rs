//! Abuse of what the worker sends and keeps (issue 25, cases 9–11): SMTP
//! credentials never cross a network in the clear, one address is not
//! mailed without end, and what is no longer needed is pruned while the
//! audit trail stays.

use crate::helpers::{TestWorker, WAIT, applied, eventually, user_id};
use chrono::{DateTime, Utc};
use serde_json::Value;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PASSWORD: &str = "s3cretpw";

/// Starts `run` with `mail_url` and waits for it to exit (killing it and
/// failing after 30 s); returns whether it succeeded and its stderr.
fn start_up_with_mail_url(mail_url: &str) -> (bool, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_user-lifecycle"))
        .arg("run")
        // Refused before anything is reached; nothing listens on port 1,
        // so a worker that let MAIL_URL pass stops on these, creating nothing.
        .env("DATABASE_URL", "postgres://postgres@127.0.0.1:1/none")
        .env("AMQP_URL", "amqp://guest:guest@127.0.0.1:1/%2f")
        .env("AMQP_PREFIX", "ult_refused_mail_url")
        .env("MAIL_URL", mail_url)
        .env("METRICS_ADDR", "127.0.0.1:0")
        .env(
            "TEMPLATES_DIR",
            format!("{}/templates", env!("CARGO_MANIFEST_DIR")),
        )
        .env("LOG_FORMAT", "json")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the worker");
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().expect("worker status").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("worker output");
            panic!(
                "MAIL_URL={mail_url:?} did not stop start-up: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("worker output");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn smtp_credentials_for_a_remote_host_without_required_tls_stop_start_up() {
    for url in [
        format!("smtp://u:{PASSWORD}@mail.example.com:587"),
        format!("smtp://u:{PASSWORD}@mail.example.com:587?tls=opportunistic"),
    ] {
        let probe = url.clone();
        let (ok, stderr) = tokio::task::spawn_blocking(move || start_up_with_mail_url(&probe))
            .await
            .unwrap();
        assert!(!ok, "{url} must stop start-up:\n{stderr}");
        assert!(stderr.contains("MAIL_URL"), "names the setting:\n{stderr}");
        assert!(
            !stderr.contains(PASSWORD),
            "never shows the password:\n{stderr}"
        );
    }
}

/// The refusal of one email too many: `rate_limited`, with `retry_after`
/// an RFC 3339 time within the next 24 hours.
fn assert_rate_limited(reply: &Value) -> DateTime<Utc> {
    assert_eq!(reply["status"], "rejected", "{reply}");
    assert_eq!(reply["code"], "rate_limited", "{reply}");
    let at = reply["data"]["retry_after"]
        .as_str()
        .unwrap_or_else(|| panic!("retry_after in data: {reply}"));
    let at = DateTime::parse_from_rfc3339(at)
        .unwrap_or_else(|e| panic!("retry_after is RFC 3339 ({e}): {reply}"))
        .with_timezone(&Utc);
    let now = Utc::now();
    assert!(
        at > now && at <= now + chrono::Duration::hours(24),
        "retry_after within the next 24 h: {reply}"
    );
    at
}

/// Proves that nothing more goes to the address: an email to another
/// address is sent after the refusal and arrives, and the outbox is empty.
async fn barrier(w: &mut TestWorker, manager: &str) {
    applied(&w.invite(manager, "acme", "barrier@acme.example").await);
    w.smtp.mail_to("barrier@acme.example").await;
    w.outbox_drained(WAIT).await;
}

#[tokio::test]
async fn password_resets_to_one_address_stop_at_the_daily_cap_with_retry_after() {
    let mut w =
        TestWorker::start_with(&[("MAIL_CAP_PER_DAY", "3"), ("RESEND_COOLDOWN", "0s")]).await;
    let manager = w.onboard_active_manager("acme", "boss@acme.example").await;
    // The invitation is the first of the three emails of the day.
    w.active_user(&manager, "acme", "ana@acme.example").await;
    for _ in 0..2 {
        let reply = w.request_password_reset("ana@acme.example").await;
        applied(&reply);
    }
    w.smtp.wait_for("ana@acme.example", 3, WAIT).await;

    let refused = w.request_password_reset("ana@acme.example").await;
    assert_rate_limited(&refused);
    barrier(&mut w, &manager).await;
    assert_eq!(
        w.smtp.count_to("ana@acme.example"),
        3,
        "the invitation and two resets"
    );

    // An unknown address is answered as before the cap.
    let unknown = w.request_password_reset("nobody@acme.example").await;
    assert_eq!(unknown["code"], "not_found", "{unknown}");
}

#[tokio::test]
async fn activation_resends_to_one_address_stop_at_the_daily_cap_with_retry_after() {
    let mut w =
        TestWorker::start_with(&[("MAIL_CAP_PER_DAY", "3"), ("RESEND_COOLDOWN", "0s")]).await;
    let manager = w.onboard_active_manager("acme", "boss@acme.example").await;
    let ivo = user_id(&w.invite(&manager, "acme", "ivo@acme.example").await);
    for _ in 0..2 {
        let reply = w.resend_activation(&manager, &ivo).await;
        applied(&reply);
    }
    w.smtp.wait_for("ivo@acme.example", 3, WAIT).await;

    let refused = w.resend_activation(&manager, &ivo).await;
    assert_rate_limited(&refused);
    barrier(&mut w, &manager).await;
    assert_eq!(
        w.smtp.count_to("ivo@acme.example"),
        3,
        "the invitation and two resends"
    );
}

async fn execute(w: &TestWorker, sql: &'static str) {
    let mut db = w.db().await;
    sqlx::query(sql).execute(&mut db).await.expect(sql);
}

/// Waits until `sql` counts `want` (up to `WAIT`), then returns it.
async fn count_reaches(w: &TestWorker, sql: &'static str, want: i64) -> i64 {
    eventually(&format!("{sql} counting {want}"), WAIT, || async {
        let n = w.count(sql).await;
        (n == want).then_some(n).ok_or(n)
    })
    .await
}

#[tokio::test]
async fn housekeeping_prunes_dead_tokens_and_failed_emails_after_their_retention_and_keeps_the_audit_trail()
 {
    let mut w = TestWorker::start_with(&[
        ("HOUSEKEEPING_SCHEDULE", "* * * * * *"),
        ("TOKEN_RETENTION", "1d"),
        ("FAILED_OUTBOX_RETENTION", "1d"),
        ("RESEND_COOLDOWN", "0s"),
    ])
    .await;
    let manager = w.onboard_active_manager("acme", "boss@acme.example").await;
    // Used activation tokens (manager, ana), a revoked and an expired reset token.
    let ana = w.active_user(&manager, "acme", "ana@acme.example").await;
    for nth in 1..=2 {
        let reply = w.request_password_reset("ana@acme.example").await;
        assert_eq!(reply["status"], "applied", "{reply}");
        w.smtp.wait_for("ana@acme.example", 1 + nth, WAIT).await;
    }
    // A revoked activation token, and a live one (7 days).
    let ivo = user_id(&w.invite(&manager, "acme", "ivo@acme.example").await);
    let resent = w.resend_activation(&manager, &ivo).await;
    assert_eq!(resent["status"], "applied", "{resent}");
    w.smtp.wait_for("ivo@acme.example", 2, WAIT).await;
    // An email given up on (the server refuses every recipient meanwhile).
    w.smtp.answer_with(crate::helpers::Answer::RefuseRecipient);
    applied(&w.invite(&manager, "acme", "gone@acme.example").await);
    let failed = count_reaches(
        &w,
        "SELECT count(*) FROM outbox WHERE failed_at IS NOT NULL",
        1,
    )
    .await;
    assert_eq!(failed, 1, "the refused email is given up on");
    w.smtp.answer_with(crate::helpers::Answer::Accept);
    let history_before: Vec<Vec<Value>> = [&manager, &ana, &ivo]
        .iter()
        .map(|u| w.history(u))
        .collect();

    // Two days pass for everything issued and given up on so far.
    execute(
        &w,
        "UPDATE tokens SET created_at = created_at - interval '2 days',
            expires_at = expires_at - interval '2 days',
            used_at = used_at - interval '2 days',
            revoked_at = revoked_at - interval '2 days'",
    )
    .await;
    execute(
        &w,
        "UPDATE outbox SET failed_at = failed_at - interval '2 days' WHERE failed_at IS NOT NULL",
    )
    .await;
    // Dead only now, within the retention: kept. Its successor is live.
    let resent = w.resend_activation(&manager, &ivo).await;
    assert_eq!(resent["status"], "applied", "{resent}");

    let dead_long_ago = "SELECT count(*) FROM tokens
         WHERE used_at IS NOT NULL OR revoked_at < now() - interval '1 day'
            OR expires_at < now() - interval '1 day'";
    assert_eq!(
        count_reaches(&w, dead_long_ago, 0).await,
        0,
        "used, revoked and expired tokens pruned"
    );
    assert_eq!(
        count_reaches(
            &w,
            "SELECT count(*) FROM outbox WHERE failed_at IS NOT NULL",
            0
        )
        .await,
        0,
        "the failed email pruned"
    );
    assert_eq!(
        w.count(
            "SELECT count(*) FROM tokens
             WHERE used_at IS NULL AND revoked_at IS NULL AND expires_at > now()"
        )
        .await,
        2,
        "the live activation tokens of ivo and gone stay"
    );
    assert_eq!(
        w.count("SELECT count(*) FROM tokens WHERE revoked_at > now() - interval '1 day'")
            .await,
        1,
        "a token revoked within the retention stays"
    );
    // The live token still activates.
    let token = w
        .smtp
        .wait_for("ivo@acme.example", 3, WAIT)
        .await
        .pop()
        .unwrap()
        .token("/activate");
    let activated = w.activate(&token).await;
    assert_eq!(activated["status"], "applied", "{activated}");

    for (user, before) in [&manager, &ana, &ivo].iter().zip(history_before) {
        let after = w.history(user);
        assert!(
            after.len() >= before.len() && after[..before.len()] == before[..],
            "the audit trail of {user} is intact: {before:?} vs {after:?}"
        );
    }
}
