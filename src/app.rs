//! Wires the adapters into the running worker and shuts it down cleanly.
//!
//! Start-up fails fast with a message naming what to fix (bad template,
//! unreachable database, port taken); after that the worker never exits on
//! its own: broker and database outages are waited out.

use anyhow::Context;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

use crate::broker::{Topology, consumer, session};
use crate::config::{self, Settings};
use crate::domain::user::UserStatus;
use crate::handler::{Handler, HandlerSettings};
use crate::mail::{Mailer, Renderer};
use crate::outbox::{Handoff, Relay, RelaySettings, Wakeup};
use crate::telemetry::health::Health;
use crate::telemetry::http::{self, Endpoints};
use crate::telemetry::metrics;
use crate::{scheduler, store};

/// Outbox rows the relay claims per pass (and emails it keeps queued).
const RELAY_BATCH: i64 = 500;

fn chrono_duration(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// Runs the worker until SIGTERM or Ctrl-C.
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    config::check_mail_credentials(&settings.mail_url).map_err(anyhow::Error::msg)?;
    for warning in config::plaintext_warnings(&settings.database_url, &settings.amqp_url) {
        tracing::warn!("{warning}");
    }
    let prometheus = metrics::install().context("cannot install the metrics recorder")?;
    let health = Health::default();

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

    store::create_database_if_missing(&settings.database_url)
        .await
        .context("creating the database (DATABASE_URL)")?;
    let pool = store::connect_with_timeouts(
        &settings.database_url,
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
    health.set_database(true);

    let listener = tokio::net::TcpListener::bind(settings.metrics_addr)
        .await
        .with_context(|| format!("cannot listen on {} (METRICS_ADDR)", settings.metrics_addr))?;
    // The bound address, not the setting: with port 0 the kernel picks one.
    let bound = listener
        .local_addr()
        .with_context(|| format!("reading the address bound for {}", settings.metrics_addr))?;
    tracing::info!(addr = %bound, "serving /metrics, /healthz, /readyz");

    let (stop_tx, stop_rx) = watch::channel(false);
    let relay_notify = Arc::new(Wakeup::default());
    let (sessions_tx, sessions_rx) = watch::channel(None);

    let endpoints = Endpoints {
        metrics: prometheus.clone(),
        health: health.clone(),
        pool: pool.clone(),
    };
    let http_task = tokio::spawn(http::serve(listener, endpoints, stop_rx.clone()));

    // Commands write their outbox rows claimed by this worker's relay and
    // hand them over after the commit; rows the queues cannot take go back
    // to the table for any relay.
    let relay_owner = uuid::Uuid::new_v4();
    let (handoff, handoff_queues) = Handoff::new(
        relay_owner,
        settings.outbox_lease,
        2 * RELAY_BATCH as usize,
        relay_notify.clone(),
        pool.clone(),
    );
    let handler = Handler::new(
        pool.clone(),
        HandlerSettings {
            activation_ttl: chrono_duration(settings.activation_ttl),
            password_reset_ttl: chrono_duration(settings.password_reset_ttl),
            resend_cooldown: chrono_duration(settings.resend_cooldown),
            mail_cap_per_day: settings.mail_cap_per_day,
            handoff: Some(handoff.clone()),
        },
    );
    let deps = Arc::new(consumer::Deps {
        handler,
        pool: pool.clone(),
        health: health.clone(),
        max_deliveries: settings.command_max_deliveries.max(1),
        handoff,
        // Each batch holds one connection; the relay and the scheduler
        // keep at least one. Few big transactions beat many small ones.
        concurrency: usize::from(settings.consumer_batches)
            .min(settings.database_max_connections.saturating_sub(1) as usize)
            .max(1),
        batch_size: usize::from(settings.consumer_prefetch),
        grace: settings.shutdown_grace,
    });
    let consume_stop = stop_rx.clone();
    let broker_task = tokio::spawn(session::supervise(
        settings.amqp_url.clone(),
        Topology::new(&settings.amqp_prefix),
        settings.consumer_prefetch,
        health.clone(),
        sessions_tx,
        stop_rx.clone(),
        move |s| consumer::run(s, deps.clone(), consume_stop.clone()),
    ));

    let relay = Arc::new(Relay::new(
        relay_owner,
        pool.clone(),
        Arc::new(renderer),
        Arc::new(mailer),
        sessions_rx,
        relay_notify.clone(),
        RelaySettings {
            batch: RELAY_BATCH,
            lease: settings.outbox_lease,
            max_attempts: settings.mail_max_attempts,
            retry_base: settings.outbox_retry_base,
            concurrency: settings.mail_pool_size as usize,
        },
    ));
    let (relay_stop_tx, relay_stop_rx) = watch::channel(false);
    let relay_task = tokio::spawn(relay.clone().run(
        handoff_queues,
        relay_stop_rx,
        Duration::from_secs(5),
    ));

    let mut jobs = scheduler::start(
        pool.clone(),
        &settings.expiry_schedule,
        settings.expiry_batch_size,
        relay_notify.clone(),
        &settings.housekeeping_schedule,
        scheduler::housekeeping::Retention {
            tokens: settings.token_retention,
            failed_outbox: settings.failed_outbox_retention,
        },
    )
    .await
    .context("starting the scheduler")?;

    let stats_task = tokio::spawn(refresh_gauges(
        pool.clone(),
        prometheus,
        health.clone(),
        stop_rx.clone(),
    ));

    tracing::info!(prefix = %settings.amqp_prefix, "user-lifecycle worker started");
    wait_for_signal().await;
    tracing::info!("shutting down: no new commands, finishing in-flight work");
    health.set_stopping();
    stop_tx.send_replace(true);

    let grace = settings.shutdown_grace + Duration::from_secs(2);
    let session = match tokio::time::timeout(grace, broker_task).await {
        Ok(Ok(session)) => session,
        _ => {
            tracing::warn!("the consumer did not stop within the grace period");
            None
        }
    };
    if let Err(e) = jobs.shutdown().await {
        tracing::warn!(error = ?e, "scheduler shutdown");
    }
    // Deliver what the last commands committed while the broker session is still open.
    relay_stop_tx.send_replace(true);
    if tokio::time::timeout(Duration::from_secs(10), relay_task)
        .await
        .is_err()
    {
        relay.release().await;
    }
    if let Some(session) = session {
        session.close().await;
    }
    stats_task.abort();
    http_task.abort();
    pool.close().await;
    tracing::info!("stopped");
    Ok(())
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
    pool: sqlx::PgPool,
    prometheus: metrics_exporter_prometheus::PrometheusHandle,
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
