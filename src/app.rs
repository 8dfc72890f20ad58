//! The running worker as an application object: `build` wires the adapters
//! and binds the metrics listener, `metrics_addr` says where it listens,
//! `run_until_stopped` runs until SIGTERM or Ctrl-C and shuts down cleanly.
//!
//! Start-up fails fast with a message naming what to fix (bad template,
//! unreachable database, port taken); after that the worker never exits on
//! its own: broker and database outages are waited out.

#![cfg(feature = "worker")]

use anyhow::Context;
use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::PgPool;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_cron_scheduler::JobScheduler;

use crate::broker::{Topology, session};
use crate::config::{self, Settings};
use crate::domain::user::UserStatus;
use crate::handler::{Handler, HandlerSettings};
use crate::mail::{Mailer, Renderer};
use crate::outbox::{Handoff, HandoffQueues, Wakeup};
use crate::telemetry::health::Health;
use crate::telemetry::http::{self, Endpoints};
use crate::telemetry::metrics;
use crate::worker::{Deps, Relay, RelaySettings, consume};
use crate::{scheduler, store};

/// Outbox rows the relay claims per pass (and emails it keeps queued).
const RELAY_BATCH: i64 = 500;

/// How long the relay keeps delivering what is due after shutdown.
const RELAY_FLUSH: Duration = Duration::from_secs(5);

