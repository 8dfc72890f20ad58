//! What operators rely on: metrics, health, a clean stop on SIGTERM, the
//! ops subcommands, and start-up that refuses a bad setting by name.

use crate::helpers::{AMQP_URL, PG_BASE, TestWorker, WAIT, eventually, person};
use serde_json::{Value, json};
use sqlx::Connection as _;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use user_lifecycle::broker::client::CommandClient;
use uuid::Uuid;

const BIN: &str = env!("CARGO_BIN_EXE_user-lifecycle");

/// The Prometheus text format as series (name and labels) → value.
fn samples(body: &str) -> HashMap<String, f64> {
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// The `# TYPE` of each metric family.
fn types(body: &str) -> HashMap<String, String> {
    body.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(name, kind)| (name.to_owned(), kind.trim().to_owned()))
        .collect()
}

fn now_unix() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Runs the binary with `args` and extra `env`; fails the test if it is
/// still running after `timeout`.
fn run_binary(args: &[&str], env: &[(&str, String)], timeout: Duration) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("LOG_FORMAT", "json")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn user-lifecycle");
    let deadline = Instant::now() + timeout;
    loop {
        if child.try_wait().expect("child status").is_some() {
            return child.wait_with_output().expect("child output");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("child output");
            panic!(
                "user-lifecycle {args:?} still running after {timeout:?}; stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `run_binary` off the async runtime, so the test keeps receiving meanwhile.
async fn run_binary_async(args: &[&str], env: Vec<(&'static str, String)>) -> Output {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_binary(&args, &env, Duration::from_secs(30))
    })
    .await
    .unwrap()
}

/// Drops a database when the test ends, however it ends.
struct DropDatabase(String);

impl Drop for DropDatabase {
    fn drop(&mut self) {
        let name = self.0.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let mut conn = sqlx::PgConnection::connect(&format!("{PG_BASE}/postgres"))
                    .await
                    .unwrap();
                let drop = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
                sqlx::raw_sql(sqlx::AssertSqlSafe(drop))
                    .execute(&mut conn)
                    .await
                    .unwrap();
            });
        })
        .join();
    }
}

