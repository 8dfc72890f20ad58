//! The end-to-end run: N `invite_user` commands published to the running
//! worker, timed until every reply and every activation email has arrived.

use futures_util::StreamExt;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde::Serialize;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

use crate::machine::MachineCpu;
use crate::process::WorkerProcess;
use crate::run::BenchError;
use dev_support::Sink;
use user_lifecycle::broker::client::{CommandClient, private_reply_queue};

/// How long a run may go without a single reply or email before it fails.
const STALLED_AFTER: Duration = Duration::from_secs(60);

/// p50, p95 and p99 of a latency, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
}

impl Percentiles {
    /// Nearest-rank percentiles of `samples` (milliseconds).
    pub fn of(mut samples: Vec<f64>) -> Percentiles {
        if samples.is_empty() {
            return Percentiles::default();
        }
        samples.sort_by(f64::total_cmp);
        let at = |q: f64| {
            samples[((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len()) - 1]
        };
        Percentiles {
            p50: at(0.50),
            p95: at(0.95),
            p99: at(0.99),
        }
    }
}

/// What one run measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct InviteFigures {
    /// Commands published.
    pub commands: usize,
    /// Rate offered (commands/s), or null for as fast as possible.
    pub offered_per_s: Option<f64>,
    /// Commands done end to end per second: first publish to the last reply
    /// or email, whichever came later.
    pub commands_per_s: f64,
    /// Commands answered per second, first publish to last reply.
    pub replies_per_s: f64,
    /// Emails delivered per second, first publish to last email.
    pub emails_per_s: f64,
    /// Publish → reply.
    pub reply_ms: Percentiles,
    /// Publish → email at the SMTP server.
    pub email_ms: Percentiles,
    /// The worker's peak resident memory during the run.
    pub peak_rss_mib: f64,
    /// The worker's CPU seconds per 1,000 commands.
    pub cpu_s_per_1000: f64,
    /// How busy the whole machine's CPU was during the run, in percent.
    pub machine_busy_pct: f64,
    /// The share of the worker's batches written as one statement that
    /// commits on its own (`handler::one_statement`), in percent.
    pub one_statement_pct: f64,
    /// Replies other than `applied` (should be 0).
    pub not_applied: usize,
}

