//! The contract's metrics (prefix `user_lifecycle_`), named once, here.
//!
//! Adapters call these functions instead of spelling metric names, so a
//! rename cannot happen by accident in one place.

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::time::Duration;

use crate::domain::command::CommandType;
use crate::domain::notification::Template;

const COMMANDS: &str = "user_lifecycle_commands_total";
const COMMAND_DURATION: &str = "user_lifecycle_command_duration_seconds";
const EMAILS: &str = "user_lifecycle_emails_total";
const OUTBOX_PENDING: &str = "user_lifecycle_outbox_pending";
const OUTBOX_OLDEST: &str = "user_lifecycle_outbox_oldest_age_seconds";
const INVITES_EXPIRED: &str = "user_lifecycle_invites_expired_total";
const SCHEDULER_RUNS: &str = "user_lifecycle_scheduler_runs_total";
const SCHEDULER_LAST_SUCCESS: &str = "user_lifecycle_scheduler_last_success_timestamp_seconds";
const DEAD_LETTERED: &str = "user_lifecycle_dead_lettered_total";
const BROKER_CONNECTED: &str = "user_lifecycle_broker_connected";
const USERS: &str = "user_lifecycle_users";
const BROKER_RECONNECTS: &str = "user_lifecycle_broker_reconnects_total";
const INVITES: &str = "user_lifecycle_invites_total";
const TIME_TO_ACTIVATE: &str = "user_lifecycle_invite_time_to_activate_seconds";
const EMAIL_DURATION: &str = "user_lifecycle_email_send_duration_seconds";
const SCHEDULER_DURATION: &str = "user_lifecycle_scheduler_duration_seconds";
const BATCHES: &str = "user_lifecycle_command_batches_total";
const EXPIRY_BATCH: &str = "user_lifecycle_expiry_batch_seconds";
const EMAIL_KEY_COLLISIONS: &str = "user_lifecycle_email_key_collisions_total";

/// Installs the Prometheus recorder and describes every metric.
pub fn install() -> Result<PrometheusHandle, metrics_exporter_prometheus::BuildError> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(COMMAND_DURATION.to_owned()),
            &[
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ],
        )?
        .set_buckets_for_metric(
            Matcher::Full(TIME_TO_ACTIVATE.to_owned()),
            &[
                60.0,
                300.0,
                900.0,
                3600.0,
                4.0 * 3600.0,
                86_400.0,
                2.0 * 86_400.0,
                4.0 * 86_400.0,
                7.0 * 86_400.0,
                14.0 * 86_400.0,
            ],
        )?
        .set_buckets_for_metric(
            Matcher::Full(EMAIL_DURATION.to_owned()),
            &[
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ],
        )?
        .set_buckets_for_metric(
            Matcher::Full(SCHEDULER_DURATION.to_owned()),
            &[0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0],
        )?
        .set_buckets_for_metric(
            Matcher::Full(EXPIRY_BATCH.to_owned()),
            &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5],
        )?
        .install_recorder()?;
    describe();
    metrics_process::Collector::default().describe();
    broker_connected(false);
    // Series that alerts take `increase()` of exist from the start at 0, so
    // their first event counts.
    for reason in [
        "not_json",
        "not_envelope",
        "unknown_type",
        "too_large",
        "invalid_data",
        "transient",
        "bad_reply_to",
    ] {
        counter!(DEAD_LETTERED, "reason" => reason).increment(0);
    }
    for template in Template::ALL {
        for outcome in ["sent", "retry", "failed"] {
            counter!(EMAILS, "template" => template.as_str(), "outcome" => outcome).increment(0);
        }
    }
    for kind in CommandType::ALL {
        counter!(COMMANDS, "type" => kind.as_str(), "outcome" => "error").increment(0);
    }
    for outcome in ["invited", "activated", "expired", "removed"] {
        counter!(INVITES, "outcome" => outcome).increment(0);
    }
    for written in ["one_statement", "transaction", "missed"] {
        counter!(BATCHES, "written" => written).increment(0);
    }
    Ok(handle)
}

/// Counters and what they count.
const COUNTERS: &[(&str, &str)] = &[
    (
        COMMANDS,
        "Commands handled, by type and outcome (applied, rejected, invalid, duplicate, error).",
    ),
    (
        EMAILS,
        "Email delivery attempts by template and outcome (sent, retry, failed).",
    ),
    (
        INVITES_EXPIRED,
        "Invitations the expiry sweep marked expired.",
    ),
    (
        SCHEDULER_RUNS,
        "Scheduled job runs by job and outcome (ok, error, skipped).",
    ),
    (
        DEAD_LETTERED,
        "Messages sent to the dead-letter queue, by reason.",
    ),
    (
        BROKER_RECONNECTS,
        "Successful reconnections to RabbitMQ after a lost connection.",
    ),
    (
        INVITES,
        "The invite funnel: invitations by outcome (invited, activated, expired, removed).",
    ),
    (
        BATCHES,
        "Batches of commands written together, by how: one_statement (invites against an actor and organization known to be unchanged, one statement that commits on its own), transaction, or missed (a one-statement attempt found something changed or taken and wrote nothing; the batch went the transaction way).",
    ),
    (
        EMAIL_KEY_COLLISIONS,
        "Users found at start-up sharing one email key with an older user (each logged as a warning naming both).",
    ),
];