async fn database_exists(name: &str) -> bool {
    let mut conn = sqlx::PgConnection::connect(&format!("{PG_BASE}/postgres"))
        .await
        .unwrap();
    sqlx::query_scalar::<_, bool>("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(name)
        .fetch_one(&mut conn)
        .await
        .unwrap()
}

/// Status of GET `path` on `addr`: 0 when nothing listens, 408 when no
/// answer comes within a second.
async fn http_status(addr: SocketAddr, path: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let get = async {
        let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else {
            return 0;
        };
        let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
        if stream.write_all(request.as_bytes()).await.is_err() {
            return 0;
        }
        let mut raw = String::new();
        let _ = stream.read_to_string(&mut raw).await;
        raw.split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    };
    tokio::time::timeout(Duration::from_secs(1), get)
        .await
        .unwrap_or(408)
}

fn onboarding(org: &str, email: &str) -> Value {
    json!({
        "organization": {"id": org, "name": format!("{org} B.V.")},
        "contract_accounts": [{"id": "CA-1", "name": "Main"}],
        "delivery_accounts": [],
        "manager": person(email, "Mara", "Manager"),
    })
}

#[tokio::test]
async fn metrics_expose_every_metric_of_the_contract_after_traffic() {
    let mut w =
        // The TTL leaves the manager's own onboarding time on a loaded machine.
        TestWorker::start_with(&[("EXPIRY_SCHEDULE", "* * * * * *"), ("ACTIVATION_TTL", "8s")])
            .await;
    let manager = w.onboard_active_manager("acme", "boss@acme.example").await;
    let invited = w.invite(&manager, "acme", "late@acme.example").await;
    assert_eq!(invited["status"], "applied", "{invited}");
    let user = invited["data"]["user_id"].as_str().unwrap().to_owned();
    w.smtp.mail_to("late@acme.example").await;
    // The sweep (every second) expires the invitation and tells the manager.
    w.event("user.invite_expired", Some(&user)).await;
    let to_manager = w.smtp.wait_for("boss@acme.example", 2, WAIT).await;
    assert!(
        to_manager[1].text().contains("late@acme.example"),
        "the invite_expired email names the user"
    );
    let dead = w.send_raw(b"not a command").await;
    assert_eq!(dead["status"], "invalid");
    w.dead_letter().await;

    // (series, what it must satisfy): users and outbox gauges are refreshed
    // every 5 s, so poll until the picture is complete.
    let now = now_unix();
    type Check = Box<dyn Fn(f64) -> bool>;
    let checks: Vec<(&str, Check)> = vec![
        (
            r#"user_lifecycle_commands_total{type="onboard_organization",outcome="applied"}"#,
            Box::new(|v| v == 1.0),
        ),
        (
            r#"user_lifecycle_commands_total{type="invite_user",outcome="applied"}"#,
            Box::new(|v| v == 1.0),
        ),
        (
            r#"user_lifecycle_commands_total{type="activate_user",outcome="applied"}"#,
            Box::new(|v| v == 1.0),
        ),
        (
            r#"user_lifecycle_command_duration_seconds_count{type="invite_user"}"#,
            Box::new(|v| v == 1.0),
        ),
        (
            r#"user_lifecycle_command_duration_seconds_bucket{type="invite_user",le="+Inf"}"#,
            Box::new(|v| v == 1.0),
        ),
        (
            r#"user_lifecycle_command_duration_seconds_sum{type="invite_user"}"#,
            Box::new(|v| v > 0.0 && v < 15.0),
        ),
        (
            r#"user_lifecycle_emails_total{template="activation",outcome="sent"}"#,
            Box::new(|v| v == 2.0),
        ),
        (
            r#"user_lifecycle_emails_total{template="invite_expired",outcome="sent"}"#,
            Box::new(|v| v == 1.0),
        ),
        ("user_lifecycle_outbox_pending", Box::new(|v| v == 0.0)),
        (
            "user_lifecycle_outbox_oldest_age_seconds",
            Box::new(|v| v == 0.0),
        ),
        (
            "user_lifecycle_invites_expired_total",
            Box::new(|v| v == 1.0),
        ),
        (
            r#"user_lifecycle_scheduler_runs_total{job="expiry",outcome="ok"}"#,
            Box::new(|v| v >= 1.0),
        ),
        (
            r#"user_lifecycle_scheduler_last_success_timestamp_seconds{job="expiry"}"#,
            Box::new(move |v| v > now - 60.0 && v < now + 60.0),
        ),
        (
            r#"user_lifecycle_dead_lettered_total{reason="not_json"}"#,
            Box::new(|v| v == 1.0),
        ),
        ("user_lifecycle_broker_connected", Box::new(|v| v == 1.0)),
        (
            r#"user_lifecycle_users{status="active"}"#,
            Box::new(|v| v == 1.0),
        ),
        (
            r#"user_lifecycle_users{status="expired"}"#,
            Box::new(|v| v == 1.0),
        ),
        (
            r#"user_lifecycle_users{status="invited"}"#,
            Box::new(|v| v == 0.0),
        ),
        (
            r#"user_lifecycle_users{status="removed"}"#,
            Box::new(|v| v == 0.0),
        ),
    ];
    let body = eventually("metrics as expected", Duration::from_secs(30), || async {
        let (status, body) = w.http_get("/metrics").await.expect("/metrics answers");
        assert_eq!(status, 200);
        let values = samples(&body);
        let failing: Vec<String> = checks
            .iter()
            .filter(|(series, ok)| !values.get(*series).is_some_and(|v| ok(*v)))
            .map(|(series, _)| format!("{series} = {:?}", values.get(*series)))
            .collect();
        if failing.is_empty() {
            Ok(body)
        } else {
            Err(Verbatim(format!(
                "\n{}\n--- /metrics ---\n{body}",
                failing.join("\n")
            )))
        }
    })
    .await;

    let declared = types(&body);
    for (name, kind) in [
        ("commands_total", "counter"),
        ("command_duration_seconds", "histogram"),
        ("emails_total", "counter"),
        ("outbox_pending", "gauge"),
        ("outbox_oldest_age_seconds", "gauge"),
        ("invites_expired_total", "counter"),
        ("scheduler_runs_total", "counter"),
        ("scheduler_last_success_timestamp_seconds", "gauge"),
        ("dead_lettered_total", "counter"),
        ("broker_connected", "gauge"),
        ("users", "gauge"),
    ] {
        let full = format!("user_lifecycle_{name}");
        assert_eq!(
            declared.get(&full).map(String::as_str),
            Some(kind),
            "# TYPE of {full}"
        );
    }
}

#[tokio::test]
async fn users_by_status_stay_exact_through_inserts_status_changes_deletes_and_concurrent_folds() {
    use user_lifecycle::store::stats;
    let w = TestWorker::start().await;
    let pool = w.pool(8).await;
    let truth = |pool: sqlx::PgPool| async move {
        let mut rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT status, count(*) FROM users GROUP BY status")
                .fetch_all(&pool)
                .await
                .unwrap();
        rows.sort();
        rows
    };
    let gauge = |pool: sqlx::PgPool| async move {
        let mut rows = stats::read(&pool).await.unwrap().users;
        rows.sort();
        rows
    };
    // Rounds of writes (a batch of invites, a sweep-like status change,
    // activations, deletions) with the gauge folded by several readers at
    // once meanwhile, besides the worker's own refresher.
    for round in 0..5 {
        let writes = async {
            sqlx::query(
                "INSERT INTO organizations (id, name) VALUES ('gauge', 'Gauge B.V.')
                 ON CONFLICT DO NOTHING",
            )
            .execute(&pool)
            .await
            .unwrap();
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO users (id, organization_id, kind, email, first_name, last_name,
                     phone, country, locale, role, permissions, status)
                 SELECT gen_random_uuid(), 'gauge', 'personal', 'g{round}-' || i || '@gauge.example',
                     'G', 'Auge', '+31201234567', 'NL', 'en', 'user', '{{}}',
                     CASE WHEN i % 3 = 0 THEN 'active' ELSE 'invited' END
                 FROM generate_series(1, 40) AS i"
            )))
            .execute(&pool)
            .await
            .unwrap();
            for sql in [
                "UPDATE users SET status = 'expired'
                 WHERE id IN (SELECT id FROM users WHERE status = 'invited' LIMIT 7)",
                // Same status again: no change to count.
                "UPDATE users SET updated_at = now() WHERE status = 'active'",
                "UPDATE users SET status = 'active'
                 WHERE id IN (SELECT id FROM users WHERE status = 'expired' LIMIT 2)",
                "DELETE FROM users WHERE id IN (SELECT id FROM users WHERE status = 'active' LIMIT 3)",
            ] {
                sqlx::query(sql).execute(&pool).await.unwrap();
            }
        };
        let folds = futures_util::future::join_all((0..4).map(|_| stats::read(&pool)));
        let (_, folded) = tokio::join!(writes, folds);
        for f in folded {
            f.expect("a fold beside writes and other folds succeeds");
        }
        assert_eq!(
            gauge(pool.clone()).await,
            truth(pool.clone()).await,
            "round {round}: users by status are the real counts"
        );
    }
    let rows = w.count("SELECT count(*) FROM user_status_changes").await;
    assert!(
        rows <= 4,
        "folded to one row per status, not one per change: {rows}"
    );
}