fn chrono_duration(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// The worker, built and ready to run.
pub struct Application {
    settings: Settings,
    pool: PgPool,
    health: Health,
    prometheus: PrometheusHandle,
    listener: TcpListener,
    metrics_addr: SocketAddr,
    renderer: Renderer,
    mailer: Mailer,
}

/// The worker's tasks while it runs, in the order they are stopped.
struct Running {
    stop: watch::Sender<bool>,
    broker: JoinHandle<Option<session::Session>>,
    jobs: JobScheduler,
    relay_stop: watch::Sender<bool>,
    relay_task: JoinHandle<()>,
    relay: Arc<Relay>,
    others: Vec<JoinHandle<()>>,
}

impl Application {
    /// Checks the settings, loads the templates, sets up the mail
    /// transport, connects to PostgreSQL and migrates it, and binds the
    /// metrics listener. Nothing is consumed yet.
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        config::check_mail_credentials(&settings.mail_url).map_err(anyhow::Error::msg)?;
        for warning in
            config::plaintext_warnings(&settings.database.database_url, &settings.amqp.amqp_url)
        {
            tracing::warn!("{warning}");
        }
        let prometheus = metrics::install().context("cannot install the metrics recorder")?;
        let renderer =
            Renderer::load(&settings.templates_dir, &settings.portal_url).with_context(|| {
                format!(
                    "loading templates from {} (TEMPLATES_DIR)",
                    settings.templates_dir.display()
                )
            })?;
        let mailer = Mailer::new(
            &settings.mail_url,
            settings.mail_from.clone(),
            settings.mail_timeout,
            settings.mail_pool_size,
        )
        .context("setting up the mail transport (MAIL_URL)")?;
        scheduler::validate("EXPIRY_SCHEDULE", &settings.expiry_schedule)?;
        scheduler::validate("HOUSEKEEPING_SCHEDULE", &settings.housekeeping_schedule)?;
        let pool = connect_and_migrate(&settings).await?;
        let health = Health::default();
        health.set_database(true);
        let listener = TcpListener::bind(settings.metrics_addr)
            .await
            .with_context(|| {
                format!("cannot listen on {} (METRICS_ADDR)", settings.metrics_addr)
            })?;
        // The bound address, not the setting: with port 0 the kernel picks one.
        let metrics_addr = listener
            .local_addr()
            .with_context(|| format!("reading the address bound for {}", settings.metrics_addr))?;
        Ok(Application {
            settings,
            pool,
            health,
            prometheus,
            listener,
            metrics_addr,
            renderer,
            mailer,
        })
    }

    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_addr
    }

    /// Runs until SIGTERM or Ctrl-C, then shuts down cleanly.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.run_until(wait_for_signal()).await
    }

    /// Runs until `stop` completes, then shuts down cleanly: no new
    /// commands, in-flight ones finished within the grace period, what
    /// they committed delivered.
    pub async fn run_until(self, stop: impl Future<Output = ()>) -> anyhow::Result<()> {
        tracing::info!(addr = %self.metrics_addr, "serving /metrics, /healthz, /readyz");
        let pool = self.pool.clone();
        let health = self.health.clone();
        let grace = self.settings.shutdown_grace + Duration::from_secs(2);
        let prefix = self.settings.amqp.amqp_prefix.clone();
        let running = self.start().await?;
        tracing::info!(prefix = %prefix, "user-lifecycle worker started");
        stop.await;
        tracing::info!("shutting down: no new commands, finishing in-flight work");
        health.set_stopping();
        running.shut_down(grace).await;
        pool.close().await;
        tracing::info!("stopped");
        Ok(())
    }

    /// Starts the metrics server, the broker session with its consumer,
    /// the relay, the scheduler and the gauge refresher.
    async fn start(self) -> anyhow::Result<Running> {
        let (stop, stop_rx) = watch::channel(false);
        let wakeup = Arc::new(Wakeup::default());
        let (sessions_tx, sessions_rx) = watch::channel(None);
        let endpoints = Endpoints {
            metrics: self.prometheus.clone(),
            health: self.health.clone(),
            pool: self.pool.clone(),
        };
        let http_task = tokio::spawn(http::serve(self.listener, endpoints, stop_rx.clone()));
        // Commands write their outbox rows claimed by this worker's relay and
        // hand them over after the commit; rows the queues cannot take go
        // back to the table for any relay.
        let relay_owner = uuid::Uuid::new_v4();
        let (handoff, queues) = Handoff::new(
            relay_owner,
            self.settings.outbox_lease,
            2 * RELAY_BATCH as usize,
            wakeup.clone(),
            self.pool.clone(),
        );
        let deps = Arc::new(consumer_deps(
            &self.settings,
            &self.pool,
            &self.health,
            handoff,
        ));
        let consume_stop = stop_rx.clone();
        let broker = tokio::spawn(session::supervise(
            self.settings.amqp.amqp_url.clone(),
            Topology::new(&self.settings.amqp.amqp_prefix),
            self.settings.consumer_prefetch,
            self.health.clone(),
            sessions_tx,
            stop_rx.clone(),
            move |s| consume::run(s, deps.clone(), consume_stop.clone()),
        ));
        let relay = Arc::new(Relay {
            owner: relay_owner,
            pool: self.pool.clone(),
            renderer: Arc::new(self.renderer),
            mailer: Arc::new(self.mailer),
            sessions: sessions_rx,
            wakeup: wakeup.clone(),
            settings: relay_settings(&self.settings),
        });
        let (relay_stop, relay_task) = start_relay(&relay, queues);
        let jobs = start_jobs(&self.settings, &self.pool, wakeup).await?;
        let stats_task = tokio::spawn(refresh_gauges(
            self.pool.clone(),
            self.prometheus,
            self.health.clone(),
            stop_rx,
        ));
        Ok(Running {
            stop,
            broker,
            jobs,
            relay_stop,
            relay_task,
            relay,
            others: vec![stats_task, http_task],
        })
    }
}

impl Running {
    /// Stops consuming (in-flight commands get `grace`), stops the jobs,
    /// lets the relay deliver what the last commands committed while the
    /// broker session is still open, then closes the session.
    async fn shut_down(mut self, grace: Duration) {
        self.stop.send_replace(true);
        let session = match tokio::time::timeout(grace, self.broker).await {
            Ok(Ok(session)) => session,
            _ => {
                tracing::warn!("the consumer did not stop within the grace period");
                None
            }
        };
        if let Err(e) = self.jobs.shutdown().await {
            tracing::warn!(error = ?e, "scheduler shutdown");
        }
        self.relay_stop.send_replace(true);
        if tokio::time::timeout(2 * RELAY_FLUSH, self.relay_task)
            .await
            .is_err()
        {
            self.relay.release().await;
        }
        if let Some(session) = session {
            session.close().await;
        }
        for task in self.others {
            task.abort();
        }
    }
}

