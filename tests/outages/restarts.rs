//! RabbitMQ and PostgreSQL restarted under load: the worker notices, waits
//! the outage out, recovers, and nothing is lost or applied twice.
//!
//! These tests stop shared services, so they run one at a time and only in
//! this test binary (cargo runs test binaries one after another).

use crate::helpers::{LOAD, LoadTally, TestWorker, eventually, invite_envelopes};
use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

static EXCLUSIVE: Mutex<()> = Mutex::const_new(());

async fn run(program: &str, args: &[&str]) {
    let (program, args) = (
        program.to_owned(),
        args.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
    );
    let status = tokio::task::spawn_blocking(move || Command::new(&program).args(&args).status())
        .await
        .unwrap()
        .expect("run a service command");
    assert!(status.success(), "service command failed: {status}");
}

fn pg_version() -> String {
    std::fs::read_dir("/etc/postgresql")
        .expect("PostgreSQL cluster config")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .next()
        .expect("a cluster")
}

#[tokio::test]
async fn a_rabbitmq_restart_under_load_loses_nothing_and_applies_nothing_twice() {
    let _only_me = EXCLUSIVE.lock().await;
    const N: usize = 800;
    let (mut w, manager) = TestWorker::with_active_manager(&[]).await;
    let ids = w
        .publish_all(&invite_envelopes(&manager, "acme", "b", N))
        .await;
    for _ in 0..50 {
        w.client
            .next_reply(Duration::from_secs(30))
            .await
            .expect("progress before the outage");
    }

    let down_at = Instant::now();
    run("rabbitmqctl", &["-q", "stop_app"]).await;
    eventually("broker_connected 0", Duration::from_secs(30), || async {
        (w.metric("user_lifecycle_broker_connected").await == Some(0.0)).then_some(())
    })
    .await;
    let (ready, _) = w.http_get("/readyz").await.expect("readyz answers");
    assert_eq!(ready, 503, "not ready without the broker");
    let applied_during_outage = w.load_tally().await.users;
    run("rabbitmqctl", &["-q", "start_app"]).await;
    run("rabbitmqctl", &["-q", "await_startup"]).await;
    eventually("reconnect", Duration::from_secs(60), || async {
        (w.metric("user_lifecycle_broker_connected").await == Some(1.0)).then_some(())
    })
    .await;
    let outage = down_at.elapsed();
    w.wait_ready().await;
    w.reconnect_amqp().await;

    eventually("every invite applied", Duration::from_secs(120), || async {
        let applied = w.load_tally().await.users;
        (applied == N as i64).then_some(()).ok_or(applied)
    })
    .await;
    w.load_emails(N, Duration::from_secs(120)).await;
    w.outbox_drained(Duration::from_secs(60)).await;
    let per = w.smtp.per_recipient(LOAD);
    let duplicate_emails: usize = per.values().map(|n| n - 1).sum();
    let LoadTally {
        processed,
        audit,
        dead,
        ..
    } = w.load_tally().await;
    let reconnects = w
        .metric("user_lifecycle_broker_reconnects_total")
        .await
        .unwrap_or(0.0);
    let duplicates = w
        .metric("user_lifecycle_commands_total{type=\"invite_user\",outcome=\"duplicate\"}")
        .await
        .unwrap_or(0.0);
    println!(
        "RabbitMQ restart under load: commands sent {N}, applied during the outage {applied_during_outage}, outage {outage:?}, \
         reconnects {reconnects}, applied {processed}, duplicates suppressed {duplicates}, emails delivered {}, \
         duplicate emails {duplicate_emails}, dead-lettered {dead}",
        per.values().sum::<usize>()
    );
    assert_eq!(ids.len(), N);
    assert_eq!(processed, N as i64, "each command applied exactly once");
    assert_eq!(audit, N as i64);
    assert_eq!(
        duplicate_emails, 0,
        "the email lane does not depend on the broker"
    );
    assert!(reconnects >= 1.0);
    assert_eq!(dead, 0);
}

#[tokio::test]
async fn a_postgresql_restart_under_load_pauses_consumption_and_loses_nothing() {
    let _only_me = EXCLUSIVE.lock().await;
    const N: usize = 800;
    const SENDS_IN_FLIGHT: usize = 4;
    // A lease shorter than the outage: an email whose mark is not written
    // is sent again within the test.
    let (mut w, manager) =
        TestWorker::with_active_manager(&[("MAIL_POOL_SIZE", "4"), ("OUTBOX_LEASE", "5s")]).await;
    let ids = w
        .publish_all(&invite_envelopes(&manager, "acme", "p", N))
        .await;
    let mut replies: HashMap<String, Vec<serde_json::Value>> = HashMap::new();
    for _ in 0..50 {
        let (id, reply) = w
            .client
            .next_reply(Duration::from_secs(30))
            .await
            .expect("progress before the outage");
        replies.entry(id).or_default().push(reply);
    }

    let version = pg_version();
    let down_at = Instant::now();
    run(
        "pg_ctlcluster",
        &[
            "--skip-systemctl-redirect",
            &version,
            "main",
            "stop",
            "-m",
            "fast",
        ],
    )
    .await;
    eventually(
        "not ready without the database",
        Duration::from_secs(30),
        || async { matches!(w.http_get("/readyz").await, Ok((503, _))).then_some(()) },
    )
    .await;
    // The outage outlasts the lease and the pool's wait for a connection
    // (5 s) twice over: that is the subject.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let (live, _) = w.http_get("/healthz").await.expect("the process stays up");
    assert_eq!(live, 200);
    run(
        "pg_ctlcluster",
        &["--skip-systemctl-redirect", &version, "main", "start"],
    )
    .await;
    w.wait_ready().await;
    let outage = down_at.elapsed();

    w.replies_for_missing(&ids, &mut replies, Duration::from_secs(180))
        .await;
    for id in &ids {
        let got = replies
            .get(id)
            .unwrap_or_else(|| panic!("no reply for {id}"));
        assert!(
            got.iter().any(|r| r["status"] == "applied"),
            "{id}: {got:?}"
        );
    }
    let duplicate_replies: usize = replies
        .values()
        .flatten()
        .filter(|r| r["duplicate"] == true)
        .count();
    w.load_emails(N, Duration::from_secs(120)).await;
    // Every row marked sent: what a mark not written left unsent has been
    // sent again by now, so the duplicates counted are all there are.
    w.outbox_drained(Duration::from_secs(60)).await;
    let per = w.smtp.per_recipient(LOAD);
    let duplicate_emails: usize = per.values().map(|n| n - 1).sum();
    let LoadTally {
        users,
        processed,
        dead,
        ..
    } = w.load_tally().await;
    println!(
        "PostgreSQL restart under load: commands sent {N}, outage {outage:?}, applied {users}, duplicates suppressed \
         (duplicate replies) {duplicate_replies}, emails delivered {}, duplicate emails {duplicate_emails}, dead-lettered {dead}",
        per.values().sum::<usize>()
    );
    assert_eq!(users, N as i64, "nothing lost, nothing applied twice");
    assert_eq!(processed, N as i64);
    assert_eq!(
        dead, 0,
        "a database outage is waited out, not dead-lettered"
    );
    assert!(
        duplicate_emails <= SENDS_IN_FLIGHT,
        "duplicate emails ({duplicate_emails}): at most the sends in flight when the database \
         went away ({SENDS_IN_FLIGHT}), however long it stays away"
    );
}