/// Gauges, whether they are in seconds, and what they show.
const GAUGES: &[(&str, bool, &str)] = &[
    (
        OUTBOX_PENDING,
        false,
        "Outbox rows (emails, events, replies) not yet delivered.",
    ),
    (
        OUTBOX_OLDEST,
        true,
        "Age of the oldest undelivered outbox row.",
    ),
    (
        SCHEDULER_LAST_SUCCESS,
        true,
        "Unix time of each job's last successful run.",
    ),
    (
        BROKER_CONNECTED,
        false,
        "1 while the RabbitMQ connection is up, else 0.",
    ),
    (USERS, false, "Users by status."),
];

/// Histograms (all in seconds) and what they time.
const HISTOGRAMS: &[(&str, &str)] = &[
    (
        COMMAND_DURATION,
        "Time to handle one command, delivery to commit.",
    ),
    (TIME_TO_ACTIVATE, "Time from invitation to activation."),
    (
        EMAIL_DURATION,
        "Time of one email send attempt, by template and outcome.",
    ),
    (
        SCHEDULER_DURATION,
        "Duration of scheduled job runs, by job.",
    ),
    (
        EXPIRY_BATCH,
        "How long each expiry sweep transaction held its row locks, first statement to commit.",
    ),
];

/// Describes every series of the worker's own.
fn describe() {
    for &(name, help) in COUNTERS {
        describe_counter!(name, help);
    }
    for &(name, seconds, help) in GAUGES {
        if seconds {
            describe_gauge!(name, metrics::Unit::Seconds, help);
        } else {
            describe_gauge!(name, help);
        }
    }
    for &(name, help) in HISTOGRAMS {
        describe_histogram!(name, metrics::Unit::Seconds, help);
    }
}

/// A command finished with `outcome` after `elapsed`.
pub fn command(kind: &'static str, outcome: &'static str, elapsed: Duration) {
    counter!(COMMANDS, "type" => kind, "outcome" => outcome).increment(1);
    histogram!(COMMAND_DURATION, "type" => kind).record(elapsed.as_secs_f64());
}

/// An email attempt ended with `outcome` (sent, retry, failed).
pub fn email(template: &'static str, outcome: &'static str) {
    counter!(EMAILS, "template" => template, "outcome" => outcome).increment(1);
}

/// Outbox backlog figures.
pub fn outbox(pending: i64, oldest_age_seconds: f64) {
    gauge!(OUTBOX_PENDING).set(pending as f64);
    gauge!(OUTBOX_OLDEST).set(oldest_age_seconds);
}

/// The sweep expired `n` invitations.
pub fn invites_expired(n: u64) {
    counter!(INVITES_EXPIRED).increment(n);
}

/// A scheduled job ran with `outcome`.
pub fn scheduler_run(job: &'static str, outcome: &'static str) {
    counter!(SCHEDULER_RUNS, "job" => job, "outcome" => outcome).increment(1);
    if outcome == "ok" {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        gauge!(SCHEDULER_LAST_SUCCESS, "job" => job).set(now);
    }
}

/// A message was dead-lettered for `reason`.
pub fn dead_lettered(reason: &'static str) {
    counter!(DEAD_LETTERED, "reason" => reason).increment(1);
}

/// The broker connection went up or down.
pub fn broker_connected(up: bool) {
    gauge!(BROKER_CONNECTED).set(if up { 1.0 } else { 0.0 });
}

/// The worker reconnected to RabbitMQ.
pub fn broker_reconnected() {
    counter!(BROKER_RECONNECTS).increment(1);
}

/// The invite funnel moved: `outcome` is invited, activated, expired or removed.
pub fn invites(outcome: &'static str, n: u64) {
    counter!(INVITES, "outcome" => outcome).increment(n);
}

/// A batch of commands was written `written` (one_statement, transaction or missed).
pub fn batch(written: &'static str) {
    counter!(BATCHES, "written" => written).increment(1);
}

/// An invited user activated `after` its invitation.
pub fn time_to_activate(after: Duration) {
    histogram!(TIME_TO_ACTIVATE).record(after.as_secs_f64());
}

/// One email send attempt of `template` took `elapsed` and ended with `outcome`.
pub fn email_send(template: &'static str, outcome: &'static str, elapsed: Duration) {
    histogram!(EMAIL_DURATION, "template" => template, "outcome" => outcome)
        .record(elapsed.as_secs_f64());
}

/// An expiry sweep transaction held its row locks for `held`.
pub fn expiry_batch(held: Duration) {
    histogram!(EXPIRY_BATCH).record(held.as_secs_f64());
}

/// A run of scheduled `job` took `elapsed`.
pub fn scheduler_duration(job: &'static str, elapsed: Duration) {
    histogram!(SCHEDULER_DURATION, "job" => job).record(elapsed.as_secs_f64());
}

/// Users with `status`.
pub fn users(status: &'static str, count: i64) {
    gauge!(USERS, "status" => status).set(count as f64);
}

/// `n` users were found sharing an email key with an older user.
pub fn email_key_collisions(n: usize) {
    counter!(EMAIL_KEY_COLLISIONS).increment(n as u64);
}
