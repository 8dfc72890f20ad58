//! The end-to-end run: N `invite_user` commands published to the running
//! worker, timed until every reply and every activation email has arrived.

use futures_util::StreamExt;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
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

/// What the invite runs go to: the running worker, its broker and the
/// SMTP sink it mails to, and the organization and manager that invite.
pub struct Target<'a> {
    /// The broker.
    pub amqp_url: &'a str,
    /// The worker's `AMQP_PREFIX`.
    pub prefix: &'a str,
    /// Where the worker's emails arrive.
    pub sink: &'a Sink,
    /// The worker, for its memory, CPU and batch counts.
    pub worker: &'a WorkerProcess,
    /// The inviting manager's user id.
    pub manager: &'a str,
    /// The organization the invitees join.
    pub organization: &'a str,
}

/// A reply as it arrived: its command's id, when, and whether it was `applied`.
type Reply = (String, Instant, bool);

/// The commands as published: when each went out, and whose email is whose.
struct Published {
    /// The first publish.
    started: Instant,
    /// Command id → when it was published.
    at: HashMap<String, Instant>,
    /// Invitee email → command id.
    email_of: HashMap<String, String>,
}

/// When each command's reply and email arrived.
struct Arrivals {
    /// Command id → when its reply arrived, and whether it was `applied`.
    answered: HashMap<String, (Instant, bool)>,
    /// Command id → when its email arrived.
    emails: HashMap<String, Instant>,
}

/// The worker's and the machine's counters at the start of a run.
struct Usage {
    cpu_seconds: f64,
    machine: MachineCpu,
    batches: (f64, f64),
}

/// What the worker and the machine did over a run.
struct Used {
    /// The worker's CPU seconds.
    cpu_seconds: f64,
    /// How busy the machine's CPU was, in percent.
    machine_busy_pct: f64,
    /// Batches written as one statement.
    one_statement: f64,
    /// Batches written in a transaction.
    transaction: f64,
}

