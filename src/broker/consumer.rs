//! The command consumer: one delivery in, one committed transaction, then the ack.
//!
//! A message that is not a command envelope is copied to the dead-letter
//! exchange (confirmed) and acked, so poison never blocks the queue. A
//! command whose handling fails for a transient reason is retried a few
//! times with growing delays, then handed back to the broker (nack/requeue);
//! nothing is acked before its transaction committed.

use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions};
use lapin::types::FieldTable;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinSet;
use tracing::Instrument;

use super::publisher::Publisher;
use super::session::Session;
use crate::domain::envelope;
use crate::domain::reply::{Reason, Rejection, Reply, ReplyStatus};
use crate::handler::{Handled, Handler, ReplyAddress};
use crate::telemetry::metrics;

/// Transient failures retried in-process before the delivery goes back to the broker.
const IN_PROCESS_ATTEMPTS: u32 = 4;

/// What the consumer needs besides the session.
pub struct Deps {
    /// Applies commands.
    pub handler: Handler,
    /// Woken after each commit so the relay delivers at once.
    pub relay: Arc<Notify>,
    /// Commands handled at once.
    pub concurrency: usize,
    /// How long in-flight commands may take after shutdown.
    pub grace: Duration,
}

/// Consumes `session`'s command queue until the connection is lost or
/// `shutdown` turns true; in-flight commands finish (within the grace period).
pub async fn run(session: Session, deps: Arc<Deps>, mut shutdown: watch::Receiver<bool>) {
    let queue = session.topology.commands.clone();
    let mut consumer = match session
        .consume
        .basic_consume(
            queue.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
    {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "cannot start consuming");
            return;
        }
    };
    let tag = consumer.tag();
    let permits = Arc::new(Semaphore::new(deps.concurrency.max(1)));
    let mut tasks = JoinSet::new();
    tracing::info!(queue = %queue, "consuming commands");
    loop {
        tokio::select! {
            biased;
            _ = crate::shutdown::requested(&mut shutdown) => {
                if let Err(e) = session.consume.basic_cancel(tag.clone(), BasicCancelOptions::default()).await {
                    tracing::debug!(error = %e, "cancelling the consumer");
                }
                break;
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            next = consumer.next() => match next {
                Some(Ok(delivery)) => {
                    let Ok(permit) = permits.clone().acquire_owned().await else { break };
                    let deps = deps.clone();
                    let publisher = session.publisher.clone();
                    tasks.spawn(async move {
                        process(delivery, &deps, &publisher).await;
                        drop(permit);
                    });
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "the command consumer lost its channel");
                    break;
                }
                None => {
                    tracing::warn!("the command consumer was cancelled by the broker");
                    break;
                }
            },
        }
    }
    let in_flight = tasks.len();
    if in_flight > 0 {
        tracing::info!(in_flight, "waiting for in-flight commands");
    }
    let drained = tokio::time::timeout(deps.grace, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            left = tasks.len(),
            "grace period over; unfinished commands will be redelivered"
        );
        tasks.abort_all();
    }
}

fn property(value: &Option<lapin::types::ShortString>) -> Option<String> {
    value
        .as_ref()
        .map(|s| s.as_str().to_owned())
        .filter(|s| !s.is_empty())
}

async fn ack(delivery: &Delivery) {
    match delivery.acker.ack(BasicAckOptions::default()).await {
        Ok(true) => {}
        Ok(false) => tracing::warn!(
            "ack not sent (channel gone); the redelivery will be answered as a duplicate"
        ),
        Err(e) => {
            tracing::warn!(error = %e, "ack failed; the redelivery will be answered as a duplicate")
        }
    }
}

async fn requeue(delivery: &Delivery) {
    let options = BasicNackOptions {
        requeue: true,
        ..Default::default()
    };
    match delivery.acker.nack(options).await {
        Ok(true) => {}
        Ok(false) => tracing::warn!("nack not sent (channel gone); the broker redelivers anyway"),
        Err(e) => {
            tracing::warn!(error = %e, "nack failed; the broker redelivers when the channel closes")
        }
    }
}