/// Creates the database if needed, connects, and applies the migrations.
async fn connect_and_migrate(settings: &Settings) -> anyhow::Result<PgPool> {
    store::create_database_if_missing(&settings.database.database_url)
        .await
        .context("creating the database (DATABASE_URL)")?;
    let pool = store::connect_with_timeouts(
        &settings.database.database_url,
        settings.database_max_connections,
        settings.database_lock_timeout,
        Duration::from_secs(30),
    )
    .await
    .context("connecting to PostgreSQL (DATABASE_URL)")?;
    // Before consuming: lookups need every user's email key.
    let collisions = store::apply_migrations(&pool)
        .await
        .context("applying migrations")?;
    metrics::email_key_collisions(collisions.len());
    Ok(pool)
}

/// What the consumer needs: the handler (which hands its commits' rows to
/// `handoff`) and its limits.
fn consumer_deps(
    settings: &Settings,
    pool: &PgPool,
    health: &Health,
    handoff: Arc<Handoff>,
) -> Deps {
    let handler = Handler::new(
        pool.clone(),
        HandlerSettings {
            activation_ttl: chrono_duration(settings.activation_ttl),
            password_reset_ttl: chrono_duration(settings.password_reset_ttl),
            resend_cooldown: chrono_duration(settings.resend_cooldown),
            mail_cap_per_day: settings.mail_cap_per_day,
            handoff: Some(handoff),
        },
    );
    Deps {
        handler,
        pool: pool.clone(),
        health: health.clone(),
        max_deliveries: settings.command_max_deliveries.max(1),
        // Each batch holds one connection; the relay and the scheduler
        // keep at least one. Few big transactions beat many small ones.
        concurrency: usize::from(settings.consumer_batches)
            .min(settings.database_max_connections.saturating_sub(1) as usize)
            .max(1),
        batch_size: usize::from(settings.consumer_prefetch),
        grace: settings.shutdown_grace,
    }
}

fn relay_settings(settings: &Settings) -> RelaySettings {
    RelaySettings {
        batch: RELAY_BATCH,
        lease: settings.outbox_lease,
        max_attempts: settings.mail_max_attempts,
        retry_base: settings.outbox_retry_base,
        concurrency: settings.mail_pool_size as usize,
    }
}

/// Runs `relay` on `queues` until its stop flag turns true.
fn start_relay(relay: &Arc<Relay>, queues: HandoffQueues) -> (watch::Sender<bool>, JoinHandle<()>) {
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(relay.clone().run(queues, stop_rx, RELAY_FLUSH));
    (stop, task)
}

/// Starts the expiry sweep and housekeeping.
async fn start_jobs(
    settings: &Settings,
    pool: &PgPool,
    wakeup: Arc<Wakeup>,
) -> anyhow::Result<JobScheduler> {
    scheduler::start(
        pool.clone(),
        &settings.expiry_schedule,
        settings.expiry_batch_size,
        wakeup,
        &settings.housekeeping_schedule,
        scheduler::housekeeping::Retention {
            tokens: settings.token_retention,
            failed_outbox: settings.failed_outbox_retention,
        },
    )
    .await
    .context("starting the scheduler")
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the worker");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Every few seconds: the gauges that come from the database, and upkeep.
async fn refresh_gauges(
    pool: PgPool,
    prometheus: PrometheusHandle,
    health: Health,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        match store::stats::read(&pool).await {
            Ok(stats) => {
                health.set_database(true);
                metrics::outbox(stats.outbox_pending, stats.outbox_oldest_age_seconds);
                for status in UserStatus::ALL {
                    let n = stats
                        .users
                        .iter()
                        .find(|(s, _)| s == status.as_str())
                        .map(|(_, n)| *n)
                        .unwrap_or(0);
                    metrics::users(status.as_str(), n);
                }
            }
            Err(e) => {
                health.set_database(false);
                tracing::warn!(error = %e, "cannot read statistics; is PostgreSQL up?");
            }
        }
        prometheus.run_upkeep();
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            _ = crate::shutdown::requested(&mut stop) => return,
        }
    }
}
