//! An end-to-end run of any list of commands: published to the running
//! worker, timed until every reply and every email an applied command sends
//! has arrived, with each reply checked against what it had to say.

use futures_util::StreamExt;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

use crate::invites::{InviteFigures, Percentiles};
use crate::machine::MachineCpu;
use crate::process::WorkerProcess;
use crate::run::BenchError;
use crate::workloads::{Expect, Planned};
use dev_support::Sink;
use user_lifecycle::broker::client::private_reply_queue;

/// How long a run may go without a single reply or email before it fails.
const STALLED_AFTER: Duration = Duration::from_secs(60);

/// How long a run without expected emails watches for stray ones after its
/// last reply (not timed).
const STRAY_EMAIL_GRACE: Duration = Duration::from_millis(500);

/// The running worker, its broker and the SMTP sink it mails to.
pub struct Runner<'a> {
    /// The broker.
    pub amqp_url: &'a str,
    /// The worker's `AMQP_PREFIX`.
    pub prefix: &'a str,
    /// Where the worker's emails arrive.
    pub sink: &'a Sink,
    /// The worker, for its memory, CPU and batch counts.
    pub worker: &'a WorkerProcess,
}

/// What a reply said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// `applied`, `rejected` or `invalid` (empty if the reply was not JSON).
    pub status: String,
    /// `ok` or the reason.
    pub code: String,
    /// Marked as a duplicate.
    pub duplicate: bool,
    /// Its message.
    pub message: String,
}

impl Answer {
    fn parse(body: &[u8]) -> Answer {
        let v = serde_json::from_slice::<serde_json::Value>(body).unwrap_or_default();
        let text = |key: &str| v[key].as_str().unwrap_or_default().to_owned();
        Answer {
            status: text("status"),
            code: text("code"),
            duplicate: v["duplicate"] == true,
            message: text("message"),
        }
    }

    fn applied(&self) -> bool {
        self.status == "applied"
    }

    /// Whether it says what `expect` says it must.
    pub fn meets(&self, expect: Expect) -> bool {
        let outcome = match expect.refused {
            None => self.applied(),
            Some(code) => !self.applied() && self.code == code,
        };
        outcome && self.duplicate == expect.duplicate
    }
}

/// How the replies and emails of a run compare with what was expected.
#[derive(Debug, Clone, Default)]
pub struct Outcomes {
    /// Replies other than `applied`.
    pub not_applied: usize,
    /// Commands expected to be refused.
    pub expected_not_applied: usize,
    /// Replies marked as a duplicate.
    pub duplicates: usize,
    /// Emails waited for (those of applied, first-time commands that send one).
    pub emails: usize,
    /// Emails to a watched address that no command of the run should have sent.
    pub stray_emails: usize,
    /// How many replies did not say what they had to.
    pub unexpected: usize,
    /// The first few of those, each named: id, type, expected, got.
    pub unexpected_examples: Vec<String>,
}

impl Outcomes {
    /// `Err` naming what went wrong when a reply was not the expected one
    /// or an email went out that should not have.
    pub fn check(&self, workload: &str) -> Result<(), BenchError> {
        if self.unexpected > 0 {
            return Err(BenchError::new(format!(
                "{workload}: {} commands got an unexpected reply ({} not applied, {} expected); \
                 the first: {}",
                self.unexpected,
                self.not_applied,
                self.expected_not_applied,
                self.unexpected_examples.join("; ")
            )));
        }
        if self.stray_emails > 0 {
            return Err(BenchError::new(format!(
                "{workload}: {} emails were sent that no command of the run should have sent",
                self.stray_emails
            )));
        }
        Ok(())
    }
}

/// What a run measured, and how its replies compare with what was expected.
#[derive(Debug, Clone, Default)]
pub struct Measured {
    /// The figures.
    pub figures: InviteFigures,
    /// The replies and emails against what was expected.
    pub outcomes: Outcomes,
}

/// A reply as it arrived: its command's id, when, and what it said.
type Reply = (String, Instant, Answer);

/// The commands as published: when each went out, and whose email is whose.
struct Published {
    /// The first publish.
    started: Instant,
    /// Command id → when it was published.
    at: HashMap<String, Instant>,
    /// Watched address → command id.
    email_of: HashMap<String, String>,
}