#[tokio::test]
async fn health_is_200_and_ready_once_the_broker_is_connected() {
    let w = TestWorker::start().await;
    let (status, body) = w.http_get("/healthz").await.unwrap();
    assert_eq!(status, 200, "{body}");
    let (status, body) = w.http_get("/readyz").await.unwrap();
    assert_eq!(status, 200, "{body}");
    let ready: Value = serde_json::from_str(body.trim()).expect("/readyz says why in JSON");
    assert_eq!(ready["ready"], true, "{ready}");
    assert_eq!(ready["broker"], true, "{ready}");
    assert_eq!(ready["database"], true, "{ready}");
    assert_eq!(
        w.metric("user_lifecycle_broker_connected ").await,
        Some(1.0)
    );
}

#[tokio::test]
async fn sigterm_stops_the_worker_with_status_zero() {
    let mut w = TestWorker::start().await;
    let reply = w
        .send(
            "onboard_organization",
            onboarding("acme", "boss@acme.example"),
            None,
        )
        .await;
    assert_eq!(reply["status"], "applied", "{reply}");
    let started = Instant::now();
    let status = w.terminate().await;
    assert!(status.success(), "exit status {status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "an idle worker stops promptly: {:?}",
        started.elapsed()
    );
    assert_eq!(
        http_status(w.metrics, "/healthz").await,
        0,
        "nothing listens after the exit"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_command_in_flight_finish_and_answer_before_the_exit() {
    let mut w = TestWorker::start().await;
    let database_url = format!("{PG_BASE}/{}", w.database);
    let mut probe = sqlx::PgConnection::connect(&database_url).await.unwrap();

    // Hold the worker's first write so the command is certainly in flight
    // when SIGTERM arrives.
    let mut lock = sqlx::PgConnection::connect(&database_url).await.unwrap();
    sqlx::raw_sql("BEGIN; LOCK TABLE processed_commands IN EXCLUSIVE MODE")
        .execute(&mut lock)
        .await
        .unwrap();
    let envelope = CommandClient::envelope(
        "onboard_organization",
        onboarding("acme", "boss@acme.example"),
        None,
    );
    let id = envelope["id"].as_str().unwrap().to_owned();
    w.client
        .publish_raw(
            "onboard_organization",
            &serde_json::to_vec(&envelope).unwrap(),
            &id,
        )
        .await
        .unwrap();
    let probing = tokio::sync::Mutex::new(&mut probe);
    eventually("the worker starting the command (waiting on the lock)", WAIT, || async {
        let mut probe = probing.lock().await;
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&mut **probe)
        .await
        .unwrap();
        (waiting > 0).then_some(())
    })
    .await;

    // Let the command go on once the worker has taken SIGTERM (it stops being ready).
    let metrics = w.metrics;
    let releaser = tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !matches!(http_status(metrics, "/readyz").await, 0 | 503)
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        sqlx::raw_sql("ROLLBACK").execute(&mut lock).await.unwrap();
    });
    let status = w.terminate().await;
    releaser.await.unwrap();
    assert!(status.success(), "exit status {status:?}");

    let stored: Option<String> =
        sqlx::query_scalar("SELECT status FROM processed_commands WHERE command_id = $1")
            .bind(&id)
            .fetch_optional(&mut probe)
            .await
            .unwrap();
    assert_eq!(
        stored.as_deref(),
        Some("applied"),
        "the in-flight command was committed before the exit"
    );
    let (correlation, reply) = w
        .client
        .next_reply(WAIT)
        .await
        .expect("the in-flight command's reply is published before the worker exits");
    assert_eq!(correlation, id);
    assert_eq!(reply["status"], "applied", "{reply}");
}

