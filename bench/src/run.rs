//! The run: the raw limits, then the worker under load, then the sweep.
//!
//! It uses its own database (`<DATABASE_URL's name>_bench`, recreated; one
//! benchmark at a time per server and name) and its own `AMQP_PREFIX`, runs
//! the worker binary as a child process against an SMTP sink in this
//! process, and removes what it created afterwards.

use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
use lapin::{Connection, ConnectionProperties};
use serde_json::json;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Executor};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::{Duration, Instant};
use thiserror::Error;

use crate::expiry::ExpiryFigures;
use crate::invites::InviteFigures;
use crate::report::{Report, WorkloadFigures};
use crate::runner::{Measured, Runner};
use crate::workloads::{self, Organization, Planned, Workload};
use crate::{db_reads, expiry, organizations, process, raw};
use dev_support::Sink;

use user_lifecycle::broker::client::CommandClient;
use user_lifecycle::handler::{Handler, HandlerSettings};
use user_lifecycle::store;

/// The benchmark failed to run (not a slow result: that is reported).
#[derive(Debug, Error)]
#[error("{0}")]
pub struct BenchError(String);

impl BenchError {
    pub(crate) fn new(message: impl Into<String>) -> BenchError {
        BenchError(message.into())
    }
}

macro_rules! from_error {
    ($($t:ty),*) => {$(
        impl From<$t> for BenchError {
            fn from(e: $t) -> Self {
                BenchError(e.to_string())
            }
        }
    )*};
}
from_error!(
    std::io::Error,
    sqlx::Error,
    lapin::Error,
    store::StoreError,
    user_lifecycle::broker::client::ClientError
);

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// `invite_user` commands in the throughput run (and messages/transactions in the raw runs).
    pub commands: usize,
    /// Expired invitations for the sweep run (0 skips it).
    pub expire: usize,
    /// Commands in the latency run at `latency_rate` (0 skips it).
    pub latency_commands: usize,
    /// Offered rate of the latency run, commands/s.
    pub latency_rate: f64,
    /// PostgreSQL URL; the benchmark uses the same server, database `<name>_bench`.
    pub database_url: String,
    /// RabbitMQ URL.
    pub amqp_url: String,
    /// Email templates.
    pub templates_dir: PathBuf,
    /// Worker settings passed through (e.g. CONSUMER_PREFETCH), `KEY=VALUE`.
    pub worker_env: Vec<(String, String)>,
    /// The worker binary to run.
    pub worker_bin: PathBuf,
    /// The workloads of the throughput runs, in their order (`Workload::selection`).
    pub workloads: Vec<Workload>,
    /// Organizations the setup onboards for `managers` and `mix`.
    pub organizations: usize,
    /// The share of the mix refused, in percent.
    pub refusals_pct: u8,
}

/// The worker's database connections (its default), used for the raw insert run too.
const WORKER_CONNECTIONS: usize = 10;
/// The worker's default `CONSUMER_PREFETCH`, for the messaging-alone run.
const WORKER_PREFETCH: u16 = 256;
/// The sweep's batch size (the worker's default).
const SWEEP_BATCH: i64 = 500;

/// The organization the benchmark onboards, and whose users it invites and expires.
const ORGANIZATION: &str = "bench";

fn bench_database_url(url: &str) -> Result<(String, String), BenchError> {
    // The worker's own reading of the URL (TLS or not), written out in full.
    let options = store::connect_options(url)?;
    let name = format!(
        "{}_bench",
        options.get_database().unwrap_or("user_lifecycle")
    );
    let bench = options.database(&name).to_url_lossy().to_string();
    Ok((bench, name))
}

