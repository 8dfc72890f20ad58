//! The command consumer: deliveries in, committed transactions, then the acks.
//!
//! Deliveries that are waiting together are applied together, in one
//! transaction (see `handler::batch`); alone, a delivery is applied alone,
//! so batching adds no latency. A message that is not a command envelope is copied to the dead-letter
//! exchange (confirmed) and acked, so poison never blocks the queue; so is
//! a command whose `reply_to` names one of the worker's own queues. A
//! command whose handling fails for a transient reason is retried a few
//! times in-process with growing delays, then handed back to the broker;
//! after `max_deliveries` it is dead-lettered with the reason. When the
//! database itself is away, consumption pauses until it is back: nothing is
//! acked before its transaction committed.

use futures_util::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions};
use lapin::types::{AMQPValue, FieldTable};
use sqlx::PgPool;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tracing::Instrument;

use super::acks::AckLedger;
use super::publisher::Publisher;
use super::session::{Session, backoff};
use crate::domain::envelope;
use crate::domain::envelope::Envelope;
use crate::domain::reply::{Reason, Rejection, Reply, ReplyStatus};
use crate::domain::reply_to::is_forbidden_reply_to;
use crate::domain::trace::TraceParent;
use crate::handler::{BatchItem, FunnelStep, HandleError, Handled, Handler, ReplyAddress};
use crate::telemetry::health::Health;
use crate::telemetry::metrics;

/// Transient failures retried in-process before the delivery goes back to the broker.
const IN_PROCESS_ATTEMPTS: u32 = 3;

/// What the consumer needs besides the session.
pub struct Deps {
    /// Applies commands.
    pub handler: Handler,
    /// Checked before consuming and while paused.
    pub pool: PgPool,
    /// Readiness: the database flag is kept current here.
    pub health: Health,
    /// Takes the outbox rows each commit wrote to this worker's relay.
    pub handoff: Arc<crate::outbox::Handoff>,
    /// Transactions applying commands at once.
    pub concurrency: usize,
    /// Most deliveries applied in one transaction (those already waiting).
    pub batch_size: usize,
    /// How long in-flight commands may take after shutdown.
    pub grace: Duration,
    /// Deliveries of a transiently failing command before it is dead-lettered.
    pub max_deliveries: u32,
}

/// Why a consuming stint ended.
enum Ended {
    Shutdown,
    ConnectionLost,
    DatabaseDown,
}

/// Consumes `session`'s command queue until the connection is lost or
/// `shutdown` turns true, pausing while the database is unreachable.
pub async fn run(session: Session, deps: Arc<Deps>, mut shutdown: watch::Receiver<bool>) {
    loop {
        if !wait_for_database(&deps, &mut shutdown).await {
            return;
        }
        match consume(&session, &deps, &mut shutdown).await {
            Ended::Shutdown | Ended::ConnectionLost => return,
            Ended::DatabaseDown => {
                tracing::warn!("PostgreSQL is unreachable: consumption paused until it is back");
            }
        }
    }
}

/// Waits until the database answers; false if shutdown came first.
async fn wait_for_database(deps: &Deps, shutdown: &mut watch::Receiver<bool>) -> bool {
    let mut attempt = 0;
    loop {
        if *shutdown.borrow() {
            return false;
        }
        let ping = tokio::time::timeout(
            Duration::from_secs(2),
            sqlx::query("SELECT 1").execute(&deps.pool),
        )
        .await;
        if matches!(ping, Ok(Ok(_))) {
            if attempt > 0 {
                tracing::info!("PostgreSQL is back: consuming again");
            }
            deps.health.set_database(true);
            return true;
        }
        deps.health.set_database(false);
        attempt += 1;
        tokio::select! {
            _ = tokio::time::sleep(backoff(attempt.min(6))) => {}
            _ = crate::shutdown::requested(shutdown) => return false,
        }
    }
}