/// When each command's reply and email arrived.
struct Arrivals {
    /// Command id → when its reply arrived, and what it said.
    answered: HashMap<String, (Instant, Answer)>,
    /// Command id → when an email to its address arrived.
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

/// Does this command's reply, as it arrived, call for an email?
fn sends_email(planned: &Planned, answer: &Answer) -> bool {
    planned.mail_to.is_some() && answer.applied() && !answer.duplicate
}

impl Runner<'_> {
    /// Publishes `commands` to the worker (each at its due time when `rate`
    /// is set) and waits for every reply and every email they send.
    pub async fn run(
        &self,
        commands: &[Planned],
        rate: Option<f64>,
    ) -> Result<Measured, BenchError> {
        let n = commands.len();
        let conn = Connection::connect(self.amqp_url, ConnectionProperties::default()).await?;
        let replies_channel = conn.create_channel().await?;
        let (reply_to, replies) = private_reply_queue(&replies_channel).await?;
        let (tx, rx) = mpsc::unbounded_channel::<Reply>();
        let collector = tokio::spawn(collect_replies(replies, tx));

        let publisher = conn.create_channel().await?;
        publisher
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        let planned: HashMap<&str, &Planned> =
            commands.iter().map(|p| (p.id.as_str(), p)).collect();

        let before = self.usage().await;
        self.sink.clear();
        let published = self.publish(&publisher, &reply_to, commands, rate).await?;
        let mut arrivals = self.wait_for_all(rx, &published, &planned, n).await?;
        let used = self.used_since(&before).await;
        if !published.email_of.is_empty() && arrivals.emails.is_empty() {
            // Nothing was waited for at the sink: give a stray email (a
            // duplicate that sent one again) the time to show.
            tokio::time::sleep(STRAY_EMAIL_GRACE).await;
            self.take_emails(&published, &mut arrivals);
        }
        collector.abort();
        let _ = conn.close(200, "bye".into()).await;
        Ok(Measured {
            figures: self.figures(&used, &published, &arrivals, &planned, n, rate),
            outcomes: outcomes(commands, &arrivals),
        })
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
        commands: &[Planned],
        rate: Option<f64>,
    ) -> Result<Published, BenchError> {
        let exchange = format!("{}.commands", self.prefix);
        let mut at = HashMap::with_capacity(commands.len());
        let mut email_of = HashMap::new();
        let started = Instant::now();
        let interval = rate.map(|r| Duration::from_secs_f64(1.0 / r));
        for (i, command) in commands.iter().enumerate() {
            if let Some(interval) = interval {
                let due = started + interval.mul_f64(i as f64);
                tokio::time::sleep_until(due.into()).await;
            }
            let props = BasicProperties::default()
                .with_content_type("application/cloudevents+json".into())
                .with_delivery_mode(2)
                .with_reply_to(reply_to.into())
                .with_correlation_id(command.id.as_str().into());
            at.insert(command.id.clone(), Instant::now());
            if let Some(email) = &command.mail_to {
                email_of.insert(email.clone(), command.id.clone());
            }
            publisher
                .basic_publish(
                    exchange.as_str().into(),
                    command.kind.into(),
                    BasicPublishOptions::default(),
                    &command.body,
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

    /// Records the emails that arrived at watched addresses since the last look.
    fn take_emails(&self, published: &Published, arrivals: &mut Arrivals) {
        for (to, at) in self.sink.take_arrivals() {
            if let Some(id) = published.email_of.get(&to) {
                arrivals.emails.entry(id.clone()).or_insert(at);
            }
        }
    }

    /// Waits until every command has its reply and every applied one that
    /// sends an email its email; fails after 10 minutes, or after
    /// `STALLED_AFTER` without a single arrival (an email failed for good,
    /// a worker stuck) instead of waiting that out.
    async fn wait_for_all(
        &self,
        mut rx: mpsc::UnboundedReceiver<Reply>,
        published: &Published,
        planned: &HashMap<&str, &Planned>,
        n: usize,
    ) -> Result<Arrivals, BenchError> {
        let mut arrivals = Arrivals {
            answered: HashMap::with_capacity(n),
            emails: HashMap::with_capacity(published.email_of.len()),
        };
        // Replies that call for an email: the emails to wait for.
        let mut emails_due = 0;
        let deadline = Instant::now() + Duration::from_secs(600);
        let mut seen = (0, 0);
        let mut moved_at = Instant::now();
        loop {
            while let Ok((id, at, answer)) = rx.try_recv() {
                let Some(command) = planned.get(id.as_str()) else {
                    continue;
                };
                if let std::collections::hash_map::Entry::Vacant(e) = arrivals.answered.entry(id) {
                    emails_due += usize::from(sends_email(command, &answer));
                    e.insert((at, answer));
                }
            }
            self.take_emails(published, &mut arrivals);
            let counts = (arrivals.answered.len(), arrivals.emails.len());
            if counts.0 >= n && counts.1 >= emails_due {
                return Ok(arrivals);
            }
            if Instant::now() > deadline {
                return Err(BenchError::new(format!(
                    "incomplete after 10 minutes: {} replies of {n}, {} emails of {emails_due} due",
                    counts.0, counts.1
                )));
            }
            if counts != seen {
                seen = counts;
                moved_at = Instant::now();
            } else if moved_at.elapsed() > STALLED_AFTER {
                return Err(BenchError::new(format!(
                    "stalled: no reply or email for {} s, {} replies of {n} and {} emails of \
                     {emails_due} due; the worker's log (path above) says why",
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
    /// from what the worker and the machine did. Only the emails that were
    /// due count (a stray one is an error, not a figure).
    fn figures(
        &self,
        used: &Used,
        published: &Published,
        arrivals: &Arrivals,
        planned: &HashMap<&str, &Planned>,
        n: usize,
        rate: Option<f64>,
    ) -> InviteFigures {
        let Arrivals { answered, emails } = arrivals;
        let emails: HashMap<&String, Instant> = emails
            .iter()
            .filter(|(id, _)| {
                let due = answered.get(*id).zip(planned.get(id.as_str()));
                due.is_some_and(|((_, answer), command)| sends_email(command, answer))
            })
            .map(|(id, at)| (id, *at))
            .collect();
        let started = published.started;
        let last_reply = answered
            .values()
            .map(|(at, _)| *at)
            .max()
            .unwrap_or(started);
        let last_email = emails.values().copied().max().unwrap_or(started);
        let per_s = |count: usize, last: Instant| {
            let seconds = last.duration_since(started).as_secs_f64();
            if count == 0 || seconds <= 0.0 {
                0.0
            } else {
                count as f64 / seconds
            }
        };
        let latency = |at: &Instant, id: &str| {
            published
                .at
                .get(id)
                .map(|p| at.duration_since(*p).as_secs_f64() * 1000.0)
        };
        InviteFigures {
            commands: n,
            offered_per_s: rate,
            commands_per_s: per_s(n, last_reply.max(last_email)),
            replies_per_s: per_s(n, last_reply),
            emails_per_s: per_s(emails.len(), last_email),
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
            cpu_s_per_1000: used.cpu_seconds / n.max(1) as f64 * 1000.0,
            machine_busy_pct: used.machine_busy_pct,
            one_statement_pct: 100.0 * used.one_statement
                / (used.one_statement + used.transaction).max(1.0),
            not_applied: answered.values().filter(|(_, a)| !a.applied()).count(),
        }
    }
}

/// How many of the examples of unexpected replies an error names.
const EXAMPLES: usize = 5;

/// The replies and emails of a run against what `commands` expected.
fn outcomes(commands: &[Planned], arrivals: &Arrivals) -> Outcomes {
    let mut o = Outcomes::default();
    for command in commands {
        if command.expect.refused.is_some() {
            o.expected_not_applied += 1;
        }
        let Some((_, answer)) = arrivals.answered.get(&command.id) else {
            continue;
        };
        o.not_applied += usize::from(!answer.applied());
        o.duplicates += usize::from(answer.duplicate);
        let emailed = arrivals.emails.contains_key(&command.id);
        if sends_email(command, answer) {
            o.emails += usize::from(emailed);
        } else {
            o.stray_emails += usize::from(emailed);
        }
        if !answer.meets(command.expect) {
            o.unexpected += 1;
            if o.unexpected_examples.len() < EXAMPLES {
                o.unexpected_examples
                    .push(describe(command, command.expect, answer));
            }
        }
    }
    o
}

/// `command ID (TYPE): expected …, got …`.
fn describe(command: &Planned, expect: Expect, got: &Answer) -> String {
    let marked = |duplicate: bool| if duplicate { " (duplicate)" } else { "" };
    let expected = match expect.refused {
        None => "applied".to_owned(),
        Some(code) => format!("refused {code}"),
    };
    format!(
        "command {} ({}): expected {expected}{}, got {} {}{} {:?}",
        command.id,
        command.kind,
        marked(expect.duplicate),
        got.status,
        got.code,
        marked(got.duplicate),
        got.message
    )
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
        if tx.send((id, at, Answer::parse(&d.data))).is_err() {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(body: &str) -> Answer {
        Answer::parse(body.as_bytes())
    }

    fn planned(id: &str, expect: Expect, mail_to: Option<&str>) -> Planned {
        Planned {
            id: id.into(),
            kind: "invite_user",
            body: vec![],
            expect,
            mail_to: mail_to.map(str::to_owned),
        }
    }

    #[test]
    fn a_reply_meets_its_expectation_only_with_the_same_outcome_and_duplicate_mark() {
        let applied = answer(r#"{"status":"applied","code":"ok","duplicate":false}"#);
        let refused =
            answer(r#"{"status":"rejected","code":"not_found","duplicate":false,"message":"m"}"#);
        let stored = answer(r#"{"status":"rejected","code":"not_found","duplicate":true}"#);
        assert!(applied.meets(Expect::APPLIED));
        assert!(!applied.meets(Expect::refused("not_found")));
        assert!(refused.meets(Expect::refused("not_found")));
        assert!(!refused.meets(Expect::refused("not_authorized")));
        assert!(!refused.meets(Expect::APPLIED));
        let duplicate = Expect {
            duplicate: true,
            ..Expect::refused("not_found")
        };
        assert!(stored.meets(duplicate));
        assert!(!refused.meets(duplicate), "the mark is required");
        assert!(!stored.meets(Expect::refused("not_found")));
        assert_eq!(answer("not json").status, "");
    }

    #[test]
    fn outcomes_count_refusals_duplicates_and_stray_emails_and_name_the_unexpected() {
        let now = Instant::now();
        let ok = answer(r#"{"status":"applied","code":"ok"}"#);
        let dup = answer(r#"{"status":"applied","code":"ok","duplicate":true}"#);
        let refused = answer(
            r#"{"status":"rejected","code":"not_authorized","message":"not yours","duplicate":false}"#,
        );
        let commands = [
            planned("a", Expect::APPLIED, Some("a@x")),
            planned("b", Expect::refused("not_found"), None),
            planned(
                "c",
                Expect {
                    duplicate: true,
                    ..Expect::APPLIED
                },
                Some("c@x"),
            ),
        ];
        let arrivals = Arrivals {
            answered: HashMap::from([
                ("a".to_owned(), (now, ok)),
                ("b".to_owned(), (now, refused)),
                ("c".to_owned(), (now, dup)),
            ]),
            emails: HashMap::from([("a".to_owned(), now), ("c".to_owned(), now)]),
        };
        let o = outcomes(&commands, &arrivals);
        assert_eq!(
            (o.not_applied, o.expected_not_applied, o.duplicates),
            (1, 1, 1)
        );
        assert_eq!((o.emails, o.stray_emails), (1, 1));
        assert_eq!(o.unexpected, 1);
        assert_eq!(
            o.unexpected_examples,
            [
                r#"command b (invite_user): expected refused not_found, got rejected not_authorized "not yours""#
            ]
        );
        let err = o.check("mix").unwrap_err().to_string();
        assert!(
            err.starts_with("mix: 1 commands got an unexpected reply"),
            "{err}"
        );
        let clean = Outcomes {
            stray_emails: 2,
            ..Outcomes::default()
        };
        assert!(
            clean
                .check("duplicates")
                .unwrap_err()
                .to_string()
                .contains("2 emails")
        );
        assert!(Outcomes::default().check("x").is_ok());
    }
}
