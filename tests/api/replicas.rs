//! Several workers on one queue and one database: every effect once, each
//! scheduled job run by one replica at a time, no email sent twice.

use crate::helpers::{TestWorker, eventually, invite_envelopes};
use std::time::Duration;

fn metric_sum(texts: &[String], series: &str) -> f64 {
    texts
        .iter()
        .flat_map(|t| t.lines())
        .filter(|l| l.starts_with(series))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn three_workers_apply_every_command_once_and_expire_every_invite_once() {
    const N: usize = 600;
    let (mut w, manager) = TestWorker::with_active_manager(&[
        ("ACTIVATION_TTL", "4s"),
        ("EXPIRY_SCHEDULE", "* * * * * *"),
        ("EXPIRY_BATCH_SIZE", "50"),
    ])
    .await;
    w.spawn_replica().await;
    w.spawn_replica().await;

    let ids = w
        .publish_all(&invite_envelopes(&manager, "acme", "r", N))
        .await;
    let replies = w.replies_for(&ids, Duration::from_secs(120)).await;
    let applied = ids
        .iter()
        .filter(|id| {
            replies
                .get(*id)
                .is_some_and(|r| r.iter().any(|r| r["status"] == "applied"))
        })
        .count();
    assert_eq!(applied, N, "every command answered applied");

    // Every invitation expires (nobody activates): one event and one manager email each.
    let what = format!("{N} expiry notices to the manager");
    let expired_mails = eventually(&what, Duration::from_secs(120), || async {
        let to_manager = w.smtp.count_to("boss@acme.example");
        // One activation email from the set-up, then one notice per expired invite.
        (to_manager > N).then_some(to_manager - 1).ok_or(to_manager)
    })
    .await;
    // The activation emails go out apart from the notices: wait for them too.
    let what = format!("activation emails to {N} invitees");
    let per_invitee = eventually(&what, Duration::from_secs(60), || async {
        let per_invitee = w.smtp.per_recipient("@load.example");
        (per_invitee.len() >= N).then_some(per_invitee)
    })
    .await;
    let users = w
        .count("SELECT count(*) FROM users WHERE email LIKE '%@load.example'")
        .await;
    let expired = w
        .count("SELECT count(*) FROM users WHERE status = 'expired'")
        .await;
    let expiry_events = w
        .count("SELECT count(*) FROM outbox WHERE kind = 'event' AND payload->>'routing_key' = 'user.invite_expired'")
        .await;
    let expiry_audit = w
        .count("SELECT count(*) FROM audit_log WHERE action = 'user.invite_expired'")
        .await;
    let metrics = w.all_metrics().await;
    let runs_ok = metric_sum(
        &metrics,
        "user_lifecycle_scheduler_runs_total{job=\"expiry\",outcome=\"ok\"}",
    );
    let runs_skipped = metric_sum(
        &metrics,
        "user_lifecycle_scheduler_runs_total{job=\"expiry\",outcome=\"skipped\"}",
    );
    let handled: Vec<f64> = metrics
        .iter()
        .map(|m| {
            metric_sum(
                std::slice::from_ref(m),
                "user_lifecycle_commands_total{type=\"invite_user\",outcome=\"applied\"}",
            )
        })
        .collect();
    println!(
        "three replicas: commands sent {N}, applied {users}, handled per replica {handled:?}, activation emails {}, \
         duplicate activation emails {}, expired {expired}, expiry events {expiry_events}, expiry emails {expired_mails}, \
         sweep runs ok {runs_ok} skipped (another replica held the lock) {runs_skipped}",
        per_invitee.values().sum::<usize>(),
        per_invitee.values().map(|n| n - 1).sum::<usize>(),
    );
    assert_eq!(users, N as i64);
    assert_eq!(per_invitee.len(), N, "every invitee emailed");
    assert!(
        per_invitee.values().all(|n| *n == 1),
        "no activation email twice"
    );
    assert_eq!(expired, N as i64);
    assert_eq!(expiry_events, N as i64, "one expiry event per invitation");
    assert_eq!(expiry_audit, N as i64);
    assert_eq!(
        expired_mails, N,
        "one notice per expired invitation, none twice"
    );
    assert!(
        handled.iter().filter(|n| **n > 0.0).count() >= 2,
        "the replicas shared the work: {handled:?}"
    );
}