async fn consume(
    session: &Session,
    deps: &Arc<Deps>,
    shutdown: &mut watch::Receiver<bool>,
) -> Ended {
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
            return Ended::ConnectionLost;
        }
    };
    let tag = consumer.tag();
    let (db_down_tx, mut db_down) = watch::channel(false);
    let db_down_tx = Arc::new(db_down_tx);
    let permits = Arc::new(Semaphore::new(deps.concurrency.max(1)));
    let ledger = Arc::new(AckLedger::default());
    let mut tasks = JoinSet::new();
    tracing::info!(queue = %queue, "consuming commands");
    let ended = loop {
        tokio::select! {
            biased;
            _ = crate::shutdown::requested(shutdown) => break Ended::Shutdown,
            _ = crate::shutdown::requested(&mut db_down) => break Ended::DatabaseDown,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            next = consumer.next() => match next {
                Some(Ok(delivery)) => {
                    let Ok(permit) = permits.clone().acquire_owned().await else { break Ended::Shutdown };
                    // Whatever else is already waiting joins this batch.
                    let mut batch = vec![delivery];
                    let mut lost = None;
                    while batch.len() < deps.batch_size.max(1) {
                        match consumer.next().now_or_never() {
                            Some(Some(Ok(delivery))) => batch.push(delivery),
                            Some(Some(Err(e))) => {
                                lost = Some(e);
                                break;
                            }
                            Some(None) | None => break,
                        }
                    }
                    let deps = deps.clone();
                    let publisher = session.publisher.clone();
                    let db_down = db_down_tx.clone();
                    let ledger = ledger.clone();
                    let open = ledger.open(batch.iter().map(|d| d.delivery_tag).collect());
                    tasks.spawn(async move {
                        process(batch, &deps, &publisher, &db_down, &ledger, permit).await;
                        // Every delivery of the batch is settled by now.
                        drop(open);
                    });
                    if let Some(e) = lost {
                        tracing::warn!(error = %e, "the command consumer lost its channel");
                        break Ended::ConnectionLost;
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "the command consumer lost its channel");
                    break Ended::ConnectionLost;
                }
                None => {
                    tracing::warn!("the command consumer was cancelled by the broker");
                    break Ended::ConnectionLost;
                }
            },
        }
    };
    if !matches!(ended, Ended::ConnectionLost) {
        if let Err(e) = session
            .consume
            .basic_cancel(tag, BasicCancelOptions::default())
            .await
        {
            tracing::debug!(error = %e, "cancelling the consumer");
        }
        // Deliveries already prefetched go back to the broker now.
        while let Ok(Some(Ok(delivery))) =
            tokio::time::timeout(Duration::from_millis(200), consumer.next()).await
        {
            requeue(&delivery).await;
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
    ended
}

fn property(value: &Option<lapin::types::ShortString>) -> Option<String> {
    value
        .as_ref()
        .map(|s| s.as_str().to_owned())
        .filter(|s| !s.is_empty())
}

/// How often the broker has delivered this message before (quorum queues
/// count failed deliveries in `x-delivery-count`).
fn previous_deliveries(delivery: &Delivery) -> u32 {
    let Some(headers) = delivery.properties.headers() else {
        return 0;
    };
    headers
        .inner()
        .iter()
        .find(|(k, _)| k.as_str() == "x-delivery-count")
        .and_then(|(_, v)| match v {
            AMQPValue::LongLongInt(n) => u32::try_from(*n).ok(),
            AMQPValue::LongInt(n) => u32::try_from(*n).ok(),
            AMQPValue::LongUInt(n) => Some(*n),
            AMQPValue::ShortInt(n) => u32::try_from(*n).ok(),
            AMQPValue::ShortShortInt(n) => u32::try_from(*n).ok(),
            _ => None,
        })
        .unwrap_or(0)
}

fn header_str(delivery: &Delivery, key: &str) -> Option<String> {
    delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|h| super::publisher::header_str(h, key))
}

async fn ack(delivery: &Delivery) {
    send_ack(delivery, BasicAckOptions::default()).await;
}

/// Acks `delivery` and every unsettled delivery before it on its channel.
async fn ack_up_to(delivery: &Delivery) {
    send_ack(delivery, BasicAckOptions { multiple: true }).await;
}

