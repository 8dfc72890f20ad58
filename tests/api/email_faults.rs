//! Nothing lost, nothing twice, when the SMTP server misbehaves: a 4xx answer,
//! a server that is down or too slow is retried with backoff until it accepts,
//! then every email goes out exactly once; a 5xx answer or running out of
//! attempts marks the email failed, counted and logged, without holding up
//! the rest; a delivered (or given-up) email leaves no token in the outbox.
//! And the dialogue itself: a message's envelope goes in one go to a server
//! that offers PIPELINING, one command at a time to one that does not, and a
//! recipient refused mid-pipeline fails only that email.
//!
//! The harness sets `OUTBOX_RETRY_BASE=200ms`. Every test prints its figures
//! (`cargo test --test api email_faults -- --nocapture`).

use crate::helpers::{Answer, TestWorker, WAIT, eventually, invite_envelopes};
use std::collections::BTreeMap;
use std::time::Duration;

/// `emails_total` of the activation template for `outcome`; 0 while absent.
async fn activation_emails(w: &TestWorker, outcome: &str) -> f64 {
    let series =
        format!("user_lifecycle_emails_total{{template=\"activation\",outcome=\"{outcome}\"}}");
    w.metric(&series).await.unwrap_or(0.0)
}

/// Polls until the activation `outcome` count is at least `want`; returns it.
async fn activation_emails_reach(w: &TestWorker, outcome: &str, want: f64) -> f64 {
    let series =
        format!("user_lifecycle_emails_total{{template=\"activation\",outcome=\"{outcome}\"}}");
    w.metric_reaches(&series, want).await
}

/// The outbox row of the (single) email to `to`.
#[derive(Debug, Clone)]
struct EmailRow {
    id: i64,
    attempts: i32,
    sent: bool,
    failed: bool,
    last_error: Option<String>,
    has_token: bool,
}

async fn email_rows(w: &TestWorker, to: &str) -> Vec<EmailRow> {
    let mut conn = w.db().await;
    let rows: Vec<(i64, i32, bool, bool, Option<String>, bool)> = sqlx::query_as(
        "SELECT id, attempts, sent_at IS NOT NULL, failed_at IS NOT NULL, last_error,
                payload ? 'token'
         FROM outbox WHERE kind = 'email' AND payload->>'to' = $1 ORDER BY id",
    )
    .bind(to)
    .fetch_all(&mut conn)
    .await
    .expect("outbox query");
    rows.into_iter()
        .map(
            |(id, attempts, sent, failed, last_error, has_token)| EmailRow {
                id,
                attempts,
                sent,
                failed,
                last_error,
                has_token,
            },
        )
        .collect()
}

/// Polls until the one email row to `to` satisfies `done`; returns it.
async fn email_row_until(w: &TestWorker, to: &str, done: impl Fn(&EmailRow) -> bool) -> EmailRow {
    let what = format!("the email row to {to} in the expected state");
    eventually(&what, WAIT, || async {
        let rows = email_rows(w, to).await;
        assert!(rows.len() <= 1, "one email row to {to}: {rows:?}");
        rows.first().filter(|r| done(r)).cloned().ok_or(rows)
    })
    .await
}

/// Email rows neither sent nor given up.
async fn emails_pending(w: &TestWorker) -> i64 {
    w.count(
        "SELECT count(*) FROM outbox WHERE kind = 'email' AND sent_at IS NULL AND failed_at IS NULL",
    )
    .await
}

/// Waits until no email row is pending: from then on nothing more can be
/// sent, so the SMTP server's counts are final.
async fn outbox_settles(w: &TestWorker) {
    eventually("no email pending", WAIT, || async {
        match emails_pending(w).await {
            0 => Ok(()),
            pending => Err(format!("{pending} email(s) pending")),
        }
    })
    .await
}

/// Invites `n` users (`{tag}{i}@load.example`) at once; returns their addresses.
async fn invite_all(w: &mut TestWorker, manager: &str, tag: &str, n: usize) -> Vec<String> {
    let envelopes = invite_envelopes(manager, "acme", tag, n);
    let ids = w.publish_all(&envelopes).await;
    let replies = w.replies_for(&ids, WAIT).await;
    for id in &ids {
        let reply = replies
            .get(id)
            .and_then(|r| r.first())
            .unwrap_or_else(|| panic!("no reply to invite {id}"));
        assert_eq!(reply["status"], "applied", "{reply}");
    }
    (0..n).map(|i| format!("{tag}{i}@load.example")).collect()
}

