//! Test harness: a real worker process per test, with its own database,
//! its own `AMQP_PREFIX`, and an SMTP server inside the test. Tests talk to
//! it only as an upstream service would: AMQP, SMTP and HTTP.
#![allow(dead_code)]

pub mod batch;
pub mod smtp;

use futures_util::{FutureExt, StreamExt};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties, Consumer};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

use user_lifecycle::broker::client::CommandClient;
use user_lifecycle::broker::publisher::header_str;

#[allow(unused_imports)]
pub use smtp::{Answer, Mail, SmtpServer};

pub const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
pub const PG_BASE: &str = "postgres://postgres@127.0.0.1:5432";
pub const WAIT: Duration = Duration::from_secs(15);

/// How often `eventually` looks again.
const POLL: Duration = Duration::from_millis(50);

/// What one look of `eventually` found: `Some`/`Ok` ends the wait with its
/// value; `None`/`Err` means not yet, and an `Err` says what was seen, for
/// the message should the wait time out.
pub trait Look<T> {
    fn found(self) -> Result<T, String>;
}

impl<T> Look<T> for Option<T> {
    fn found(self) -> Result<T, String> {
        self.ok_or_else(String::new)
    }
}

impl<T, E: std::fmt::Debug> Look<T> for Result<T, E> {
    fn found(self) -> Result<T, String> {
        self.map_err(|seen| format!("; last seen: {seen:?}"))
    }
}

/// Looks with `look` every `POLL` until it finds what it waits for, and
/// returns that. Panics naming `what` (and the last thing seen) once
/// `timeout` has passed: a test waits for a condition, never for a time.
pub async fn eventually<T, L, F, Fut>(what: &str, timeout: Duration, mut look: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = L>,
    L: Look<T>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match look().await.found() {
            Ok(value) => return value,
            Err(seen) => assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: not within {timeout:?}{seen}"
            ),
        }
        tokio::time::sleep(POLL).await;
    }
}

/// A message taken from the dead-letter queue.
#[derive(Debug)]
pub struct DeadLetter {
    pub body: Vec<u8>,
    pub error: String,
    pub reason: String,
}

impl DeadLetter {
    /// Asserts that the dead letter is `envelope` as it was published,
    /// byte for byte.
    pub fn assert_body_is(&self, envelope: &Value) {
        assert!(
            self.body == bytes(envelope),
            "the original body is preserved: {}",
            String::from_utf8_lossy(&self.body)
        );
    }
}

/// The worker under test and the test's view of the world around it.
pub struct TestWorker {
    pub prefix: String,
    pub database: String,
    pub metrics: SocketAddr,
    pub smtp: SmtpServer,
    pub client: CommandClient,
    env: HashMap<String, String>,
    child: Option<Child>,
    replicas: Vec<(Child, SocketAddr)>,
    /// Where the main process's log starts for its latest spawn.
    log_from: u64,
    events: Consumer,
    seen: Vec<Value>,
    amqp: Connection,
}

/// The test's own AMQP side: a connection, a command client and a tap on
/// every event of `prefix`.
async fn connect_amqp(prefix: &str) -> (Connection, CommandClient, Consumer) {
    let amqp = Connection::connect(AMQP_URL, ConnectionProperties::default())
        .await
        .expect("RabbitMQ is up");
    let client = CommandClient::connect(AMQP_URL, prefix)
        .await
        .expect("command client");
    let channel = amqp.create_channel().await.unwrap();
    let exclusive = QueueDeclareOptions {
        exclusive: true,
        auto_delete: true,
        ..Default::default()
    };
    let tap = channel
        .queue_declare("".into(), exclusive, FieldTable::default())
        .await
        .unwrap();
    let events_exchange = format!("{prefix}.events");
    channel
        .queue_bind(
            tap.name().clone(),
            events_exchange.as_str().into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let no_ack = BasicConsumeOptions {
        no_ack: true,
        ..Default::default()
    };
    let events = channel
        .basic_consume(tap.name().clone(), "".into(), no_ack, FieldTable::default())
        .await
        .unwrap();
    (amqp, client, events)
}

/// The domain of the users a load test invites.
pub const LOAD: &str = "@load.example";

/// What a load of invitations left in the store (`TestWorker::load_tally`).
#[derive(Debug)]
pub struct LoadTally {
    /// Users invited at `…@load.example`.
    pub users: i64,
    /// `invite_user` commands with an idempotency record.
    pub processed: i64,
    /// `user.invited` audit records.
    pub audit: i64,
    /// Commands dead-lettered (outbox rows of kind `dead_letter`).
    pub dead: i64,
}

/// `invite_user` envelopes for `n` distinct users of `org`, acting as `actor`.
pub fn invite_envelopes(actor: &str, org: &str, tag: &str, n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| invite_envelope(actor, org, &format!("{tag}{i}{LOAD}")))
        .collect()
}

