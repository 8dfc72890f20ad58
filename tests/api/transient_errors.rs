//! A command that fails for a transient reason (here: a row another
//! transaction keeps locked past `DATABASE_LOCK_TIMEOUT`) is retried a
//! bounded number of times with delays, then dead-lettered with the reason,
//! and nothing of it is applied; it never blocks the commands behind it; once
//! the cause is gone, replaying it from the dead-letter queue applies it.

use crate::helpers::{RowLock, TestWorker, WAIT, invite_envelope, resend_envelope};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const SETTINGS: &[(&str, &str)] = &[
    ("DATABASE_LOCK_TIMEOUT", "200ms"),
    ("COMMAND_MAX_DELIVERIES", "2"),
    ("RESEND_COOLDOWN", "0s"),
];

/// Whether the command `id` has an idempotency record (was applied).
async fn processed(w: &TestWorker, id: &str) -> bool {
    let mut conn = w.db().await;
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM processed_commands WHERE command_id = $1)")
        .bind(id)
        .fetch_one(&mut conn)
        .await
        .unwrap()
}

/// Counts the worker's waits for a row lock in its database: each rising
/// edge of "some session waits on a lock" is one attempt that got
struct LockWaits {
    seen: Arc<AtomicUsize>,
    waiting: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl LockWaits {
    async fn watch(w: &TestWorker) -> LockWaits {
        let mut conn = w.db().await;
        let seen = Arc::new(AtomicUsize::new(0));
        let waiting = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, wt, st) = (seen.clone(), waiting.clone(), stop.clone());
        let task = tokio::spawn(async move {
            while !st.load(Ordering::SeqCst) {
                let n: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM pg_stat_activity
                     WHERE datname = current_database() AND wait_event_type = 'Lock'",
                )
                .fetch_one(&mut conn)
                .await
                .unwrap();
                let now = n > 0;
                if now && !wt.load(Ordering::SeqCst) {
                    s.fetch_add(1, Ordering::SeqCst);
                }
                wt.store(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        LockWaits {
            seen,
            waiting,
            stop,
            task,
        }
    }

    fn seen(&self) -> usize {
        self.seen.load(Ordering::SeqCst)
    }

    fn waiting(&self) -> bool {
        self.waiting.load(Ordering::SeqCst)
    }

    /// Polls until `done(self)` holds.
    async fn until(&self, what: &str, done: impl Fn(&LockWaits) -> bool) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !done(self) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what} within {WAIT:?} (lock waits seen: {})",
                self.seen()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn stop(self) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        let seen = self.seen();
        self.task.await.unwrap();
        seen.max(self.seen.load(Ordering::SeqCst))
    }
}

/// X, whose row the lock tests hold.
const X: &str = "xavier@acme.example";

/// Where each lock test starts: X's activation resent while the test holds
/// X's row (another transaction, as far as the worker knows), once the
/// worker has been seen waiting for that lock.
struct Stuck {
    manager: String,
    x_id: String,
    lock: RowLock,
    waits: LockWaits,
    resend: serde_json::Value,
    resend_id: String,
    started: Instant,
}

async fn a_resend_stuck_on_xs_lock() -> (TestWorker, Stuck) {
    let mut w = TestWorker::start_with(SETTINGS).await;
    let manager = w.onboard_active_manager("acme", "boss@acme.example").await;
    let x_id = w.invited_user(&manager, "acme", X).await;

    let lock = w.lock_user_row(X).await;
    let waits = LockWaits::watch(&w).await;

    let resend = resend_envelope(&manager, &x_id);
    let started = Instant::now();
    let resend_id = w.publish(&resend).await;
    waits
        .until("the resend should wait for X's lock", |l| l.seen() >= 1)
        .await;
    let stuck = Stuck {
        manager,
        x_id,
        lock,
        waits,
        resend,
        resend_id,
        started,
    };
    (w, stuck)
}

#[tokio::test]
async fn a_command_stuck_on_a_lock_is_retried_then_dead_lettered_without_blocking_the_queue_and_a_replay_applies_it()
 {
    let (mut w, stuck) = a_resend_stuck_on_xs_lock().await;
    let x = X;

    // A command behind the stuck one is applied meanwhile.
    let y = "yara@acme.example";
    let y_id = w.publish(&invite_envelope(&stuck.manager, "acme", y)).await;
    let replies = w.replies_for(std::slice::from_ref(&y_id), WAIT).await;
    let y_after = stuck.started.elapsed();
    let y_reply = replies
        .get(&y_id)
        .and_then(|r| r.first())
        .expect("Y's invite is answered while X is locked");
    assert_eq!(y_reply["status"], "applied", "{y_reply}");
    assert_eq!(
        w.metric(r#"user_lifecycle_dead_lettered_total{reason="transient"}"#)
            .await,
        Some(0.0),
        "Y was answered before the stuck command was dead-lettered"
    );
    assert_eq!(w.dead_letters_waiting().await, 0);
    assert!(
        !replies.contains_key(&stuck.resend_id),
        "no answer for the stuck command yet: {replies:?}"
    );
    w.smtp.mail_to(y).await;

    // The stuck command ends in the dead-letter queue, with the reason.
    let dead = w.dead_letter().await;
    let dead_after = stuck.started.elapsed();
    assert_eq!(dead.reason, "transient", "x-error: {:?}", dead.error);
    assert!(
        dead.error.to_lowercase().contains("lock"),
        "x-error names the failure (lock timeout): {:?}",
        dead.error
    );
    dead.assert_body_is(&stuck.resend);
    w.metric_becomes(
        r#"user_lifecycle_dead_lettered_total{reason="transient"}"#,
        1.0,
    )
    .await;
    assert_eq!(w.dead_letters_waiting().await, 0, "dead-lettered once");
    let lock_waits = stuck.waits.seen();
    assert!(
        lock_waits >= 2,
        "retried: at least one lock wait per delivery, saw {lock_waits}"
    );
    // Without any delay, 2 deliveries would fail in a few lock timeouts;
    // the retries are spaced out (and still bounded).
    assert!(
        dead_after >= Duration::from_millis(2400),
        "retries are delayed, not immediate: dead-lettered after {dead_after:?}"
    );
    assert!(
        dead_after <= Duration::from_secs(15),
        "retries are bounded: dead-lettered after {dead_after:?}"
    );
    assert!(y_after < dead_after);

    // Nothing of it was applied.
    assert!(
        !processed(&w, &stuck.resend_id).await,
        "no idempotency record for the dead-lettered command"
    );
    assert_eq!(w.smtp.count_to(x), 1, "no resend email");
    // Nothing of it committed (no idempotency record, and its events would
    // have committed with one): no event of it can be on its way.
    assert!(
        w.events_of("user.activation_resent").await.is_empty(),
        "no user.activation_resent"
    );
    let errors = w
        .metric(r#"user_lifecycle_commands_total{type="resend_activation",outcome="error"}"#)
        .await
        .unwrap_or(0.0);
    let waits_total = stuck.waits.stop().await;
    println!(
        "[lock] Y answered after {y_after:?}; stuck command dead-lettered after {dead_after:?} \
         with x-error {:?}; lock waits {waits_total}; resend errors counted {errors}",
        dead.error
    );

    // Once the lock is gone, the replayed message is applied.
    stuck.lock.release().await;
    w.client
        .publish_raw("resend_activation", &dead.body, "replay")
        .await
        .expect("replayed");
    let replay = w.reply_for("replay", WAIT).await;
    assert_eq!(replay["status"], "applied", "{replay}");
    assert_eq!(
        replay["duplicate"], false,
        "applied now, not before: {replay}"
    );
    assert_eq!(replay["command_id"], stuck.resend_id.as_str());
    assert!(processed(&w, &stuck.resend_id).await);
    w.event("user.activation_resent", Some(&stuck.x_id)).await;
    let mails = w.smtp.wait_for(x, 2, WAIT).await;
    let token = mails[1].token("/activate");
    let activated = w.activate(&token).await;
    assert_eq!(
        activated["status"], "applied",
        "the new email's token works: {activated}"
    );
    println!(
        "[lock] replay applied; emails to X: {}, dead letters left: {}",
        w.smtp.count_to(x),
        w.dead_letters_waiting().await
    );
}

#[tokio::test]
async fn a_lock_released_between_in_process_retries_lets_the_command_apply_with_no_dead_letter() {
    let (mut w, stuck) = a_resend_stuck_on_xs_lock().await;
    let x = X;
    // The first attempt waits for the lock and gives up; release it then.
    stuck
        .waits
        .until("the first attempt should give up on the lock", |l| {
            !l.waiting()
        })
        .await;
    stuck.lock.release().await;

    let reply = w.reply_for(&stuck.resend_id, WAIT).await;
    let answered = stuck.started.elapsed();
    assert_eq!(reply["status"], "applied", "{reply}");
    assert_eq!(reply["duplicate"], false);
    w.event("user.activation_resent", Some(&stuck.x_id)).await;
    w.smtp.wait_for(x, 2, WAIT).await;
    let lock_waits = stuck.waits.stop().await;
    println!("[lock released] applied after {answered:?}; lock waits {lock_waits}");

    assert!(lock_waits >= 1);
    assert_eq!(
        w.metric(r#"user_lifecycle_dead_lettered_total{reason="transient"}"#)
            .await,
        Some(0.0),
        "not dead-lettered"
    );
    assert_eq!(w.dead_letters_waiting().await, 0);
    assert!(processed(&w, &stuck.resend_id).await);
    w.metric_becomes(
        r#"user_lifecycle_commands_total{type="resend_activation",outcome="applied"}"#,
        1.0,
    )
    .await;
    // A second application's event would have arrived past the barrier.
    w.events_barrier(&stuck.manager, "acme").await;
    assert!(
        w.events_of("user.activation_resent").await.is_empty(),
        "applied once: a single user.activation_resent"
    );
    assert_eq!(w.smtp.count_to(x), 2, "the invite and one resend email");
}