async fn delete_topology(amqp_url: &str, prefix: &str) {
    let Ok(conn) = Connection::connect(amqp_url, ConnectionProperties::default()).await else {
        return;
    };
    let Ok(ch) = conn.create_channel().await else {
        return;
    };
    for q in [
        format!("{prefix}.commands"),
        format!("{prefix}.commands.dead"),
        format!("{prefix}.raw"),
        format!("{prefix}.raw_commands"),
    ] {
        let _ = ch
            .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
    for x in ["commands", "dead", "events", "raw_events"] {
        let _ = ch
            .exchange_delete(
                format!("{prefix}.{x}").as_str().into(),
                ExchangeDeleteOptions::default(),
            )
            .await;
    }
    let _ = conn.close(200, "bye".into()).await;
}

/// The benchmark's hold on its database, for as long as it runs: another
/// `bench` against the same server and database name would drop and
/// recreate that database under this one (and drop its own at the end,
/// taking this one's with it), so it is refused instead.
pub struct BenchDatabase {
    /// The session (in the `postgres` database) whose advisory lock is the
    /// hold, and which drops the bench database.
    admin: sqlx::PgConnection,
    /// The bench database's name.
    name: String,
}

impl BenchDatabase {
    /// Takes the hold on the bench database of `database_url` (`<name>_bench`),
    /// or says that another benchmark holds it.
    pub async fn hold(database_url: &str) -> Result<BenchDatabase, BenchError> {
        let (_, name) = bench_database_url(database_url)?;
        let mut admin = PgConnectOptions::from_str(database_url)?
            .database("postgres")
            .connect()
            .await?;
        let held: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
            .bind(format!("user-lifecycle bench {name}"))
            .fetch_one(&mut admin)
            .await?;
        if !held {
            return Err(BenchError::new(format!(
                "another benchmark is running on this PostgreSQL server with the database \
                 {name:?}; wait for it to end, or give this one another DATABASE_URL name"
            )));
        }
        Ok(BenchDatabase { admin, name })
    }

    /// Drops the bench database, if there is one.
    async fn drop_database(&mut self) -> Result<(), BenchError> {
        let sql = format!(
            "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
            self.name.replace('"', "\"\"")
        );
        self.admin.execute(sqlx::AssertSqlSafe(sql)).await?;
        Ok(())
    }
}

/// Runs the whole benchmark and returns its figures.
pub async fn run(options: &BenchOptions) -> Result<Report, BenchError> {
    // The worker would refuse to start without its templates: say so now,
    // not after minutes of raw-limit runs.
    user_lifecycle::mail::templates::Renderer::load(&options.templates_dir, "http://localhost")
        .map_err(|e| {
            BenchError::new(format!(
                "the worker could not start: loading templates from {} (TEMPLATES_DIR): {e}",
                options.templates_dir.display()
            ))
        })?;
    if options.workloads == [Workload::Duplicates] {
        return Err(BenchError::new(
            "the duplicates workload publishes an earlier run again: select it with \
             single, managers or mix (--workload mix,duplicates)",
        ));
    }
    if !options.worker_bin.is_file() {
        return Err(BenchError::new(format!(
            "no worker binary at {}: build it first (`cargo build --release`, or \
             `cargo build` for a debug run), or name it with --worker-bin",
            options.worker_bin.display()
        )));
    }
    let (db_url, _) = bench_database_url(&options.database_url)?;
    let mut held = BenchDatabase::hold(&options.database_url).await?;
    let prefix = format!(
        "ul_bench_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    held.drop_database().await?;
    let result = run_in(options, &db_url, &prefix).await;
    delete_topology(&options.amqp_url, &prefix).await;
    held.drop_database().await?;
    result
}

async fn run_in(options: &BenchOptions, db_url: &str, prefix: &str) -> Result<Report, BenchError> {
    let mut report = Report::default();
    let sink = Sink::start().await?;
    messaging_limits(options, prefix, &mut report).await?;
    let pool = bench_pool(db_url).await?;
    eprintln!(
        "raw limits: {} single-row insert transactions on {WORKER_CONNECTIONS} connections…",
        options.commands
    );
    report.raw.insert_tx_per_s =
        raw::insert_transactions(&pool, options.commands, WORKER_CONNECTIONS).await?;

    let env = worker_env(options, db_url, prefix, &sink);
    let log = std::env::temp_dir().join(format!("{prefix}-worker.log"));
    let reads_before = db_reads::rows_read(&pool).await?;
    let worker = start_worker(options, &env, &log, &mut report).await?;
    let manager = onboard_manager(&options.amqp_url, prefix, &sink).await?;
    let organizations = if options.workloads.iter().any(|w| w.needs_organizations()) {
        eprintln!(
            "setup: onboarding {} organizations, each with {} invited users…",
            options.organizations,
            workloads::USERS_PER_ORGANIZATION
        );
        organizations::onboard(&options.amqp_url, prefix, &sink, options.organizations).await?
    } else {
        Vec::new()
    };
    let runner = Runner {
        amqp_url: &options.amqp_url,
        prefix,
        sink: &sink,
        worker: &worker,
    };
    // The setup sent each organization's onboarding, activation and invites.
    let setup = organizations.len() * (2 + workloads::USERS_PER_ORGANIZATION);
    let sent = workload_runs(options, &runner, &manager, &organizations, &mut report).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    report.worker.idle_after_runs_rss_mib = worker.rss_mib();
    eprintln!(
        "worker idle again, RSS {:.1} MiB",
        report.worker.idle_after_runs_rss_mib
    );
    worker.stop().await;
    report.worker.db_reads_per_command = db_reads::since(&pool, reads_before, setup + sent).await?;

    if options.expire > 0 {
        report.expiry = Some(expiry_run(options, &pool, &manager).await?);
    }
    pool.close().await;
    Ok(report)
}

/// The broker's raw limits: consume + ack, and a command's messaging
/// alone as fast as it goes and (for the latency run) at its rate.
async fn messaging_limits(
    options: &BenchOptions,
    prefix: &str,
    report: &mut Report,
) -> Result<(), BenchError> {
    eprintln!(
        "raw limits: consume + ack of {} persistent messages…",
        options.commands
    );
    report.raw.consume_ack_per_s = raw::consume_ack(
        &options.amqp_url,
        &format!("{prefix}.raw"),
        options.commands,
        32,
    )
    .await?;
    eprintln!(
        "raw limits: the messaging of {} commands alone (publish, consume, reply and event confirmed, ack)…",
        options.commands
    );
    report.raw.command_messaging_per_s = raw::command_messaging(
        &options.amqp_url,
        prefix,
        options.commands,
        WORKER_PREFETCH,
        None,
    )
    .await?
    .per_s;
    if options.latency_commands > 0 {
        eprintln!(
            "raw limits: the messaging of {} commands alone at {}/s…",
            options.latency_commands, options.latency_rate
        );
        let paced = raw::command_messaging(
            &options.amqp_url,
            prefix,
            options.latency_commands,
            WORKER_PREFETCH,
            Some(options.latency_rate),
        )
        .await?;
        report.raw.command_messaging_reply_ms = Some(paced.reply_ms);
    }
    Ok(())
}

/// Migrates the bench database, then connects the bench's own pool to it.
async fn bench_pool(db_url: &str) -> Result<sqlx::PgPool, BenchError> {
    let pool = store::migrate(db_url).await?;
    pool.close().await;
    // Seeding and resetting a million rows takes longer than the
    // worker's statement timeout allows; the bench's own pool waits.
    Ok(store::connect_with_timeouts(
        db_url,
        WORKER_CONNECTIONS as u32,
        Duration::from_secs(5),
        Duration::from_secs(3600),
    )
    .await?)
}

/// The worker's settings: the bench database, prefix and sink, no
/// scheduled sweep during the run, then the `--worker-env` ones.
fn worker_env(
    options: &BenchOptions,
    db_url: &str,
    prefix: &str,
    sink: &Sink,
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = vec![
        ("DATABASE_URL".into(), db_url.into()),
        ("AMQP_URL".into(), options.amqp_url.clone()),
        ("AMQP_PREFIX".into(), prefix.into()),
        ("MAIL_URL".into(), format!("smtp://{}", sink.addr)),
        (
            "TEMPLATES_DIR".into(),
            options.templates_dir.display().to_string(),
        ),
        ("LOG_FORMAT".into(), "json".into()),
        ("EXPIRY_SCHEDULE".into(), "0 0 0 1 1 *".into()),
    ];
    env.extend(options.worker_env.iter().cloned());
    env
}

/// Starts the worker once and stops it, then starts it again and measures
/// that start and its idle memory: the start that counts is not the first.
async fn start_worker(
    options: &BenchOptions,
    env: &[(String, String)],
    log: &PathBuf,
    report: &mut Report,
) -> Result<process::WorkerProcess, BenchError> {
    let started = Instant::now();
    let mut worker = process::WorkerProcess::spawn(&options.worker_bin, env, log)?;
    worker.wait_ready(started).await?;
    worker.stop().await;
    let started = Instant::now();
    let mut worker = process::WorkerProcess::spawn(&options.worker_bin, env, log)?;
    report.worker.start_to_ready_ms = worker.wait_ready(started).await?.as_secs_f64() * 1000.0;
    tokio::time::sleep(Duration::from_secs(2)).await;
    report.worker.idle_rss_mib = worker.rss_mib();
    eprintln!(
        "worker ready in {:.0} ms, idle RSS {:.1} MiB (log: {})",
        report.worker.start_to_ready_ms,
        report.worker.idle_rss_mib,
        log.display()
    );
    Ok(worker)
}

/// What one workload sends: its throughput run, and its run at the offered
/// rate (`single` and `mix`, unless `--latency-commands 0`).
struct Plan {
    throughput: Vec<Planned>,
    at_rate: Option<Vec<Planned>>,
}

/// The commands of `workload`; `previous` is the last run of
/// `options.commands` before it, which `duplicates` publishes again.
fn plan(
    workload: Workload,
    options: &BenchOptions,
    manager: &str,
    organizations: &[Organization],
    previous: &[Planned],
) -> Plan {
    let (n, l, pct) = (
        options.commands,
        options.latency_commands,
        options.refusals_pct,
    );
    let at_rate = |commands: Vec<Planned>| (l > 0).then_some(commands);
    match workload {
        Workload::Single => Plan {
            throughput: workloads::single("t", n, ORGANIZATION, manager),
            at_rate: at_rate(workloads::single("l", l, ORGANIZATION, manager)),
        },
        Workload::Managers => Plan {
            throughput: workloads::managers("m", n, organizations),
            at_rate: None,
        },
        Workload::Mix => Plan {
            throughput: workloads::mix("x", n, organizations, pct),
            at_rate: at_rate(workloads::mix("y", l, organizations, pct)),
        },
        Workload::Duplicates => Plan {
            throughput: workloads::duplicates(previous),
            at_rate: None,
        },
    }
}

/// Runs each workload as fast as the worker goes, then (for `single` and
/// `mix`, unless skipped) at the offered rate; fills in the report and
/// returns how many commands were sent. A workload other than `single`
/// fails the benchmark when a reply is not what it had to be.
async fn workload_runs(
    options: &BenchOptions,
    runner: &Runner<'_>,
    manager: &str,
    organizations: &[Organization],
    report: &mut Report,
) -> Result<usize, BenchError> {
    let mut previous: Vec<Planned> = Vec::new();
    let mut sent = 0;
    for (i, &workload) in options.workloads.iter().enumerate() {
        if i > 0 {
            // The last run's outbox marks and housekeeping settle first.
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let Plan {
            throughput,
            at_rate,
        } = plan(workload, options, manager, organizations, &previous);
        let name = workload.name();
        let spread = match workload {
            Workload::Single => "by one manager".to_owned(),
            Workload::Duplicates => "published again".to_owned(),
            _ => format!("over {} organizations", organizations.len()),
        };
        eprintln!(
            "{name}: {} commands {spread} as fast as the worker goes…",
            throughput.len()
        );
        let measured = runner.run(&throughput, None).await?;
        check(workload, &measured)?;
        sent += throughput.len();
        let latency = match at_rate {
            Some(commands) => {
                eprintln!(
                    "{name}: {} commands offered at {}/s…",
                    commands.len(),
                    options.latency_rate
                );
                let paced = runner.run(&commands, Some(options.latency_rate)).await?;
                check(workload, &paced)?;
                sent += commands.len();
                Some(paced.figures)
            }
            None => None,
        };
        if workload == Workload::Single {
            report.invite = measured.figures.clone();
            report.latency = latency.clone();
        }
        *report.workloads.slot(workload) = Some(workload_figures(
            workload,
            measured,
            latency,
            organizations.len(),
        ));
        if workload != Workload::Duplicates {
            previous = throughput;
        }
    }
    report.workloads.compare_with_single();
    Ok(sent)
}

/// `single` reports its refusals (`not_applied`, target 0) as it always
/// has; the other workloads fail on a reply that was not the expected one.
fn check(workload: Workload, measured: &Measured) -> Result<(), BenchError> {
    if workload == Workload::Single {
        return Ok(());
    }
    measured.outcomes.check(workload.name())
}

fn workload_figures(
    workload: Workload,
    measured: Measured,
    latency: Option<InviteFigures>,
    organizations: usize,
) -> WorkloadFigures {
    let Measured { figures, outcomes } = measured;
    WorkloadFigures {
        run: figures,
        organizations: match workload {
            Workload::Single => 1,
            _ => organizations,
        },
        expected_not_applied: outcomes.expected_not_applied,
        duplicate_replies: outcomes.duplicates,
        emails: outcomes.emails,
        latency,
        vs_single: None,
        cpu_vs_single: None,
    }
}

/// Onboards the benchmark's organization through the worker and activates
/// its manager from the activation email; returns the manager's user id.
async fn onboard_manager(amqp_url: &str, prefix: &str, sink: &Sink) -> Result<String, BenchError> {
    let manager_email = "bench-manager@bench.example";
    sink.keep_body_for(manager_email);
    let mut client = CommandClient::connect(amqp_url, prefix).await?;
    let onboard = json!({
        "organization": {"id": ORGANIZATION, "name": "Bench B.V."},
        "contract_accounts": [{"id": "CA-1", "name": "Main"}],
        "delivery_accounts": [],
        "manager": {"type": "personal", "email": manager_email, "first_name": "Bench", "last_name": "Manager",
                    "phone": "+31201234567", "country": "NL"},
    });
    let reply = client
        .send(
            &CommandClient::envelope("onboard_organization", onboard, None),
            Duration::from_secs(30),
        )
        .await?;
    let manager = reply["data"]["manager_id"]
        .as_str()
        .ok_or_else(|| BenchError::new(format!("onboarding failed: {reply}")))?
        .to_owned();
    let token = activation_email_token(sink, manager_email).await?;
    let activated = client
        .send(
            &CommandClient::envelope("activate_user", json!({"token": token}), None),
            Duration::from_secs(30),
        )
        .await?;
    if activated["status"] != "applied" {
        return Err(BenchError::new(format!("activation failed: {activated}")));
    }
    Ok(manager)
}

/// The token in `email`'s activation email, once it has arrived (30 s at most).
pub(crate) async fn activation_email_token(sink: &Sink, email: &str) -> Result<String, BenchError> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(token) = sink.body_for(email).as_deref().and_then(activation_token) {
            return Ok(token);
        }
        if Instant::now() > deadline {
            return Err(BenchError::new(format!(
                "the activation email of the manager {email} did not arrive"
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The expiry sweep over `options.expire` expired invitations from `manager`,
/// run in this process with the worker's default settings.
async fn expiry_run(
    options: &BenchOptions,
    pool: &sqlx::PgPool,
    manager: &str,
) -> Result<ExpiryFigures, BenchError> {
    eprintln!("expiry sweep over {} expired invitations…", options.expire);
    let handler = Handler::new(
        pool.clone(),
        HandlerSettings {
            activation_ttl: chrono::Duration::days(7),
            password_reset_ttl: chrono::Duration::hours(1),
            resend_cooldown: chrono::Duration::seconds(60),
            mail_cap_per_day: 10,
            handoff: None,
        },
    );
    let manager = uuid::Uuid::parse_str(manager).map_err(|e| BenchError::new(e.to_string()))?;
    expiry::run(
        pool,
        &handler,
        ORGANIZATION,
        manager,
        options.expire,
        SWEEP_BATCH,
    )
    .await
}

/// The activation token in an email's quoted-printable text.
pub fn activation_token(raw: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(raw)
        .replace("=\r\n", "")
        .replace("=3D", "=");
    let start = text.find("/activate?token=")? + "/activate?token=".len();
    let token: String = text[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    (!token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PG_BASE: &str = "postgres://postgres@127.0.0.1:5432";
    const WAIT: Duration = Duration::from_secs(15);

    #[test]
    fn the_activation_token_is_read_from_quoted_printable() {
        let body = b"Activate: https://portal/activate?token=3Dab-c_1=\r\n23 now";
        assert_eq!(activation_token(body).as_deref(), Some("ab-c_123"));
        assert_eq!(activation_token(b"no link here"), None);
    }

    #[tokio::test]
    async fn a_second_benchmark_on_the_same_server_and_database_name_is_refused_while_the_first_runs()
     {
        let name = format!("ul_benchhold_{}", uuid::Uuid::new_v4().simple());
        let url = format!("{PG_BASE}/{name}");
        let first = BenchDatabase::hold(&url)
            .await
            .expect("the first benchmark holds its database");
        let refused = BenchDatabase::hold(&url)
            .await
            .err()
            .expect("a second benchmark with the same database is refused")
            .to_string();
        assert!(
            refused.contains("another benchmark is running")
                && refused.contains(&format!("{name}_bench")),
            "the refusal says why and names the database: {refused}"
        );
        // Another database name on the same server is another benchmark's own.
        let other = BenchDatabase::hold(&format!("{PG_BASE}/{name}_other")).await;
        assert!(other.is_ok(), "another name is free: {:?}", other.err());
        // Once the first has ended (its session closed), the name is free again.
        drop(first);
        let deadline = Instant::now() + WAIT;
        loop {
            match BenchDatabase::hold(&url).await {
                Ok(_) => break,
                Err(e) => assert!(
                    Instant::now() < deadline,
                    "the hold is released when the first benchmark ends: {e}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
