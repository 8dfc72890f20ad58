//! The worker killed or stopped under load: every command applied exactly
//! once, every invitee emailed, duplicates bounded and reported.

use crate::helpers::{LOAD, LoadTally, TestWorker, invite_envelopes};
use serde_json::Value;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Waits until `n` replies of any command have arrived; returns them by correlation id.
async fn some_replies(w: &mut TestWorker, n: usize) -> HashMap<String, Vec<Value>> {
    let mut replies: HashMap<String, Vec<Value>> = HashMap::new();
    let mut count = 0;
    while count < n {
        let (id, reply) = w
            .client
            .next_reply(Duration::from_secs(60))
            .await
            .expect("progress");
        replies.entry(id).or_default().push(reply);
        count += 1;
    }
    replies
}

/// Collects replies until every id has its original one (or `timeout`). A
/// command committed just before the kill, its reply not yet published, is
/// answered as a duplicate as soon as it is redelivered, and originally
/// only once the dead worker's claim on that reply has lapsed
/// (`OUTBOX_LEASE`): the duplicate comes first.
async fn originals(
    w: &mut TestWorker,
    ids: &[String],
    replies: &mut HashMap<String, Vec<Value>>,
    timeout: Duration,
) {
    let deadline = Instant::now() + timeout;
    let has_original = |got: Option<&Vec<Value>>| {
        got.is_some_and(|got| got.iter().any(|r| r["duplicate"] == false))
    };
    while ids.iter().any(|id| !has_original(replies.get(id))) {
        let left = deadline.saturating_duration_since(Instant::now());
        match w.client.next_reply(left).await {
            Ok((id, reply)) => replies.entry(id).or_default().push(reply),
            Err(_) => return,
        }
    }
}

/// Every id got an `applied` original reply; returns how many duplicate replies came too.
fn check_replies(ids: &[String], replies: &HashMap<String, Vec<Value>>) -> usize {
    let mut duplicates = 0;
    for id in ids {
        let got = replies
            .get(id)
            .unwrap_or_else(|| panic!("no reply for {id}"));
        assert!(
            got.iter()
                .any(|r| r["status"] == "applied" && r["duplicate"] == false),
            "command {id} has no original applied reply: {got:?}"
        );
        duplicates += got.iter().filter(|r| r["duplicate"] == true).count();
    }
    duplicates
}

#[tokio::test]
async fn a_worker_killed_under_load_applies_every_command_exactly_once_after_restart() {
    const N: usize = 2000;
    let pool_size = 4;
    let (mut w, manager) =
        // A lease short enough for the killed worker's claims to be taken
        // over within the test, long enough that a mark delayed by the load
        // is written before the lease lets the row be claimed again.
        TestWorker::with_active_manager(&[("OUTBOX_LEASE", "10s"), ("MAIL_POOL_SIZE", "4")]).await;
    let envelopes = invite_envelopes(&manager, "acme", "k", N);
    let ids = w.publish_all(&envelopes).await;

    let mut replies = some_replies(&mut w, N / 4).await;
    let before_kill = replies.len();
    let emails_before_kill = w.smtp.count();
    w.kill();
    w.spawn();
    w.wait_ready().await;
    w.replies_for_missing(&ids, &mut replies, Duration::from_secs(180))
        .await;
    originals(&mut w, &ids, &mut replies, Duration::from_secs(60)).await;

    let duplicate_replies = check_replies(&ids, &replies);
    let emails = w.load_emails(N, Duration::from_secs(180)).await;
    assert_eq!(emails.len(), N, "every invitee got an activation email");
    // Every row delivered, those the killed worker had claimed included
    // (picked up after their lease): the duplicates counted are all there are.
    w.outbox_drained(Duration::from_secs(60)).await;
    let emails = w.smtp.per_recipient(LOAD);
    let duplicate_emails: usize = emails.values().map(|n| n - 1).sum();
    let LoadTally {
        users,
        processed,
        audit,
        ..
    } = w.load_tally().await;
    println!(
        "SIGKILL under load: commands sent {N}, replies before the kill {before_kill}, emails before the kill \
         {emails_before_kill}, applied {users}, duplicates suppressed (duplicate replies) {duplicate_replies}, \
         emails delivered {}, duplicate emails {duplicate_emails}",
        emails.values().sum::<usize>()
    );
    assert_eq!(users, N as i64, "each invite applied exactly once");
    assert_eq!(processed, N as i64);
    assert_eq!(audit, N as i64, "no effect twice");
    assert!(
        duplicate_emails <= pool_size,
        "duplicate emails ({duplicate_emails}) are bounded by the sends in flight at the kill ({pool_size})"
    );
    let failed = w
        .count("SELECT count(*) FROM outbox WHERE failed_at IS NOT NULL")
        .await;
    assert_eq!(failed, 0, "nothing given up on");
}

#[tokio::test]
async fn sigterm_under_load_finishes_in_flight_work_and_exits_zero() {
    const N: usize = 1000;
    let (mut w, manager) = TestWorker::with_active_manager(&[("SHUTDOWN_GRACE", "10s")]).await;
    let envelopes = invite_envelopes(&manager, "acme", "t", N);
    let ids = w.publish_all(&envelopes).await;
    let mut replies = some_replies(&mut w, 20).await;

    let stopping = Instant::now();
    let status = w.terminate().await;
    let took = stopping.elapsed();
    assert!(status.success(), "exit status {status}");
    assert!(
        took < Duration::from_secs(12),
        "stopped within the grace period, took {took:?}"
    );
    let before_restart = w.load_tally().await.users;

    w.spawn();
    w.wait_ready().await;
    w.replies_for_missing(&ids, &mut replies, Duration::from_secs(120))
        .await;
    let duplicate_replies = check_replies(&ids, &replies);
    let emails = w.load_emails(N, Duration::from_secs(120)).await;
    let users = w.load_tally().await.users;
    let duplicate_emails: usize = emails.values().map(|n| n - 1).sum();
    println!(
        "SIGTERM under load: commands sent {N}, applied before the stop {before_restart}, stop took {took:?}, \
         applied {users}, duplicate replies {duplicate_replies}, emails delivered {}, duplicate emails {duplicate_emails}",
        emails.values().sum::<usize>()
    );
    assert_eq!(users, N as i64);
    assert_eq!(emails.len(), N);
    assert_eq!(duplicate_emails, 0, "a graceful stop sends nothing twice");
    assert_eq!(
        duplicate_replies, 0,
        "nothing applied before the stop was redelivered"
    );
}