/// Runs `n` invites of `tag` against the worker; `rate` limits the offered rate.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    amqp_url: &str,
    prefix: &str,
    sink: &Sink,
    worker: &WorkerProcess,
    manager: &str,
    organization: &str,
    tag: &str,
    n: usize,
    rate: Option<f64>,
) -> Result<InviteFigures, BenchError> {
    let conn = Connection::connect(amqp_url, ConnectionProperties::default()).await?;
    let replies_channel = conn.create_channel().await?;
    let (reply_to, mut replies) = private_reply_queue(&replies_channel).await?;
    let (tx, mut rx) = mpsc::unbounded_channel::<(String, Instant, bool)>();
    let collector = tokio::spawn(async move {
        while let Some(Ok(d)) = replies.next().await {
            let at = Instant::now();
            let id = d
                .properties
                .correlation_id()
                .as_ref()
                .map(|c| c.as_str().to_owned())
                .unwrap_or_default();
            let applied = serde_json::from_slice::<serde_json::Value>(&d.data)
                .map(|v| v["status"] == "applied")
                .unwrap_or(false);
            if tx.send((id, at, applied)).is_err() {
                break;
            }
        }
    });

    let publisher = conn.create_channel().await?;
    publisher
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let exchange = format!("{prefix}.commands");
    let mut published: HashMap<String, Instant> = HashMap::with_capacity(n);
    let mut email_of: HashMap<String, String> = HashMap::with_capacity(n);
    let bodies: Vec<(String, String, Vec<u8>)> = (0..n)
        .map(|i| {
            let email = format!("{tag}{i}@bench.example");
            let data = serde_json::json!({
                "organization_id": organization,
                "delivery_account_id": null,
                "user": {"type": "personal", "email": email, "first_name": "Bench", "last_name": format!("User {i}"),
                         "phone": "+31201234567", "country": "NL"},
                "role": "user",
                "permissions": ["cases.view"],
                "contract_accounts": "all",
                "delivery_accounts": [],
            });
            let env = CommandClient::envelope("invite_user", data, Some(manager));
            let id = env["id"].as_str().unwrap_or_default().to_owned();
            (id, email, serde_json::to_vec(&env).unwrap_or_default())
        })
        .collect();

    worker.reset_peak();
    let cpu_before = worker.cpu_seconds();
    let machine_before = MachineCpu::now();
    let batches_before = worker.batches_written().await;
    sink.clear();
    let started = Instant::now();
    let interval = rate.map(|r| Duration::from_secs_f64(1.0 / r));
    for (i, (id, email, body)) in bodies.iter().enumerate() {
        if let Some(interval) = interval {
            let due = started + interval.mul_f64(i as f64);
            tokio::time::sleep_until(due.into()).await;
        }
        let props = BasicProperties::default()
            .with_content_type("application/cloudevents+json".into())
            .with_delivery_mode(2)
            .with_reply_to(reply_to.as_str().into())
            .with_correlation_id(id.as_str().into());
        published.insert(id.clone(), Instant::now());
        email_of.insert(email.clone(), id.clone());
        publisher
            .basic_publish(
                exchange.as_str().into(),
                "invite_user".into(),
                BasicPublishOptions::default(),
                body,
                props,
            )
            .await?;
        if i % 500 == 499 {
            publisher.wait_for_confirms().await?;
        }
    }
    publisher.wait_for_confirms().await?;

    let mut answered: HashMap<String, (Instant, bool)> = HashMap::with_capacity(n);
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut emails: HashMap<String, Instant> = HashMap::with_capacity(n);
    // A run that stops moving (an email failed for good, a worker stuck)
    // fails after a minute instead of waiting out the deadline.
    let mut seen = (0, 0);
    let mut moved_at = Instant::now();
    loop {
        while let Ok((id, at, applied)) = rx.try_recv() {
            answered.entry(id).or_insert((at, applied));
        }
        for (to, at) in sink.take_arrivals() {
            if let Some(id) = email_of.get(&to) {
                emails.entry(id.clone()).or_insert(at);
            }
        }
        if answered.len() >= n && emails.len() >= n {
            break;
        }
        if Instant::now() > deadline {
            return Err(BenchError::new(format!(
                "incomplete after 10 minutes: {} replies, {} emails of {n}",
                answered.len(),
                emails.len()
            )));
        }
        if (answered.len(), emails.len()) != seen {
            seen = (answered.len(), emails.len());
            moved_at = Instant::now();
        } else if moved_at.elapsed() > STALLED_AFTER {
            return Err(BenchError::new(format!(
                "stalled: no reply or email for {} s, {} replies and {} emails of {n}; \
                 the worker's log (path above) says why",
                STALLED_AFTER.as_secs(),
                answered.len(),
                emails.len()
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cpu = worker.cpu_seconds() - cpu_before;
    let machine_busy_pct = MachineCpu::now().busy_pct_since(machine_before);
    let batches = worker.batches_written().await;
    let one_statement = batches.0 - batches_before.0;
    let transaction = batches.1 - batches_before.1;
    collector.abort();
    let _ = conn.close(200, "bye".into()).await;

    let last_reply = answered
        .values()
        .map(|(at, _)| *at)
        .max()
        .unwrap_or(started);
    let last_email = emails.values().copied().max().unwrap_or(started);
    let latency = |at: &Instant, id: &str| {
        published
            .get(id)
            .map(|p| at.duration_since(*p).as_secs_f64() * 1000.0)
    };
    Ok(InviteFigures {
        commands: n,
        offered_per_s: rate,
        commands_per_s: n as f64
            / last_reply
                .max(last_email)
                .duration_since(started)
                .as_secs_f64(),
        replies_per_s: n as f64 / last_reply.duration_since(started).as_secs_f64(),
        emails_per_s: n as f64 / last_email.duration_since(started).as_secs_f64(),
        reply_ms: Percentiles::of(
            answered
                .iter()
                .filter_map(|(id, (at, _))| latency(at, id))
                .collect(),
        ),
        email_ms: Percentiles::of(
            emails
                .iter()
                .filter_map(|(id, at)| latency(at, id))
                .collect(),
        ),
        peak_rss_mib: worker.peak_rss_mib(),
        cpu_s_per_1000: cpu / n as f64 * 1000.0,
        machine_busy_pct,
        one_statement_pct: 100.0 * one_statement / (one_statement + transaction).max(1.0),
        not_applied: answered.values().filter(|(_, applied)| !applied).count(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let p = Percentiles::of((1..=100).map(f64::from).collect());
        assert_eq!((p.p50, p.p95, p.p99), (50.0, 95.0, 99.0));
        assert_eq!(Percentiles::of(vec![]).p99, 0.0);
        assert_eq!(Percentiles::of(vec![7.0]).p50, 7.0);
    }
}
