//! Test harness: a real worker process per test, with its own database,
//! its own `AMQP_PREFIX`, and an SMTP server inside the test. Tests talk to
//! it only as an upstream service would: AMQP, SMTP and HTTP.
#![allow(dead_code)]

pub mod smtp;

use futures_util::StreamExt;
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

/// A message taken from the dead-letter queue.
#[derive(Debug)]
pub struct DeadLetter {
    pub body: Vec<u8>,
    pub error: String,
    pub reason: String,
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
    events: Consumer,
    seen: Vec<Value>,
    amqp: Connection,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
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
        let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut env: HashMap<String, String> = [
            ("DATABASE_URL", format!("{PG_BASE}/{database}")),
            ("AMQP_URL", AMQP_URL.to_owned()),
            ("AMQP_PREFIX", prefix.clone()),
            ("MAIL_URL", smtp.url()),
            ("METRICS_ADDR", metrics.to_string()),
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
        let amqp = Connection::connect(AMQP_URL, ConnectionProperties::default())
            .await
            .expect("RabbitMQ is up");
        let client = CommandClient::connect(AMQP_URL, &prefix)
            .await
            .expect("command client");
        let channel = amqp.create_channel().await.unwrap();
        let tap = channel
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        channel
            .queue_bind(
                tap.name().clone(),
                format!("{prefix}.events").as_str().into(),
                "#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        let events = channel
            .basic_consume(
                tap.name().clone(),
                "".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        let mut worker = TestWorker {
            prefix,
            database,
            metrics,
            smtp,
            client,
            env,
            child: None,
            events,
            seen: vec![],
            amqp,
        };
        worker.spawn();
        worker.wait_ready().await;
        worker
    }

    /// Starts the worker process (again).
    pub fn spawn(&mut self) {
        let log = std::fs::File::create(log_dir().join(format!("{}.log", self.prefix))).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_user-lifecycle"))
            .arg("run")
            .envs(&self.env)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn the worker");
        self.child = Some(child);
    }

    /// Stops the worker (SIGTERM) and starts it again with `settings` changed,
    /// on the same database and prefix.
    pub async fn restart_with(&mut self, settings: &[(&str, &str)]) {
        let status = self.terminate();
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

    /// Waits until `/readyz` answers 200.
    pub async fn wait_ready(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok((200, _)) = self.http_get("/readyz").await {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "worker {} not ready in 30 s; see target/test-logs",
                self.prefix
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// GET `path` on the metrics listener: (status, body).
    pub async fn http_get(&self, path: &str) -> std::io::Result<(u16, String)> {
        let mut stream = tokio::net::TcpStream::connect(self.metrics).await?;
        stream
            .write_all(
                format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
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

    /// All events seen so far of `kind` (after draining what has arrived).
    pub async fn events_of(&mut self, kind: &str) -> Vec<Value> {
        while let Ok(Some(Ok(d))) =
            tokio::time::timeout(Duration::from_millis(200), self.events.next()).await
        {
            self.seen.push(serde_json::from_slice(&d.data).unwrap());
        }
        self.seen
            .iter()
            .filter(|e| e["type"] == kind)
            .cloned()
            .collect()
    }

    /// Takes the next message from the dead-letter queue.
    pub async fn dead_letter(&self) -> DeadLetter {
        let channel = self.amqp.create_channel().await.unwrap();
        let queue = format!("{}.commands.dead", self.prefix);
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(m) = channel
                .basic_get(queue.as_str().into(), BasicGetOptions::default())
                .await
                .unwrap()
            {
                m.delivery
                    .acker
                    .ack(BasicAckOptions::default())
                    .await
                    .unwrap();
                let headers = m.delivery.properties.headers().clone().unwrap_or_default();
                return DeadLetter {
                    body: m.delivery.data.clone(),
                    error: header_str(&headers, "x-error").unwrap_or_default(),
                    reason: header_str(&headers, "x-error-reason").unwrap_or_default(),
                };
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "nothing dead-lettered within {WAIT:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
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

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let pid = child.id().to_string();
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill -TERM");
        child.wait().expect("worker exit")
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

impl Drop for TestWorker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
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