async fn publish_reply(publisher: &Publisher, address: &ReplyAddress, reply: &Reply) {
    let body = match serde_json::to_vec(reply) {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, "cannot serialize a reply");
            return;
        }
    };
    let result = match publisher
        .reply(&address.reply_to, &address.correlation_id, &body)
        .await
    {
        Ok(pending) => pending.confirmed().await,
        Err(e) => Err(e),
    };
    if let Err(e) = result {
        tracing::warn!(error = %e, "reply not published");
    }
}

async fn process(delivery: Delivery, deps: &Deps, publisher: &Publisher) {
    let started = Instant::now();
    let reply_to = property(delivery.properties.reply_to());
    let correlation_id = property(delivery.properties.correlation_id());
    let env = match envelope::parse(&delivery.data) {
        Ok(env) => env,
        Err(err) => {
            let reason = err.reason();
            let message = err.to_string();
            tracing::warn!(reason, error = %message, "dead-lettering a message that is not a command");
            let copied = match publisher
                .dead_letter(&delivery.data, Some(&delivery.properties), reason, &message)
                .await
            {
                Ok(pending) => pending.confirmed().await,
                Err(e) => Err(e),
            };
            if let Err(e) = copied {
                tracing::error!(error = %e, "dead-letter copy failed; handing the message back to the broker");
                requeue(&delivery).await;
                return;
            }
            metrics::dead_lettered(reason);
            if let Some(reply_to) = reply_to {
                let id = envelope::salvage_id(&delivery.data);
                let reply =
                    Reply::refused(id.as_deref(), &Rejection::new(Reason::Invalid, message));
                let correlation_id = correlation_id.or(id).unwrap_or_default();
                publish_reply(
                    publisher,
                    &ReplyAddress {
                        reply_to,
                        correlation_id,
                    },
                    &reply,
                )
                .await;
            }
            ack(&delivery).await;
            metrics::command("unknown", ReplyStatus::Invalid.as_str(), started.elapsed());
            return;
        }
    };
    let kind = env.kind.as_str();
    let span = tracing::info_span!(
        "command",
        command_id = %env.id,
        r#type = kind,
        actor = env.actor.map(|a| a.to_string()),
    );
    async {
        let address = reply_to.map(|reply_to| ReplyAddress {
            reply_to,
            correlation_id: correlation_id.unwrap_or_else(|| env.id.as_str().to_owned()),
        });
        let mut attempt = 0;
        loop {
            match deps.handler.handle(&env, address.as_ref(), &delivery.data).await {
                Ok(Handled::Processed(reply)) => {
                    ack(&delivery).await;
                    deps.relay.notify_one();
                    if reply.status == ReplyStatus::Invalid {
                        metrics::dead_lettered("invalid_data");
                    }
                    tracing::info!(status = reply.status.as_str(), code = %reply.code, "command handled");
                    metrics::command(kind, reply.status.as_str(), started.elapsed());
                    return;
                }
                Ok(Handled::Duplicate(reply)) => {
                    if let Some(address) = &address {
                        publish_reply(publisher, address, &reply.as_duplicate()).await;
                    }
                    ack(&delivery).await;
                    tracing::info!("duplicate delivery answered with the stored reply");
                    metrics::command(kind, "duplicate", started.elapsed());
                    return;
                }
                Err(e) => {
                    attempt += 1;
                    if attempt >= IN_PROCESS_ATTEMPTS {
                        tracing::error!(error = %e, attempts = attempt, "command failed; handing it back to the broker");
                        metrics::command(kind, "error", started.elapsed());
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        requeue(&delivery).await;
                        return;
                    }
                    let delay = Duration::from_millis(50 * 4u64.pow(attempt));
                    tracing::warn!(error = %e, attempt, retry_in_ms = delay.as_millis() as u64, "command failed; retrying");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }
    .instrument(span)
    .await;
}
