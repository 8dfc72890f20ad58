//! One live AMQP connection with its channels, and the supervisor that
//! keeps one up: connect, declare the topology, hand the session to the
//! consumer, and on loss reconnect with capped exponential backoff and jitter.

use lapin::options::{BasicQosOptions, ConfirmSelectOptions};
use lapin::{Channel, Connection, ConnectionProperties};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

use super::publisher::Publisher;
use super::topology::Topology;
use crate::telemetry::health::Health;

/// A connected session: a consuming channel and a confirm-mode publisher.
#[derive(Clone)]
pub struct Session {
    /// Channel the command consumer uses (with the prefetch set).
    pub consume: Channel,
    /// Confirm-mode publishing channel.
    pub publisher: Publisher,
    /// The names.
    pub topology: Topology,
    connection: Arc<Connection>,
}

impl Session {
    /// Connects to `url`, declares `topology`, sets `prefetch`.
    pub async fn connect(url: &str, topology: &Topology, prefetch: u16) -> lapin::Result<Session> {
        let properties =
            ConnectionProperties::default().with_connection_name("user-lifecycle".into());
        let connection = Connection::connect(url, properties).await?;
        let consume = connection.create_channel().await?;
        topology.declare(&consume).await?;
        consume
            .basic_qos(prefetch, BasicQosOptions::default())
            .await?;
        let publish = connection.create_channel().await?;
        publish
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(Session {
            consume,
            publisher: Publisher::new(publish, topology.clone()),
            topology: topology.clone(),
            connection: Arc::new(connection),
        })
    }

    /// Closes the connection politely.
    pub async fn close(&self) {
        if let Err(e) = self.connection.close(200, "bye".into()).await {
            tracing::debug!(error = %e, "closing the AMQP connection");
        }
    }
}

/// The current session, or `None` while disconnected.
pub type SessionWatch = watch::Receiver<Option<Session>>;

/// Delay before reconnect attempt `attempt` (0-based): 200 ms doubling,
/// capped at 30 s, with up to 50% jitter so replicas do not stampede.
pub fn backoff(attempt: u32) -> Duration {
    let base = 200u64.saturating_mul(1u64 << attempt.min(8)).min(30_000);
    let jitter = getrandom::u32()
        .map(|r| u64::from(r) % (base / 2 + 1))
        .unwrap_or(0);
    Duration::from_millis(base - base / 4 + jitter / 2)
}

/// Keeps a session up until `shutdown`; runs `work` on each session until it
/// returns (connection lost or shutdown). Returns the session that was live
/// at shutdown, still open, so the outbox can flush through it before it closes.
pub async fn supervise<F, Fut>(
    url: String,
    topology: Topology,
    prefetch: u16,
    health: Health,
    sessions: watch::Sender<Option<Session>>,
    mut shutdown: watch::Receiver<bool>,
    work: F,
) -> Option<Session>
where
    F: Fn(Session) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut attempt = 0u32;
    let mut reconnects = 0u64;
    while !*shutdown.borrow() {
        match Session::connect(&url, &topology, prefetch).await {
            Ok(session) => {
                if reconnects > 0 {
                    tracing::info!(reconnects, "reconnected to RabbitMQ");
                    crate::telemetry::metrics::broker_reconnected();
                } else {
                    tracing::info!("connected to RabbitMQ");
                }
                attempt = 0;
                health.set_broker(true);
                sessions.send_replace(Some(session.clone()));
                work(session.clone()).await;
                if *shutdown.borrow() {
                    return Some(session);
                }
                sessions.send_replace(None);
                health.set_broker(false);
                session.close().await;
                reconnects += 1;
            }
            Err(e) => {
                let delay = backoff(attempt);
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "cannot connect to RabbitMQ");
                attempt = attempt.saturating_add(1);
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = crate::shutdown::requested(&mut shutdown) => {}
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        assert!(backoff(0) <= Duration::from_millis(250));
        assert!(backoff(0) >= Duration::from_millis(150));
        assert!(backoff(3) > backoff(0));
        for _ in 0..100 {
            assert!(backoff(30) <= Duration::from_secs(30));
            assert!(backoff(30) >= Duration::from_millis(22_500));
        }
    }
}