#[tokio::test]
async fn migrate_creates_a_missing_database_and_applies_the_migrations() {
    let name = format!("ul_test_migrate_{}", Uuid::new_v4().simple());
    let _cleanup = DropDatabase(name.clone());
    let url = format!("{PG_BASE}/{name}");
    assert!(!database_exists(&name).await);

    let out = run_binary_async(&["migrate"], vec![("DATABASE_URL", url.clone())]).await;
    assert!(
        out.status.success(),
        "migrate failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(database_exists(&name).await, "migrate created the database");
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    let mut catalog: Vec<String> = sqlx::query_scalar("SELECT name FROM permissions")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    catalog.sort();
    assert_eq!(
        catalog,
        [
            "cases.create",
            "cases.view",
            "documents.view",
            "invoices.view",
            "orders.create",
            "orders.view",
            "services.manage",
            "services.view"
        ],
        "the permission catalog is seeded"
    );
    conn.close().await.unwrap();

    let again = run_binary_async(&["migrate"], vec![("DATABASE_URL", url)]).await;
    assert!(
        again.status.success(),
        "a second migrate is a no-op: {}",
        String::from_utf8_lossy(&again.stderr)
    );
}

#[tokio::test]
async fn send_publishes_one_command_and_prints_the_reply_as_json() {
    let mut w = TestWorker::start().await;
    let env = vec![
        ("AMQP_URL", AMQP_URL.to_owned()),
        ("AMQP_PREFIX", w.prefix.clone()),
    ];

    let out = run_binary_async(
        &["send", "check_email", r#"{"email": "ann@example.com"}"#],
        env.clone(),
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reply: Value = serde_json::from_slice(&out.stdout).expect("stdout is the JSON reply");
    assert_eq!(reply["status"], "rejected", "{reply}");
    assert_eq!(
        reply["code"], "not_authorized",
        "check_email needs an actor: {reply}"
    );
    assert_eq!(reply["duplicate"], false);

    let data = onboarding("acme", "boss@acme.example").to_string();
    let out = run_binary_async(&["send", "onboard_organization", &data], env.clone()).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reply: Value = serde_json::from_slice(&out.stdout).expect("stdout is the JSON reply");
    assert_eq!(reply["status"], "applied", "{reply}");
    assert_eq!(reply["data"]["organization_id"], "acme");
    assert!(reply["data"]["manager_id"].is_string(), "{reply}");
    let onboarded = w.event("organization.onboarded", None).await;
    assert_eq!(onboarded["data"]["organization_id"], "acme", "{onboarded}");
    w.smtp.mail_to("boss@acme.example").await;

    let out = run_binary_async(&["send", "check_email", "not json"], env).await;
    assert!(!out.status.success(), "bad DATA is refused");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("DATA"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn a_bad_setting_stops_start_up_with_a_message_naming_it() {
    for (variable, value) in [
        ("ACTIVATION_TTL", "soon"),
        ("EXPIRY_SCHEDULE", "not cron"),
        ("RESEND_COOLDOWN", "-5s"),
        ("MAIL_URL", "ftp://mail.example.com"),
        ("PORTAL_URL", "portal"),
    ] {
        let id = Uuid::new_v4().simple().to_string();
        let database = format!("ul_test_{}", &id[..12]);
        let _cleanup = DropDatabase(database.clone());
        let mut env: Vec<(&str, String)> = vec![
            ("DATABASE_URL", format!("{PG_BASE}/{database}")),
            ("AMQP_URL", AMQP_URL.to_owned()),
            ("AMQP_PREFIX", format!("ult_{}", &id[..12])),
            ("MAIL_URL", "smtp://127.0.0.1:2525".to_owned()),
            ("METRICS_ADDR", "127.0.0.1:0".to_owned()),
            (
                "TEMPLATES_DIR",
                format!("{}/templates", env!("CARGO_MANIFEST_DIR")),
            ),
            ("PORTAL_URL", "https://portal.example.com".to_owned()),
        ];
        env.retain(|(k, _)| *k != variable);
        env.push((variable, value.to_owned()));
        let out = run_binary_async(&["run"], env).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "{variable}={value:?} must stop start-up"
        );
        assert!(
            stderr.contains(variable),
            "{variable}={value:?}: the message names {variable}:\n{stderr}"
        );
    }
}

/// What a look saw, printed as it is (not escaped) should the wait time out.
struct Verbatim(String);

impl std::fmt::Debug for Verbatim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