/// GET `path` on `addr`: (status, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;

    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await?;
    let status = raw
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// The metrics listener every worker under test asks for: port 0, so the
/// kernel picks a free port at bind time and no other process can take it
/// between a test choosing a port and the worker binding it.
const ANY_PORT: &str = "127.0.0.1:0";

/// Waits until the worker writes the address it serves `/metrics` on to
/// `addr_file` (`METRICS_ADDR_FILE`). Panics with the end of its log (from
/// byte `from` on) when the process exits first, or after 30 s.
async fn listening_addr(
    child: &mut Child,
    addr_file: &std::path::Path,
    log: &std::path::Path,
    from: u64,
) -> SocketAddr {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(addr) = std::fs::read_to_string(addr_file) {
            return addr.parse().expect("METRICS_ADDR_FILE holds an address");
        }
        let exited = child.try_wait().expect("worker status");
        if exited.is_some() || tokio::time::Instant::now() >= deadline {
            let text = std::fs::read(log).unwrap_or_default();
            let start = (from as usize).min(text.len());
            let text = String::from_utf8_lossy(&text[start..]).into_owned();
            let tail: Vec<&str> = text.lines().rev().take(20).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            panic!(
                "worker ({}) never served /metrics; {}:\n{}",
                exited.map_or("still running after 30 s".to_owned(), |s| format!(
                    "exited with {s}"
                )),
                log.display(),
                tail.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Starts `user-lifecycle run` with `env`, logging to `log`; it writes its
/// metrics address to `addr_file` (removed first, so a stale one is not read).
fn spawn_worker(
    env: &HashMap<String, String>,
    log: std::fs::File,
    addr_file: &std::path::Path,
) -> Child {
    let _ = std::fs::remove_file(addr_file);
    Command::new(env!("CARGO_BIN_EXE_user-lifecycle"))
        .arg("run")
        .envs(env)
        .env("METRICS_ADDR_FILE", addr_file)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn the worker")
}

fn log_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-logs");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

impl TestWorker {
    /// A worker with the contract's defaults.
    pub async fn start() -> TestWorker {
        TestWorker::start_with(&[]).await
    }

    /// A worker with some settings overridden, e.g. `("ACTIVATION_TTL", "2s")`.
    pub async fn start_with(settings: &[(&str, &str)]) -> TestWorker {
        let id = Uuid::new_v4().simple().to_string();
        let prefix = format!("ult_{}", &id[..12]);
        let database = format!("ul_test_{}", &id[..12]);
        let smtp = SmtpServer::start().await;
        // Known once the worker has bound it (see `listening_addr`).
        let metrics: SocketAddr = ANY_PORT.parse().unwrap();
        let mut env: HashMap<String, String> = [
            ("DATABASE_URL", format!("{PG_BASE}/{database}")),
            ("AMQP_URL", AMQP_URL.to_owned()),
            ("AMQP_PREFIX", prefix.clone()),
            ("MAIL_URL", smtp.url()),
            ("METRICS_ADDR", ANY_PORT.to_owned()),
            (
                "TEMPLATES_DIR",
                format!("{}/templates", env!("CARGO_MANIFEST_DIR")),
            ),
            ("PORTAL_URL", "https://portal.example.com".to_owned()),
            ("OUTBOX_RETRY_BASE", "200ms".to_owned()),
            ("RUST_LOG", "info,user_lifecycle=debug".to_owned()),
            ("LOG_FORMAT", "json".to_owned()),
            ("DATABASE_MAX_CONNECTIONS", "4".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        for (k, v) in settings {
            env.insert((*k).to_owned(), (*v).to_owned());
        }
        let (amqp, client, events) = connect_amqp(&prefix).await;
        let mut worker = TestWorker {
            prefix,
            database,
            metrics,
            smtp,
            client,
            env,
            child: None,
            replicas: Vec::new(),
            log_from: 0,
            events,
            seen: vec![],
            amqp,
        };
        worker.spawn();
        worker.wait_ready().await;
        worker
    }

    fn log_path(&self) -> PathBuf {
        log_dir().join(format!("{}.log", self.prefix))
    }

    fn addr_path(&self) -> PathBuf {
        log_dir().join(format!("{}.addr", self.prefix))
    }

    /// Starts the worker process (again); `wait_ready` learns its address.
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        self.log_from = log.metadata().unwrap().len();
        let child = spawn_worker(&self.env, log, &self.addr_path());
        self.child = Some(child);
        self.metrics = ANY_PORT.parse().unwrap();
    }

    /// Stops the worker (SIGTERM) and starts it again with `settings` changed,
    /// on the same database and prefix.
    pub async fn restart_with(&mut self, settings: &[(&str, &str)]) {
        let status = self.terminate().await;
        assert!(status.success(), "worker exited with {status}");
        for (k, v) in settings {
            self.env.insert((*k).to_owned(), (*v).to_owned());
        }
        self.spawn();
        self.wait_ready().await;
    }

    /// A worker whose organization `acme` has an active manager
    /// (`boss@acme.example`), set up with the default settings and then
    /// restarted with `settings`: a short TTL under test cannot expire the
    /// manager's own invitation during set-up. Returns the manager's id.
    pub async fn with_active_manager(settings: &[(&str, &str)]) -> (TestWorker, String) {
        let mut w = TestWorker::start().await;
        let manager = w.onboard_active_manager("acme", "boss@acme.example").await;
        w.restart_with(settings).await;
        (w, manager)
    }

    /// Waits until `/readyz` answers 200 (after a spawn: once the worker
    /// says where it listens).
    pub async fn wait_ready(&mut self) {
        if self.metrics.port() == 0 {
            let (log, addr) = (self.log_path(), self.addr_path());
            let from = self.log_from;
            let child = self.child.as_mut().expect("a running worker");
            self.metrics = listening_addr(child, &addr, &log, from).await;
        }
        let what = format!("worker {} ready (see target/test-logs)", self.prefix);
        let metrics = self.metrics;
        eventually(&what, Duration::from_secs(30), || async move {
            matches!(http_get(metrics, "/readyz").await, Ok((200, _))).then_some(())
        })
        .await;
    }

    /// GET `path` on the metrics listener: (status, body).
    pub async fn http_get(&self, path: &str) -> std::io::Result<(u16, String)> {
        http_get(self.metrics, path).await
    }

    /// The value of a metric line that starts with `series` (name and labels).
    pub async fn metric(&self, series: &str) -> Option<f64> {
        let (_, body) = self.http_get("/metrics").await.ok()?;
        body.lines()
            .find(|l| l.starts_with(series))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    /// Sends a command and returns its reply.
    pub async fn send(&mut self, kind: &str, data: Value, actor: Option<&str>) -> Value {
        let envelope = CommandClient::envelope(kind, data, actor);
        self.send_envelope(&envelope).await
    }

    /// Sends a prepared envelope and returns its reply.
    pub async fn send_envelope(&mut self, envelope: &Value) -> Value {
        self.client.send(envelope, WAIT).await.expect("a reply")
    }

    /// Publishes raw bytes as a command (with `reply_to`) and returns the next reply.
    pub async fn send_raw(&mut self, body: &[u8]) -> Value {
        let correlation = Uuid::new_v4().to_string();
        self.client
            .publish_raw("raw", body, &correlation)
            .await
            .expect("published");
        loop {
            let (c, reply) = self.client.next_reply(WAIT).await.expect("a reply");
            if c == correlation {
                return reply;
            }
        }
    }

    /// Waits for the event of `kind` about `subject` (any subject when `None`).
    pub async fn event(&mut self, kind: &str, subject: Option<&str>) -> Value {
        let matches = |e: &Value| e["type"] == kind && subject.is_none_or(|s| e["subject"] == s);
        if let Some(i) = self.seen.iter().position(matches) {
            return self.seen.remove(i);
        }
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let next = tokio::time::timeout_at(deadline, self.events.next())
                .await
                .unwrap_or_else(|_| {
                    panic!("no {kind} event within {WAIT:?}; seen: {:?}", self.seen)
                });
            let delivery = next.expect("event stream open").expect("event delivery");
            let event: Value = serde_json::from_slice(&delivery.data).expect("event is JSON");
            if matches(&event) {
                return event;
            }
            self.seen.push(event);
        }
    }

    /// All events of `kind` that have arrived (and were not taken by
    /// `event`), without waiting for more. To prove an event absent, make
    /// it have arrived first if it was ever coming: await a later event
    /// (`events_barrier`, or one of a later command).
    pub async fn events_of(&mut self, kind: &str) -> Vec<Value> {
        while let Some(Some(Ok(d))) = self.events.next().now_or_never() {
            self.seen.push(serde_json::from_slice(&d.data).unwrap());
        }
        self.seen
            .iter()
            .filter(|e| e["type"] == kind)
            .cloned()
            .collect()
    }

    /// Waits until the events of `kind` that have arrived satisfy `enough`,
    /// and returns them; panics naming `what` after `timeout`.
    pub async fn events_once(
        &mut self,
        kind: &str,
        what: &str,
        timeout: Duration,
        enough: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let arrived = self.events_of(kind).await;
            if enough(&arrived) {
                return arrived;
            }
            let next = tokio::time::timeout_at(deadline, self.events.next())
                .await
                .unwrap_or_else(|_| panic!("{what}: not within {timeout:?}; seen: {arrived:?}"));
            let delivery = next.expect("event stream open").expect("event delivery");
            self.seen
                .push(serde_json::from_slice(&delivery.data).expect("event is JSON"));
        }
    }

    /// A barrier on the event stream: invites a user of `org` of its own as
    /// `actor` and waits for its `user.invited`. A command's events are
    /// handed to the relay as it commits and published in that order, all
    /// to the one exchange the test's tap reads in order; so once this
    /// returns, every event of every command answered before has arrived.
    pub async fn events_barrier(&mut self, actor: &str, org: &str) {
        let email = format!("barrier-{}@{org}.example", Uuid::new_v4().simple());
        let barrier = user_id(&self.invite(actor, org, &email).await);
        self.event("user.invited", Some(&barrier)).await;
    }

    /// Polls `/metrics` until `series` is at least `want`; returns its value.
    pub async fn metric_reaches(&self, series: &str, want: f64) -> f64 {
        let what = format!("{series} reaching {want}");
        eventually(&what, WAIT, || async {
            let got = self.metric(series).await;
            got.filter(|v| *v >= want).ok_or(got)
        })
        .await
    }

    /// Waits until `series` reaches `want` and asserts it went no further.
    pub async fn metric_becomes(&self, series: &str, want: f64) {
        assert_eq!(self.metric_reaches(series, want).await, want, "{series}");
    }

    /// `metric_becomes` for `user_lifecycle_dead_lettered_total` of each
    /// reason in `counts`.
    pub async fn dead_lettered_become(&self, counts: &[(&str, f64)]) {
        for (reason, count) in counts {
            let series = format!("user_lifecycle_dead_lettered_total{{reason=\"{reason}\"}}");
            self.metric_becomes(&series, *count).await;
        }
    }

    /// Messages waiting in `P.commands.dead`.
    pub async fn dead_letters_waiting(&self) -> u32 {
        self.messages_waiting("commands.dead").await
    }

    /// Waits until exactly `n` messages are ready in the dead-letter queue.
    pub async fn dead_letters_reach(&self, n: u32) {
        eventually(&format!("{n} dead letter(s)"), WAIT, || async {
            let got = self.dead_letters_waiting().await;
            (got == n).then_some(()).ok_or(got)
        })
        .await
    }

    /// Messages ready in `P.<queue>`, read once no consumer is left on it
    /// (waits up to `WAIT`): the broker has then put a stopped worker's
    /// unacked deliveries back, so they are counted too.
    pub async fn messages_waiting(&self, queue: &str) -> u32 {
        let channel = self.amqp.create_channel().await.unwrap();
        let queue = format!("{}.{queue}", self.prefix);
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let what = format!("no consumer left on {queue}");
        eventually(&what, WAIT, || async {
            let declared = channel
                .queue_declare(queue.as_str().into(), passive, FieldTable::default())
                .await
                .unwrap();
            match declared.consumer_count() {
                0 => Ok(declared.message_count()),
                consumers => Err(format!("{consumers} consumer(s)")),
            }
        })
        .await
    }

    /// Takes the next message from the dead-letter queue.
    pub async fn dead_letter(&self) -> DeadLetter {
        let channel = self.amqp.create_channel().await.unwrap();
        let queue = format!("{}.commands.dead", self.prefix);
        let m = eventually("a dead letter", WAIT, || async {
            channel
                .basic_get(queue.as_str().into(), BasicGetOptions::default())
                .await
                .unwrap()
        })
        .await;
        m.delivery
            .acker
            .ack(BasicAckOptions::default())
            .await
            .unwrap();
        let headers = m.delivery.properties.headers().clone().unwrap_or_default();
        DeadLetter {
            body: m.delivery.data.clone(),
            error: header_str(&headers, "x-error").unwrap_or_default(),
            reason: header_str(&headers, "x-error-reason").unwrap_or_default(),
        }
    }

    /// The user's audit trail, through the `history` ops command.
    pub fn history(&self, user_id: &str) -> Vec<Value> {
        let out = Command::new(env!("CARGO_BIN_EXE_user-lifecycle"))
            .args(["history", user_id])
            .env("DATABASE_URL", &self.env["DATABASE_URL"])
            .output()
            .expect("run history");
        assert!(
            out.status.success(),
            "history failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).expect("one JSON record per line"))
            .collect()
    }

    /// The worker's log so far (JSON lines, one file per test worker).
    pub fn log(&self) -> String {
        std::fs::read_to_string(log_dir().join(format!("{}.log", self.prefix))).unwrap_or_default()
    }

    /// The worker's JSON log lines once one of them satisfies `wanted`.
    /// The worker logs after it has handed a command's reply and events on,
    /// so a test that has seen those may still be ahead of the log; this
    /// waits up to `WAIT`, then panics naming what it waited for.
    pub async fn log_lines_once(&self, what: &str, wanted: impl Fn(&Value) -> bool) -> Vec<Value> {
        let waited = format!("a log line {what} in target/test-logs/{}.log", self.prefix);
        eventually(&waited, WAIT, || async {
            let lines: Vec<Value> = self
                .log()
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect();
            lines.iter().any(&wanted).then_some(lines)
        })
        .await
    }

    /// Reconnects the test's own AMQP side (after a broker restart).
    pub async fn reconnect_amqp(&mut self) {
        let (amqp, client, events) = connect_amqp(&self.prefix).await;
        self.amqp = amqp;
        self.client = client;
        self.events = events;
    }

    /// Kills the worker with SIGKILL: no chance to finish anything.
    pub fn kill(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().expect("SIGKILL");
        child.wait().expect("reaped");
    }

    /// Starts one more worker process on the same database, queue and SMTP
    /// server; returns its metrics address.
    pub async fn spawn_replica(&mut self) -> SocketAddr {
        let n = self.replicas.len() + 1;
        let path = log_dir().join(format!("{}-replica{n}.log", self.prefix));
        let log = std::fs::File::create(&path).unwrap();
        let addr_file = path.with_extension("addr");
        let mut child = spawn_worker(&self.env, log, &addr_file);
        let addr = listening_addr(&mut child, &addr_file, &path, 0).await;
        self.replicas.push((child, addr));
        eventually(
            &format!("replica {n} ready"),
            Duration::from_secs(30),
            || async { matches!(http_get(addr, "/readyz").await, Ok((200, _))).then_some(()) },
        )
        .await;
        addr
    }

    /// Metrics text of every running process (main first, then replicas).
    pub async fn all_metrics(&self) -> Vec<String> {
        let mut out = vec![
            self.http_get("/metrics")
                .await
                .map(|(_, b)| b)
                .unwrap_or_default(),
        ];
        for (_, addr) in &self.replicas {
            out.push(
                http_get(*addr, "/metrics")
                    .await
                    .map(|(_, b)| b)
                    .unwrap_or_default(),
            );
        }
        out
    }

    /// A connection to the worker's database, for checks the wire cannot make.
    pub async fn db(&self) -> sqlx::PgConnection {
        use sqlx::Connection as _;
        sqlx::PgConnection::connect(&self.env["DATABASE_URL"])
            .await
            .expect("connect to the test database")
    }

    /// A pool of at most `connections` on the worker's database, for
    /// driving the library's own store and scheduler functions.
    pub async fn pool(&self, connections: u32) -> sqlx::PgPool {
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(connections)
            .connect(&self.env["DATABASE_URL"])
            .await
            .expect("pool on the test database")
    }

    /// One number from the worker's database.
    pub async fn count(&self, sql: &'static str) -> i64 {
        let mut conn = self.db().await;
        sqlx::query_scalar(sql)
            .fetch_one(&mut conn)
            .await
            .expect("count query")
    }

    /// Waits until every outbox row is sent or given up on (up to
    /// `timeout`, then panics): past that nothing more is delivered, a
    /// second copy included, so what arrived can be counted for good.
    pub async fn outbox_drained(&self, timeout: Duration) {
        eventually("every outbox row delivered", timeout, || async {
            let pending = self
                .count("SELECT count(*) FROM outbox WHERE sent_at IS NULL AND failed_at IS NULL")
                .await;
            if pending == 0 {
                Ok(())
            } else {
                Err(format!("{pending} row(s) undelivered"))
            }
        })
        .await
    }

    /// Publishes `envelope` (confirmed, with `reply_to`) without waiting
    /// for its reply; returns its id, which its reply is correlated by.
    pub async fn publish(&self, envelope: &Value) -> String {
        let id = envelope["id"].as_str().unwrap().to_owned();
        self.client
            .publish_raw(envelope["type"].as_str().unwrap(), &bytes(envelope), &id)
            .await
            .expect("published");
        id
    }

    /// Publishes `envelopes` (confirmed, with `reply_to`), returns their ids.
    pub async fn publish_all(&self, envelopes: &[Value]) -> Vec<String> {
        let mut ids = Vec::with_capacity(envelopes.len());
        for envelope in envelopes {
            ids.push(self.publish(envelope).await);
        }
        ids
    }

    /// Publishes `envelopes` all at once and returns the first reply to
    /// each, in the order sent (panics on one missing after 30 s).
    pub async fn answers(&mut self, envelopes: &[Value]) -> Vec<Value> {
        let ids = self.publish_all(envelopes).await;
        let replies = self.replies_for(&ids, Duration::from_secs(30)).await;
        ids.iter()
            .map(|id| {
                replies
                    .get(id)
                    .and_then(|r| r.first())
                    .cloned()
                    .unwrap_or_else(|| panic!("no reply for {id}"))
            })
            .collect()
    }

    /// The first reply to the command `id` (published before), within
    /// `timeout`: panics if none came.
    pub async fn reply_for(&mut self, id: &str, timeout: Duration) -> Value {
        let mut replies = self.replies_for(&[id.to_owned()], timeout).await;
        replies
            .remove(id)
            .and_then(|r| r.into_iter().next())
            .unwrap_or_else(|| panic!("no reply to {id} within {timeout:?}"))
    }

    /// Collects replies for those of `ids` with none in `replies` yet (up
    /// to `timeout`, see `replies_for`) and adds them to `replies`.
    pub async fn replies_for_missing(
        &mut self,
        ids: &[String],
        replies: &mut HashMap<String, Vec<Value>>,
        timeout: Duration,
    ) {
        let missing: Vec<String> = ids
            .iter()
            .filter(|id| !replies.contains_key(*id))
            .cloned()
            .collect();
        for (id, more) in self.replies_for(&missing, timeout).await {
            replies.entry(id).or_default().extend(more);
        }
    }

    /// Collects replies until every id in `ids` has at least one (or `timeout`);
    /// returns all replies by id.
    pub async fn replies_for(
        &mut self,
        ids: &[String],
        timeout: Duration,
    ) -> HashMap<String, Vec<Value>> {
        let mut replies: HashMap<String, Vec<Value>> = HashMap::new();
        for (correlation, reply) in self.replies_in_arrival_order(ids, timeout).await {
            replies.entry(correlation).or_default().push(reply);
        }
        replies
    }

    /// Collects replies until every id in `ids` has at least one (or
    /// `timeout`); returns all of them as they arrived, with their ids.
    pub async fn replies_in_arrival_order(
        &mut self,
        ids: &[String],
        timeout: Duration,
    ) -> Vec<(String, Value)> {
        let mut arrived = Vec::new();
        let mut waiting: std::collections::HashSet<&String> = ids.iter().collect();
        let deadline = tokio::time::Instant::now() + timeout;
        while !waiting.is_empty() {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.client.next_reply(left).await {
                Ok((correlation, reply)) => {
                    waiting.remove(&correlation);
                    arrived.push((correlation, reply));
                }
                Err(_) => break,
            }
        }
        arrived
    }

    /// Sends SIGTERM and waits for the exit status. Waits without blocking
    /// the test's runtime: the in-test SMTP server must keep answering while
    /// the worker drains.
    pub async fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let pid = child.id().to_string();
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill -TERM");
        loop {
            if let Some(status) = child.try_wait().expect("worker status") {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Onboards an organization with contract accounts CA-1, CA-2 and
    /// delivery account DA-1, activates its manager, returns the manager's id.
    pub async fn onboard_active_manager(&mut self, org: &str, email: &str) -> String {
        let reply = self
            .send(
                "onboard_organization",
                json!({
                    "organization": {"id": org, "name": format!("{org} B.V.")},
                    "contract_accounts": [{"id": "CA-1", "name": "Main"}, {"id": "CA-2", "name": "Second"}],
                    "delivery_accounts": [{"id": "DA-1", "name": "Shop", "contract_accounts": ["CA-1"]}],
                    "manager": person(email, "Mara", "Manager"),
                }),
                None,
            )
            .await;
        assert_eq!(reply["status"], "applied", "{reply}");
        let manager = reply["data"]["manager_id"].as_str().unwrap().to_owned();
        let token = self.smtp.mail_to(email).await.token("/activate");
        let activated = self
            .send("activate_user", json!({"token": token}), None)
            .await;
        assert_eq!(activated["status"], "applied", "{activated}");
        manager
    }

    /// Invites `email` into `org` (My Organization, role user) as `actor`; returns the reply.
    pub async fn invite(&mut self, actor: &str, org: &str, email: &str) -> Value {
        self.send("invite_user", invite_data(org, email), Some(actor))
            .await
    }

    /// Invites `email` into `org` as `actor` and waits for its activation
    /// email; returns the new user's id.
    pub async fn invited_user(&mut self, actor: &str, org: &str, email: &str) -> String {
        let user = user_id(&self.invite(actor, org, email).await);
        self.smtp.mail_to(email).await;
        user
    }

    /// Asks, as `actor`, for `user`'s activation email to be sent again;
    /// returns the reply.
    pub async fn resend_activation(&mut self, actor: &str, user: &str) -> Value {
        self.send_envelope(&resend_envelope(actor, user)).await
    }

    /// Asks for a password reset email to `email`; returns the reply.
    pub async fn request_password_reset(&mut self, email: &str) -> Value {
        self.send("request_password_reset", json!({"email": email}), None)
            .await
    }

    /// Sends `activate_user` with `token`; returns the reply.
    pub async fn activate(&mut self, token: &str) -> Value {
        self.send("activate_user", json!({"token": token}), None)
            .await
    }

    /// Holds `email`'s user row `FOR UPDATE` until the lock is released.
    pub async fn lock_user_row(&self, email: &str) -> RowLock {
        let mut conn = self.db().await;
        sqlx::raw_sql("BEGIN")
            .execute(&mut conn)
            .await
            .expect("begin the locking transaction");
        let locked: Option<i32> =
            sqlx::query_scalar("SELECT 1 FROM users WHERE email = $1 FOR UPDATE")
                .bind(email)
                .fetch_optional(&mut conn)
                .await
                .unwrap();
        assert_eq!(locked, Some(1), "{email}'s row is locked by the test");
        RowLock(conn)
    }

    /// Waits until at least `expected` load recipients (`…@load.example`)
    /// have mail (up to `timeout`); returns how many messages each got.
    pub async fn load_emails(&self, expected: usize, timeout: Duration) -> HashMap<String, usize> {
        let what = format!("emails to {expected} load recipients");
        eventually(&what, timeout, || async {
            let per_recipient = self.smtp.per_recipient(LOAD);
            (per_recipient.len() >= expected).then_some(per_recipient)
        })
        .await
    }

    /// What a load of invitations to `…@load.example` left in the store.
    pub async fn load_tally(&self) -> LoadTally {
        LoadTally {
            users: self
                .count("SELECT count(*) FROM users WHERE email LIKE '%@load.example'")
                .await,
            processed: self
                .count("SELECT count(*) FROM processed_commands WHERE command_type = 'invite_user'")
                .await,
            audit: self
                .count("SELECT count(*) FROM audit_log WHERE action = 'user.invited'")
                .await,
            dead: self
                .count("SELECT count(*) FROM outbox WHERE kind = 'dead_letter'")
                .await,
        }
    }

    /// Invites and activates a user; returns its id.
    pub async fn active_user(&mut self, actor: &str, org: &str, email: &str) -> String {
        let reply = self.invite(actor, org, email).await;
        assert_eq!(reply["status"], "applied", "{reply}");
        let token = self.smtp.mail_to(email).await.token("/activate");
        let activated = self
            .send("activate_user", json!({"token": token}), None)
            .await;
        assert_eq!(activated["status"], "applied", "{activated}");
        reply["data"]["user_id"].as_str().unwrap().to_owned()
    }
}

/// A valid personal `USER`.
pub fn person(email: &str, first: &str, last: &str) -> Value {
    json!({"type": "personal", "email": email, "first_name": first, "last_name": last,
           "phone": "+31 20 123 4567", "country": "NL"})
}

/// `invite_user` data for a plain user in My Organization.
pub fn invite_data(org: &str, email: &str) -> Value {
    json!({
        "organization_id": org,
        "delivery_account_id": null,
        "user": person(email, "Ivo", "Invitee"),
        "role": "user",
        "permissions": ["cases.view", "services.view"],
        "contract_accounts": ["CA-1"],
        "delivery_accounts": [],
    })
}

/// The `data` of a reply, once it is asserted `applied`.
pub fn applied(reply: &Value) -> &Value {
    assert_eq!(reply["status"], "applied", "{reply}");
    &reply["data"]
}

/// The `user_id` of an `applied` reply.
pub fn user_id(reply: &Value) -> String {
    applied(reply)["user_id"]
        .as_str()
        .unwrap_or_else(|| panic!("a user_id in {reply}"))
        .to_owned()
}

/// A JSON value as the bytes of a message body.
pub fn bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap()
}

/// An `invite_user` envelope for `email` into `org`, acting as `actor`.
pub fn invite_envelope(actor: &str, org: &str, email: &str) -> Value {
    CommandClient::envelope("invite_user", invite_data(org, email), Some(actor))
}

/// A `resend_activation` envelope for `user`, acting as `actor`.
pub fn resend_envelope(actor: &str, user: &str) -> Value {
    CommandClient::envelope("resend_activation", json!({"user_id": user}), Some(actor))
}

/// A user's row held `FOR UPDATE` by a transaction of the test's own, until
/// `release`: the worker's statements on that row wait for it.
pub struct RowLock(sqlx::PgConnection);

impl RowLock {
    /// Ends the holding transaction: the worker may take the row.
    pub async fn release(mut self) {
        sqlx::raw_sql("ROLLBACK")
            .execute(&mut self.0)
            .await
            .expect("end the locking transaction");
    }
}

impl Drop for TestWorker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for (mut child, _) in self.replicas.drain(..) {
            let _ = child.kill();
            let _ = child.wait();
        }
        let database = self.database.clone();
        let prefix = self.prefix.clone();
        // Clean up on a thread of its own: Drop cannot await.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                use sqlx::Connection as _;
                if let Ok(mut conn) =
                    sqlx::PgConnection::connect(&format!("{PG_BASE}/postgres")).await
                {
                    let drop = format!("DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)");
                    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(drop))
                        .execute(&mut conn)
                        .await;
                }
                if let Ok(conn) =
                    Connection::connect(AMQP_URL, ConnectionProperties::default()).await
                    && let Ok(ch) = conn.create_channel().await
                {
                    for q in [
                        format!("{prefix}.commands"),
                        format!("{prefix}.commands.dead"),
                    ] {
                        let _ = ch
                            .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                            .await;
                    }
                    for x in ["commands", "dead", "events"] {
                        let name = format!("{prefix}.{x}");
                        let _ = ch
                            .exchange_delete(name.as_str().into(), ExchangeDeleteOptions::default())
                            .await;
                    }
                }
            });
        })
        .join();
    }
}