async fn send_ack(delivery: &Delivery, options: BasicAckOptions) {
    match delivery.acker.ack(options).await {
        Ok(true) => {}
        Ok(false) => tracing::warn!(
            "ack not sent (channel gone); a redelivery will be answered as a duplicate"
        ),
        Err(e) => {
            tracing::warn!(error = %e, "ack failed; a redelivery will be answered as a duplicate")
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

async fn publish_reply(
    publisher: &Publisher,
    address: &ReplyAddress,
    reply: &Reply,
    trace: Option<&TraceParent>,
) {
    let body = match serde_json::to_vec(reply) {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, "cannot serialize a reply");
            return;
        }
    };
    let result = match publisher
        .reply(
            &address.reply_to,
            &address.correlation_id,
            &body,
            trace.map(TraceParent::as_str),
        )
        .await
    {
        Ok(pending) => pending.confirmed().await,
        Err(e) => Err(e),
    };
    if let Err(e) = result {
        tracing::warn!(error = %e, "reply not published");
    }
}

/// Copies `delivery` to the dead-letter exchange (confirmed), answers
/// `invalid` if asked to, and acks. If the copy fails the message goes back
/// to the broker instead: it is never dropped.
async fn dead_letter(
    delivery: &Delivery,
    publisher: &Publisher,
    reason: &'static str,
    message: &str,
    reply: Option<(ReplyAddress, Reply)>,
) {
    let copied = match publisher
        .dead_letter(&delivery.data, Some(&delivery.properties), reason, message)
        .await
    {
        Ok(pending) => pending.confirmed().await,
        Err(e) => Err(e),
    };
    if let Err(e) = copied {
        tracing::error!(error = %e, "dead-letter copy failed; handing the message back to the broker");
        requeue(delivery).await;
        return;
    }
    metrics::dead_lettered(reason);
    if let Some((address, reply)) = reply {
        publish_reply(publisher, &address, &reply, None).await;
    }
    ack(delivery).await;
}

/// A delivery that parsed as a command envelope.
struct Incoming {
    delivery: Delivery,
    envelope: Envelope,
    address: Option<ReplyAddress>,
    span: tracing::Span,
    started: Instant,
}

/// Handles the deliveries that arrived together: poison is dead-lettered
/// one by one, the commands are applied as one batch, then the applied ones
/// are acked together (one frame when `ledger` allows, else one per
/// command) and each of the others is settled (answered, retried or handed
/// back) in arrival order. `permit` is this batch's place among the
/// transactions running at once: when every command was applied, it goes
/// back as soon as the outbox rows are handed over, so the next batch's
/// transaction does not wait for these acks; otherwise once all is settled
/// (settling may use the database again).
async fn process(
    deliveries: Vec<Delivery>,
    deps: &Deps,
    publisher: &Publisher,
    db_down: &watch::Sender<bool>,
    ledger: &AckLedger,
    permit: OwnedSemaphorePermit,
) {
    let mut incoming = Vec::with_capacity(deliveries.len());
    for delivery in deliveries {
        if let Some(command) = admit(delivery, publisher).await {
            incoming.push(command);
        }
    }
    let results = {
        let items: Vec<BatchItem<'_>> = incoming
            .iter()
            .map(|c| BatchItem {
                envelope: &c.envelope,
                reply_to: c.address.as_ref(),
                raw: &c.delivery.data,
                span: &c.span,
            })
            .collect();
        deps.handler.handle_batch(&items).await
    };
    let mut applied = Vec::with_capacity(incoming.len());
    let mut others = Vec::new();
    for (command, result) in incoming.into_iter().zip(results) {
        match result {
            Ok(Handled::Processed(reply, funnel, rows)) => {
                deps.handoff.deliver(rows).await;
                applied.push((command, reply, funnel));
            }
            other => others.push((command, other)),
        }
    }
    // All applied: the next batch may begin while these are acked.
    let permit = (!others.is_empty()).then_some(permit);
    let tags: Vec<u64> = applied
        .iter()
        .map(|(command, ..)| command.delivery.delivery_tag)
        .collect();
    let combined = applied.len() > 1 && ledger.covering(&tags).is_some();
    match applied.iter().max_by_key(|(c, ..)| c.delivery.delivery_tag) {
        Some((command, ..)) if combined => ack_up_to(&command.delivery).await,
        _ => {
            futures_util::future::join_all(
                applied.iter().map(|(command, ..)| ack(&command.delivery)),
            )
            .await;
        }
    }
    for (command, reply, funnel) in applied {
        command.span.in_scope(|| {
            handled(
                command.envelope.kind.as_str(),
                &reply,
                funnel,
                command.started,
            )
        });
    }
    for (command, result) in others {
        let span = command.span.clone();
        settle(command, result, deps, publisher, db_down)
            .instrument(span)
            .await;
    }
    drop(permit);
}

/// Counts and logs a command that was applied and acked.
fn handled(kind: &'static str, reply: &Reply, funnel: Vec<FunnelStep>, started: Instant) {
    for step in funnel {
        match step {
            FunnelStep::Invited => metrics::invites("invited", 1),
            FunnelStep::Activated(after) => {
                metrics::invites("activated", 1);
                metrics::time_to_activate(after);
            }
            FunnelStep::Removed => metrics::invites("removed", 1),
        }
    }
    if reply.status == ReplyStatus::Invalid {
        metrics::dead_lettered("invalid_data");
    }
    let took = started.elapsed();
    tracing::info!(
        status = reply.status.as_str(),
        code = %reply.code,
        took_ms = took.as_secs_f64() * 1000.0,
        "command handled"
    );
    metrics::command(kind, reply.status.as_str(), took);
}

/// Parses `delivery` as a command envelope; anything else is dead-lettered
/// (and answered `invalid` if it asked for a reply).
async fn admit(delivery: Delivery, publisher: &Publisher) -> Option<Incoming> {
    let started = Instant::now();
    let reply_to = property(delivery.properties.reply_to());
    let correlation_id = property(delivery.properties.correlation_id());
    let prefix = &publisher.topology().prefix;
    if let Some(to) = reply_to.as_deref()
        && is_forbidden_reply_to(prefix, to)
    {
        refuse_reply_to(&delivery, publisher, to, started).await;
        return None;
    }
    let mut envelope = match envelope::parse(&delivery.data) {
        Ok(env) => env,
        Err(err) => {
            let reason = err.reason();
            let message = err.to_string();
            tracing::warn!(reason, error = %message, "dead-lettering a message that is not a command");
            let reply = reply_to.map(|reply_to| {
                let id = envelope::salvage_id(&delivery.data);
                let reply = Reply::refused(
                    id.as_deref(),
                    &Rejection::new(Reason::Invalid, message.clone()),
                );
                let correlation_id = correlation_id.or(id).unwrap_or_default();
                (
                    ReplyAddress {
                        reply_to,
                        correlation_id,
                    },
                    reply,
                )
            });
            dead_letter(&delivery, publisher, reason, &message, reply).await;
            metrics::command("unknown", ReplyStatus::Invalid.as_str(), started.elapsed());
            return None;
        }
    };
    if let Some(trace) = header_str(&delivery, "traceparent").and_then(|h| TraceParent::parse(&h)) {
        envelope.traceparent = Some(trace);
    }
    let span = tracing::info_span!(
        "command",
        command_id = %envelope.id,
        r#type = envelope.kind.as_str(),
        actor = envelope.actor.map(|a| a.to_string()),
        trace_id = envelope.traceparent.as_ref().map(|t| t.trace_id().to_owned()),
        user_id = tracing::field::Empty,
    );
    let address = reply_to.map(|reply_to| ReplyAddress {
        reply_to,
        correlation_id: correlation_id.unwrap_or_else(|| envelope.id.as_str().to_owned()),
    });
    Some(Incoming {
        delivery,
        envelope,
        address,
        span,
        started,
    })
}

/// Dead-letters, unapplied and unanswered, a message whose `reply_to`
/// names one of the worker's own queues (`domain::reply_to`).
async fn refuse_reply_to(delivery: &Delivery, publisher: &Publisher, to: &str, started: Instant) {
    let parsed = envelope::parse(&delivery.data).ok();
    let command_id = match &parsed {
        Some(env) => Some(env.id.as_str().to_owned()),
        None => envelope::salvage_id(&delivery.data),
    };
    let kind = parsed.as_ref().map_or("unknown", |env| env.kind.as_str());
    let message = format!(
        "reply_to {to:?} is under the worker's own prefix {:?}: not applied, not answered",
        publisher.topology().prefix
    );
    tracing::warn!(
        command_id = command_id.as_deref().unwrap_or("-"),
        r#type = kind,
        reply_to = to,
        "dead-lettering a command whose reply_to is one of the worker's own queues"
    );
    dead_letter(delivery, publisher, "bad_reply_to", &message, None).await;
    metrics::command(kind, ReplyStatus::Invalid.as_str(), started.elapsed());
}

/// Answers and acks a duplicate or a reused id; retries a failed command a few times
/// in-process (acking and counting it once applied), then hands it back or
/// dead-letters it.
async fn settle(
    command: Incoming,
    first: Result<Handled, HandleError>,
    deps: &Deps,
    publisher: &Publisher,
    db_down: &watch::Sender<bool>,
) {
    let Incoming {
        delivery,
        envelope: env,
        address,
        started,
        ..
    } = command;
    let kind = env.kind.as_str();
    let mut result = first;
    let mut attempt = 0;
    loop {
        match result {
            Ok(Handled::Processed(reply, funnel, rows)) => {
                deps.handoff.deliver(rows).await;
                ack(&delivery).await;
                handled(kind, &reply, funnel, started);
                return;
            }
            Ok(Handled::Duplicate(reply)) => {
                if let Some(address) = &address {
                    publish_reply(
                        publisher,
                        address,
                        &reply.as_duplicate(),
                        env.traceparent.as_ref(),
                    )
                    .await;
                }
                ack(&delivery).await;
                tracing::info!("duplicate delivery answered with the stored reply");
                metrics::command(kind, "duplicate", started.elapsed());
                return;
            }
            Ok(Handled::IdReused(reply)) => {
                if let Some(address) = &address {
                    publish_reply(publisher, address, &reply, env.traceparent.as_ref()).await;
                }
                ack(&delivery).await;
                tracing::warn!(
                    status = reply.status.as_str(),
                    code = %reply.code,
                    "command id already recorded for a different command; refused"
                );
                metrics::command(kind, reply.status.as_str(), started.elapsed());
                return;
            }
            Err(e) if e.is_unavailable() => {
                tracing::warn!(error = %e, "database unavailable; the command goes back to the broker");
                db_down.send_replace(true);
                requeue(&delivery).await;
                return;
            }
            Err(e) => {
                attempt += 1;
                if attempt < IN_PROCESS_ATTEMPTS {
                    let delay = Duration::from_millis(100 * 4u64.pow(attempt));
                    tracing::warn!(error = %e, attempt, retry_in_ms = delay.as_millis() as u64, "command failed; retrying");
                    tokio::time::sleep(delay).await;
                    result = deps
                        .handler
                        .handle(&env, address.as_ref(), &delivery.data)
                        .await;
                    continue;
                }
                metrics::command(kind, "error", started.elapsed());
                let deliveries = previous_deliveries(&delivery) + 1;
                if deliveries >= deps.max_deliveries {
                    let message = format!("failed {deliveries} deliveries in a row, last: {e}");
                    tracing::error!(error = %e, deliveries, "command keeps failing; dead-lettering it");
                    // No reply: the command was not refused, and an operator
                    // who replays it from the dead-letter queue gets it applied
                    // (but for a token, which the copy has redacted).
                    dead_letter(&delivery, publisher, "transient", &message, None).await;
                } else {
                    tracing::error!(error = %e, deliveries, "command failed; handing it back to the broker");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    requeue(&delivery).await;
                }
                return;
            }
        }
    }
}