impl Target<'_> {
    /// Runs `n` invites of `tag` against the worker; `rate` limits the offered rate.
    pub async fn run(
        &self,
        tag: &str,
        n: usize,
        rate: Option<f64>,
    ) -> Result<InviteFigures, BenchError> {
        let conn = Connection::connect(self.amqp_url, ConnectionProperties::default()).await?;
        let replies_channel = conn.create_channel().await?;
        let (reply_to, replies) = private_reply_queue(&replies_channel).await?;
        let (tx, rx) = mpsc::unbounded_channel::<Reply>();
        let collector = tokio::spawn(collect_replies(replies, tx));

        let publisher = conn.create_channel().await?;
        publisher
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        let commands = self.invite_commands(tag, n);

        let before = self.usage().await;
        self.sink.clear();
        let published = self.publish(&publisher, &reply_to, &commands, rate).await?;
        let arrivals = self.wait_for_all(rx, &published, n).await?;
        let used = self.used_since(&before).await;
        collector.abort();
        let _ = conn.close(200, "bye".into()).await;
        Ok(self.figures(&used, &published, &arrivals, n, rate))
    }

    /// The `invite_user` envelopes to publish: command id, invitee email, body.
    fn invite_commands(&self, tag: &str, n: usize) -> Vec<(String, String, Vec<u8>)> {
        (0..n)
            .map(|i| {
                let email = format!("{tag}{i}@bench.example");
                let data = serde_json::json!({
                    "organization_id": self.organization,
                    "delivery_account_id": null,
                    "user": {"type": "personal", "email": email, "first_name": "Bench", "last_name": format!("User {i}"),
                             "phone": "+31201234567", "country": "NL"},
                    "role": "user",
                    "permissions": ["cases.view"],
                    "contract_accounts": "all",
                    "delivery_accounts": [],
                });
                let env = CommandClient::envelope("invite_user", data, Some(self.manager));
                let id = env["id"].as_str().unwrap_or_default().to_owned();
                (id, email, serde_json::to_vec(&env).unwrap_or_default())
            })
            .collect()
    }

    /// Resets the worker's peak memory and reads the counters a run is measured against.
    async fn usage(&self) -> Usage {
        self.worker.reset_peak();
        let cpu_seconds = self.worker.cpu_seconds();
        let machine = MachineCpu::now();
        let batches = self.worker.batches_written().await;
        Usage {
            cpu_seconds,
            machine,
            batches,
        }
    }

    /// Publishes `commands` persistently with confirms (every 500 and at
    /// the end), each at its due time when `rate` is set.
    async fn publish(
        &self,
        publisher: &Channel,
        reply_to: &str,
        commands: &[(String, String, Vec<u8>)],
        rate: Option<f64>,
    ) -> Result<Published, BenchError> {
        let exchange = format!("{}.commands", self.prefix);
        let mut at = HashMap::with_capacity(commands.len());
        let mut email_of = HashMap::with_capacity(commands.len());
        let started = Instant::now();
        let interval = rate.map(|r| Duration::from_secs_f64(1.0 / r));
        for (i, (id, email, body)) in commands.iter().enumerate() {
            if let Some(interval) = interval {
                let due = started + interval.mul_f64(i as f64);
                tokio::time::sleep_until(due.into()).await;
            }
            let props = BasicProperties::default()
                .with_content_type("application/cloudevents+json".into())
                .with_delivery_mode(2)
                .with_reply_to(reply_to.into())
                .with_correlation_id(id.as_str().into());
            at.insert(id.clone(), Instant::now());
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
        Ok(Published {
            started,
            at,
            email_of,
        })
    }

    /// Waits until every command has its reply and its email; fails after
    /// 10 minutes, or after `STALLED_AFTER` without a single arrival (an
    /// email failed for good, a worker stuck) instead of waiting that out.
    async fn wait_for_all(
        &self,
        mut rx: mpsc::UnboundedReceiver<Reply>,
        published: &Published,
        n: usize,
    ) -> Result<Arrivals, BenchError> {
        let mut arrivals = Arrivals {
            answered: HashMap::with_capacity(n),
            emails: HashMap::with_capacity(n),
        };
        let deadline = Instant::now() + Duration::from_secs(600);
        let mut seen = (0, 0);
        let mut moved_at = Instant::now();
        loop {
            while let Ok((id, at, applied)) = rx.try_recv() {
                arrivals.answered.entry(id).or_insert((at, applied));
            }
            for (to, at) in self.sink.take_arrivals() {
                if let Some(id) = published.email_of.get(&to) {
                    arrivals.emails.entry(id.clone()).or_insert(at);
                }
            }
            let counts = (arrivals.answered.len(), arrivals.emails.len());
            if counts.0 >= n && counts.1 >= n {
                return Ok(arrivals);
            }
            if Instant::now() > deadline {
                return Err(BenchError::new(format!(
                    "incomplete after 10 minutes: {} replies, {} emails of {n}",
                    counts.0, counts.1
                )));
            }
            if counts != seen {
                seen = counts;
                moved_at = Instant::now();
            } else if moved_at.elapsed() > STALLED_AFTER {
                return Err(BenchError::new(format!(
                    "stalled: no reply or email for {} s, {} replies and {} emails of {n}; \
                     the worker's log (path above) says why",
                    STALLED_AFTER.as_secs(),
                    counts.0,
                    counts.1
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The counters now, against `before`.
    async fn used_since(&self, before: &Usage) -> Used {
        let cpu_seconds = self.worker.cpu_seconds() - before.cpu_seconds;
        let machine_busy_pct = MachineCpu::now().busy_pct_since(before.machine);
        let batches = self.worker.batches_written().await;
        Used {
            cpu_seconds,
            machine_busy_pct,
            one_statement: batches.0 - before.batches.0,
            transaction: batches.1 - before.batches.1,
        }
    }

    /// The run's figures, from when things were published and arrived and
    /// from what the worker and the machine did.
    fn figures(
        &self,
        used: &Used,
        published: &Published,
        arrivals: &Arrivals,
        n: usize,
        rate: Option<f64>,
    ) -> InviteFigures {
        let Arrivals { answered, emails } = arrivals;
        let started = published.started;
        let last_reply = answered
            .values()
            .map(|(at, _)| *at)
            .max()
            .unwrap_or(started);
        let last_email = emails.values().copied().max().unwrap_or(started);
        let per_s = |last: Instant| n as f64 / last.duration_since(started).as_secs_f64();
        let latency = |at: &Instant, id: &str| {
            published
                .at
                .get(id)
                .map(|p| at.duration_since(*p).as_secs_f64() * 1000.0)
        };
        InviteFigures {
            commands: n,
            offered_per_s: rate,
            commands_per_s: per_s(last_reply.max(last_email)),
            replies_per_s: per_s(last_reply),
            emails_per_s: per_s(last_email),
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
            peak_rss_mib: self.worker.peak_rss_mib(),
            cpu_s_per_1000: used.cpu_seconds / n as f64 * 1000.0,
            machine_busy_pct: used.machine_busy_pct,
            one_statement_pct: 100.0 * used.one_statement
                / (used.one_statement + used.transaction).max(1.0),
            not_applied: answered.values().filter(|(_, applied)| !applied).count(),
        }
    }
}

/// Sends each reply on `tx` as it arrives, timed on arrival, until the
/// queue or the receiver goes away.
async fn collect_replies(mut replies: lapin::Consumer, tx: mpsc::UnboundedSender<Reply>) {
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