/// Invites `n` users and waits until each one's email arrived and the
/// outbox settled; returns their addresses.
async fn invite_all_emailed(w: &mut TestWorker, manager: &str, tag: &str, n: usize) -> Vec<String> {
    let recipients = invite_all(w, manager, tag, n).await;
    for to in &recipients {
        w.smtp.wait_for(to, 1, WAIT).await;
    }
    outbox_settles(w).await;
    recipients
}

/// Invites one user; returns its address.
async fn invite_one(w: &mut TestWorker, manager: &str, email: &str) -> String {
    let reply = w.invite(manager, "acme", email).await;
    assert_eq!(reply["status"], "applied", "{reply}");
    email.to_owned()
}

/// What a test saw, printed so `--nocapture` shows it.
#[derive(Debug)]
struct Figures {
    sent: f64,
    retried: f64,
    failed: f64,
    delivered: usize,
    duplicates: usize,
}

async fn figures(w: &TestWorker, test: &str, recipients: &[String]) -> Figures {
    let sent = activation_emails(w, "sent").await;
    let retried = activation_emails(w, "retry").await;
    let failed = activation_emails(w, "failed").await;
    let counts: Vec<usize> = recipients.iter().map(|r| w.smtp.count_to(r)).collect();
    let f = Figures {
        sent,
        retried,
        failed,
        delivered: counts.iter().sum(),
        duplicates: counts.iter().map(|c| c.saturating_sub(1)).sum(),
    };
    println!(
        "[{test}] activation emails attempted {}, sent {}, retried {}, failed {}; \
         {} recipient(s), {} email(s) received, {} duplicate(s)",
        f.sent + f.retried + f.failed,
        f.sent,
        f.retried,
        f.failed,
        recipients.len(),
        f.delivered,
        f.duplicates
    );
    f
}

/// The row of the activation email to `to`, once it is given up on: after
/// `attempts` attempts, the last answered with `code`, which its
/// `last_error` names; it keeps no token and is counted failed, once.
async fn given_up(w: &TestWorker, test: &str, to: &str, attempts: i32, code: &str) -> EmailRow {
    let row = email_row_until(w, to, |r| r.failed).await;
    println!("[{test}] failed row: {row:?}");
    assert_eq!(
        row.attempts, attempts,
        "given up after {attempts} attempt(s)"
    );
    assert!(!row.sent);
    let error = row.last_error.clone().unwrap_or_default();
    assert!(
        error.contains(code),
        "last_error names the answer: {error:?}"
    );
    assert!(!row.has_token, "a given-up row keeps no token");
    assert_eq!(activation_emails_reach(w, "failed", 1.0).await, 1.0);
    row
}

/// Makes the server accept again and invites `later`; once its email is in
/// and the outbox settled, asserts that the email to `failed` (given up
/// on) stays unsent and `later`'s went out once. Returns `later`.
async fn accepted_again(
    w: &mut TestWorker,
    manager: &str,
    test: &str,
    failed: &str,
    later: &str,
) -> String {
    w.smtp.answer_with(Answer::Accept);
    let later = invite_one(w, manager, later).await;
    w.smtp.wait_for(&later, 1, WAIT).await;
    outbox_settles(w).await;
    let recipients = vec![failed.to_owned(), later.clone()];
    let f = figures(w, test, &recipients).await;
    assert_eq!(w.smtp.count_to(failed), 0, "the failed email stays unsent");
    assert_eq!(f.failed, 1.0);
    assert_eq!(f.sent, 1.0);
    assert_eq!(f.duplicates, 0);
    later
}

/// Makes the server accept again; once every one of `invitees` has its
/// email and the outbox has settled, asserts each email went out once and
/// was counted sent once, none failed (figures printed under `test`).
async fn accepted_at_last(w: &TestWorker, invitees: &[String], test: &str) {
    w.smtp.answer_with(Answer::Accept);
    for to in invitees {
        w.smtp.wait_for(to, 1, WAIT).await;
    }
    outbox_settles(w).await;
    each_got_exactly_one(w, invitees).await;
    let after = figures(w, test, invitees).await;
    assert_eq!(
        after.sent,
        invitees.len() as f64,
        "each email counted sent once"
    );
    assert_eq!(after.failed, 0.0);
    assert_eq!(after.duplicates, 0);
}

/// Asserts every recipient got exactly one email and no row holds a token.
async fn each_got_exactly_one(w: &TestWorker, recipients: &[String]) {
    for to in recipients {
        assert_eq!(w.smtp.count_to(to), 1, "exactly one email to {to}");
        let rows = email_rows(w, to).await;
        assert!(
            rows.len() == 1 && rows[0].sent && !rows[0].failed,
            "{to}: {rows:?}"
        );
        assert!(!rows[0].has_token, "{to}: a delivered row keeps no token");
    }
}

/// Whether the worker's log has an ERROR line with `message` about outbox row `id`.
fn logged_as_error(w: &TestWorker, message: &str, id: i64) -> bool {
    w.log()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .any(|l| {
            l["level"] == "ERROR"
                && l["message"].as_str().is_some_and(|m| m.contains(message))
                && l["outbox_id"] == id
        })
}

#[tokio::test]
async fn a_4xx_answer_is_retried_with_backoff_and_the_backlog_drains_once_exactly_when_accepted() {
    let (mut w, manager) = TestWorker::with_active_manager(&[]).await;
    w.smtp.answer_with(Answer::Transient);
    let n = 5;
    let invitees = invite_all(&mut w, &manager, "busy", n).await;

    // Watch one row: after attempt k its next try waits about base * 2^(k-1)
    // (200, 400, 800, 1600 ms). Record the longest wait left seen per attempt.
    let watched = &invitees[0];
    let mut mail_db = w.db().await;
    let mut wait_left: BTreeMap<i32, f64> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while wait_left.range(4..).next().is_none() {
        let row: Option<(i32, f64)> = sqlx::query_as(
            "SELECT attempts, EXTRACT(EPOCH FROM available_at - now())::float8
             FROM outbox WHERE kind = 'email' AND payload->>'to' = $1
               AND claimed_until IS NULL AND sent_at IS NULL AND failed_at IS NULL
               AND attempts > 0",
        )
        .bind(watched)
        .fetch_optional(&mut mail_db)
        .await
        .unwrap();
        if let Some((attempts, left)) = row {
            let e = wait_left.entry(attempts).or_insert(f64::MIN);
            *e = e.max(left);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the row to {watched} was not retried 4 times within {WAIT:?}: {wait_left:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("[4xx] wait left before the next try, by attempts made (s): {wait_left:?}");
    let early = wait_left
        .range(..=2)
        .map(|(_, v)| *v)
        .fold(f64::MIN, f64::max);
    let late = wait_left
        .range(4..)
        .map(|(_, v)| *v)
        .fold(f64::MIN, f64::max);
    assert!(
        early <= 0.45,
        "after 1-2 attempts the next try is at most 400 ms away: {wait_left:?}"
    );
    // How much of that delay a poll still sees depends on how soon it
    // comes; the delay itself is in the relay's log.
    assert!(
        late > 0.0,
        "after 4 attempts the next try is still ahead: {wait_left:?}"
    );
    let is_fourth_retry =
        |l: &serde_json::Value| l["message"] == "email not sent; will retry" && l["attempts"] == 4;
    let fourth: Vec<_> = w
        .log_lines_once("a fourth attempt put back", is_fourth_retry)
        .await
        .into_iter()
        .filter(is_fourth_retry)
        .collect();
    assert!(
        fourth.iter().all(|l| l["retry_in_ms"] == 1600),
        "after 4 attempts the delay has grown to 1.6 s: {fourth:?}"
    );

    activation_emails_reach(&w, "retry", (3 * n) as f64).await;
    assert_eq!(activation_emails(&w, "failed").await, 0.0, "nothing failed");
    assert_eq!(activation_emails(&w, "sent").await, 0.0, "nothing accepted");
    for to in &invitees {
        assert_eq!(w.smtp.count_to(to), 0, "451 means not delivered: {to}");
        let rows = email_rows(&w, to).await;
        assert!(
            rows.len() == 1 && !rows[0].failed && !rows[0].sent,
            "{to} is pending, not failed: {rows:?}"
        );
        let error = rows[0].last_error.clone().unwrap_or_default();
        assert!(
            error.contains("451"),
            "{to}: last_error names the answer: {error:?}"
        );
    }
    let before = figures(&w, "4xx, while refusing", &invitees).await;
    assert_eq!(before.delivered, 0);

    accepted_at_last(&w, &invitees, "4xx, after accepting").await;
    assert_eq!(
        w.count("SELECT count(*) FROM outbox WHERE kind = 'email' AND failed_at IS NOT NULL")
            .await,
        0,
        "no row marked failed"
    );
}

#[tokio::test]
async fn a_5xx_answer_fails_the_email_at_once_and_later_emails_still_flow() {
    let (mut w, manager) = TestWorker::with_active_manager(&[]).await;
    w.smtp.answer_with(Answer::Permanent);
    let refused = invite_one(&mut w, &manager, "gone@acme.example").await;

    // A permanent answer is not retried.
    let row = given_up(&w, "5xx", &refused, 1, "550").await;
    assert_eq!(activation_emails(&w, "retry").await, 0.0, "not retried");
    let what = format!(
        "an ERROR log line about outbox row {} in target/test-logs/{}.log",
        row.id, w.prefix
    );
    eventually(&what, WAIT, || async {
        logged_as_error(&w, "email failed", row.id).then_some(())
    })
    .await;

    let later = accepted_again(&mut w, &manager, "5xx", &refused, "later@acme.example").await;
    each_got_exactly_one(&w, std::slice::from_ref(&later)).await;
    let still = email_rows(&w, &refused).await;
    assert!(
        still.len() == 1 && still[0].failed && still[0].attempts == 1,
        "the failed row is not tried again: {still:?}"
    );
}

#[tokio::test]
async fn emails_are_retried_while_the_smtp_server_is_down_and_each_goes_out_once_when_it_is_back() {
    let (mut w, manager) = TestWorker::with_active_manager(&[]).await;
    w.smtp.answer_with(Answer::Down);
    let n = 4;
    let invitees = invite_all(&mut w, &manager, "down", n).await;

    activation_emails_reach(&w, "retry", (2 * n) as f64).await;
    assert_eq!(activation_emails(&w, "failed").await, 0.0, "nothing failed");
    for to in &invitees {
        let rows = email_rows(&w, to).await;
        assert!(
            rows.len() == 1 && !rows[0].failed && !rows[0].sent && rows[0].last_error.is_some(),
            "{to} is pending with the reason: {rows:?}"
        );
    }
    println!(
        "[down] last_error while down: {:?}",
        email_rows(&w, &invitees[0]).await[0].last_error
    );
    let before = figures(&w, "down, while down", &invitees).await;
    assert_eq!(before.delivered, 0);

    accepted_at_last(&w, &invitees, "down, back up").await;
}

#[tokio::test]
async fn an_smtp_server_slower_than_mail_timeout_counts_as_a_retry_and_the_email_goes_out_once_when_fast()
 {
    let (mut w, manager) = TestWorker::with_active_manager(&[("MAIL_TIMEOUT", "1s")]).await;
    w.smtp.answer_with(Answer::Slow(Duration::from_secs(3)));
    let to = invite_one(&mut w, &manager, "slow@acme.example").await;

    // The worker must give up after MAIL_TIMEOUT and retry, not wait the
    // slow server out.
    let what = "a retry counted although the server is slower than MAIL_TIMEOUT";
    eventually(what, WAIT, || async {
        let retries = activation_emails(&w, "retry").await;
        if retries >= 1.0 {
            return Some(());
        }
        assert_eq!(
            w.smtp.count_to(&to),
            0,
            "the server greets only after 3 s, MAIL_TIMEOUT is 1 s: the send should have timed \
             out and been retried, but the worker waited the slow server out (retries counted: {})",
            activation_emails(&w, "retry").await
        );
        None
    })
    .await;
    assert_eq!(activation_emails(&w, "failed").await, 0.0, "nothing failed");
    assert_eq!(activation_emails(&w, "sent").await, 0.0, "nothing sent yet");
    let row = email_row_until(&w, &to, |r| r.last_error.is_some()).await;
    println!("[slow] row after the time-out: {row:?}");
    assert!(!row.failed && !row.sent, "{row:?}");
    assert_eq!(w.smtp.count_to(&to), 0);
    let recipients = vec![to.clone()];
    figures(&w, "slow, while slow", &recipients).await;

    w.smtp.answer_with(Answer::Accept);
    w.smtp.wait_for(&to, 1, WAIT).await;
    outbox_settles(&w).await;
    each_got_exactly_one(&w, &recipients).await;
    let f = figures(&w, "slow, fast again", &recipients).await;
    assert_eq!(f.sent, 1.0);
    assert_eq!(f.failed, 0.0);
    assert!(f.retried >= 1.0);
    assert_eq!(f.duplicates, 0);
}

#[tokio::test]
async fn an_email_queued_past_half_its_lease_has_its_claim_renewed_and_still_goes_out_once() {
    // One SMTP connection that takes 400 ms per message and a 2 s lease:
    // of 8 emails queued together, the later ones wait in the relay's queue
    // past half their lease. Sent on that claim they could be claimed and
    // sent again meanwhile; their claim must be renewed first.
    let (mut w, manager) =
        TestWorker::with_active_manager(&[("OUTBOX_LEASE", "2s"), ("MAIL_POOL_SIZE", "1")]).await;
    w.smtp
        .answer_with(Answer::SlowAccept(Duration::from_millis(400)));
    let recipients = invite_all(&mut w, &manager, "queued", 8).await;

    for to in &recipients {
        w.smtp.wait_for(to, 1, WAIT).await;
    }
    outbox_settles(&w).await;
    // A barrier, not a wait, before counting copies. A second copy would be
    // a row claimed again before it was marked sent (a claim takes only
    // unsent rows), so before the outbox settled, and the claimer queues
    // what it claims at once. The marker's email is written only now, so it
    // queues behind any such copy; with one send slot (MAIL_POOL_SIZE=1),
    // held until the row is marked, the relay sends its queue in order, one
    // at a time. Once the marker's email is in, every copy queued before it
    // has arrived too (or was dropped when its claim could not be renewed).
    let marker = invite_one(&mut w, &manager, "marker@acme.example").await;
    w.smtp.wait_for(&marker, 1, WAIT).await;
    let f = figures(&w, "queued past half the lease", &recipients).await;
    each_got_exactly_one(&w, &recipients).await;
    assert_eq!(f.duplicates, 0);
    assert_eq!(f.failed, 0.0);

    let log = w.log();
    let renewed = log
        .lines()
        .filter(|l| l.contains("claim renewed before sending"))
        .count();
    println!("[queued past half the lease] {renewed} claim(s) renewed");
    assert!(
        renewed > 0,
        "8 emails at 400 ms each on one connection outlast half a 2 s lease: \
         some claims must have been renewed"
    );
}

#[tokio::test]
async fn an_email_refused_4xx_until_mail_max_attempts_is_marked_failed_with_the_reason() {
    let (mut w, manager) = TestWorker::with_active_manager(&[("MAIL_MAX_ATTEMPTS", "3")]).await;
    w.smtp.answer_with(Answer::Transient);
    let to = invite_one(&mut w, &manager, "never@acme.example").await;

    given_up(&w, "max attempts", &to, 3, "451").await;
    assert_eq!(activation_emails(&w, "retry").await, 2.0, "two retries");
    assert_eq!(activation_emails(&w, "sent").await, 0.0);
    assert_eq!(w.smtp.count_to(&to), 0);

    // Given up is final: once the server accepts, later emails flow and the
    // failed one is not sent after all.
    accepted_again(&mut w, &manager, "max attempts", &to, "marker@acme.example").await;
}

#[tokio::test]
async fn after_delivery_the_outbox_keeps_no_usable_token() {
    let (mut w, manager) = TestWorker::with_active_manager(&[]).await;
    // Refuse first: a pending row must still hold its token to be sent later.
    w.smtp.answer_with(Answer::Transient);
    let n = 3;
    let invitees = invite_all(&mut w, &manager, "tok", n).await;
    activation_emails_reach(&w, "retry", n as f64).await;
    let mut conn = w.db().await;
    let pending_with_token: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM outbox WHERE kind = 'email' AND payload->>'template' = 'activation'
           AND sent_at IS NULL AND failed_at IS NULL AND payload ? 'token'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(
        pending_with_token, n as i64,
        "until delivered, each row holds the token it must send"
    );

    w.smtp.answer_with(Answer::Accept);
    for to in &invitees {
        w.smtp.wait_for(to, 1, WAIT).await;
    }
    outbox_settles(&w).await;
    each_got_exactly_one(&w, &invitees).await;

    let delivered: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM outbox WHERE kind = 'email' AND payload->>'template' = 'activation'
           AND sent_at IS NOT NULL",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    let with_token: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM outbox WHERE kind = 'email' AND payload->>'template' = 'activation'
           AND sent_at IS NOT NULL AND payload ? 'token'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    println!(
        "[token] delivered activation rows {delivered}, of which holding a token {with_token}"
    );
    assert_eq!(delivered, n as i64 + 1, "the invitees' and the manager's");
    assert_eq!(with_token, 0, "no delivered row keeps a token");

    for to in &invitees {
        let token = w.smtp.mail_to(to).await.token("/activate");
        let anywhere: i64 =
            sqlx::query_scalar("SELECT count(*) FROM outbox WHERE strpos(payload::text, $1) > 0")
                .bind(&token)
                .fetch_one(&mut conn)
                .await
                .unwrap();
        assert_eq!(anywhere, 0, "{to}: the token is nowhere in the outbox");
        let activated = w
            .send("activate_user", serde_json::json!({"token": token}), None)
            .await;
        assert_eq!(
            activated["status"], "applied",
            "{to}: the emailed token works: {activated}"
        );
    }
    let f = figures(&w, "token", &invitees).await;
    assert_eq!(f.sent, n as f64);
    assert_eq!(f.duplicates, 0);
}

/// Invites five users (`tag`) and waits until each got exactly one email;
/// returns them with the messages received in all and the envelopes that
/// arrived pipelined, printed under `label`.
async fn emailed_once(
    w: &mut TestWorker,
    manager: &str,
    tag: &str,
    label: &str,
) -> (Vec<String>, usize, usize) {
    let recipients = invite_all_emailed(w, manager, tag, 5).await;
    each_got_exactly_one(w, &recipients).await;
    let (received, pipelined) = (w.smtp.count(), w.smtp.pipelined());
    println!("[{label}] {received} message(s), {pipelined} envelope(s) pipelined");
    (recipients, received, pipelined)
}

#[tokio::test]
async fn where_the_server_offers_pipelining_each_envelope_goes_in_one_go() {
    let (mut w, manager) = TestWorker::with_active_manager(&[]).await;
    let (recipients, received, pipelined) =
        emailed_once(&mut w, &manager, "piped", "pipelining offered").await;
    assert!(received >= recipients.len());
    assert_eq!(
        pipelined, received,
        "every message's MAIL, RCPT and DATA arrived together"
    );
}

#[tokio::test]
async fn where_the_server_does_not_offer_pipelining_each_command_waits_for_its_reply() {
    let mut w = TestWorker::start().await;
    w.smtp.stop_offering_pipelining();
    let manager = w.onboard_active_manager("acme", "boss@acme.example").await;
    let (recipients, received, pipelined) =
        emailed_once(&mut w, &manager, "stepwise", "pipelining not offered").await;
    assert!(received > recipients.len(), "the manager's and the invites");
    assert_eq!(
        pipelined, 0,
        "no command was sent before the last was answered"
    );
}

#[tokio::test]
async fn a_server_that_refuses_a_second_ehlo_still_gets_every_email_one_command_at_a_time() {
    let mut w = TestWorker::start().await;
    w.smtp.refuse_second_ehlo();
    let manager = w.onboard_active_manager("acme", "boss@acme.example").await;
    let recipients = invite_all_emailed(&mut w, &manager, "strict", 3).await;
    each_got_exactly_one(&w, &recipients).await;
    let f = figures(&w, "one ehlo", &recipients).await;
    assert_eq!(f.retried, 0.0, "the refused EHLO cost no email an attempt");
    assert_eq!(
        w.smtp.pipelined(),
        0,
        "unknown whether offered: not pipelined"
    );
}

#[tokio::test]
async fn a_recipient_refused_in_a_pipelined_envelope_fails_that_email_at_once_and_later_emails_flow()
 {
    let (mut w, manager) = TestWorker::with_active_manager(&[]).await;
    w.smtp.answer_with(Answer::RefuseRecipient);
    let refused = invite_one(&mut w, &manager, "nobody@acme.example").await;

    let row = email_row_until(&w, &refused, |r| r.failed).await;
    println!("[rcpt 550] failed row: {row:?}");
    assert_eq!(row.attempts, 1, "a refused mailbox is not retried");
    let error = row.last_error.clone().unwrap_or_default();
    assert!(
        error.contains("550"),
        "last_error names the answer: {error:?}"
    );

    // The refused dialogue's connection still has DATA's reply on its
    // way: reused, the next message would read it as its own and fail.
    w.smtp.answer_with(Answer::Accept);
    let later = invite_all_emailed(&mut w, &manager, "after", 3).await;
    let mut recipients = later.clone();
    recipients.push(refused.clone());
    let f = figures(&w, "rcpt 550", &recipients).await;
    each_got_exactly_one(&w, &later).await;
    assert_eq!(w.smtp.count_to(&refused), 0);
    assert_eq!(f.failed, 1.0);
    assert_eq!(f.retried, 0.0, "no later email met a stale reply");
    assert_eq!(f.sent, later.len() as f64);
    assert!(w.smtp.pipelined() > 0, "the dialogue was pipelined");
}

/// Sends a message built as the relay builds them, whose text and HTML
/// have lines that begin with dots, through a mailer of its own to `smtp`;
/// returns what arrived.
async fn dotted_message_through(
    smtp: &crate::helpers::smtp::SmtpServer,
    to: &str,
) -> crate::helpers::smtp::Mail {
    use user_lifecycle::config::MailUrl;
    use user_lifecycle::mail::{Mailer, Rendered, message};
    let from: lettre::message::Mailbox = "Portal <noreply@portal.example>".parse().unwrap();
    let mailer = Mailer::new(
        &MailUrl::parse(&smtp.url()).unwrap(),
        from.clone(),
        Duration::from_secs(10),
        1,
    )
    .unwrap();
    let rendered = Rendered {
        subject: "Dots".into(),
        text: DOTTED_TEXT.into(),
        html: format!("<p>\n{DOTTED_TEXT}</p>\n"),
    };
    let id = message::message_id(uuid::Uuid::new_v4(), &from);
    let built = message::build(&from, to.parse().unwrap(), id, rendered).unwrap();
    mailer.send(built).await.expect("the server accepted it");
    smtp.wait_for(to, 1, WAIT).await.remove(0)
}

/// Lines that SMTP must dot-stuff, one that is a lone dot among them.
const DOTTED_TEXT: &str = ".starts with a dot\n..two dots\n.\nnot.at the start\n";

#[tokio::test]
async fn lines_that_begin_with_a_dot_arrive_as_written_pipelined_or_not() {
    let smtp = crate::helpers::smtp::SmtpServer::start().await;
    let piped = dotted_message_through(&smtp, "piped@dots.example").await;
    assert_eq!(smtp.pipelined(), 1, "sent pipelined");

    let stepwise_server = crate::helpers::smtp::SmtpServer::start().await;
    stepwise_server.stop_offering_pipelining();
    let stepwise = dotted_message_through(&stepwise_server, "stepwise@dots.example").await;
    assert_eq!(stepwise_server.pipelined(), 0, "sent one command at a time");

    for (how, mail) in [("pipelined", &piped), ("one command at a time", &stepwise)] {
        let raw = String::from_utf8_lossy(&mail.raw);
        assert!(
            raw.contains("\r\n.starts with a dot\r\n..two dots\r\n.\r\n"),
            "{how}: the text went as it is, its lines starting with dots: {raw}"
        );
        assert_eq!(
            mail.text().replace("\r\n", "\n"),
            DOTTED_TEXT,
            "{how}: the text as written"
        );
        assert!(
            mail.html().replace("\r\n", "\n").contains(DOTTED_TEXT),
            "{how}: the HTML as written: {}",
            mail.html()
        );
    }
}
