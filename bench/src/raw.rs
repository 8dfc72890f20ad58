//! The machine's raw limits, measured in the same run as the worker:
//! consume + ack of persistent messages from a quorum queue doing no work,
//! single-row insert transactions on as many connections as the worker, and
//! the AMQP traffic of a command alone (no database, no email), which bounds
//! what any worker can reach end to end on the same broker.

use futures_util::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, Consumer,
    ExchangeKind,
};
use sqlx::PgPool;
use std::time::{Duration, Instant};

use crate::invites::Percentiles;
use crate::run::BenchError;
use user_lifecycle::broker::client::private_reply_queue;
use user_lifecycle::broker::topology;

/// The AMQP traffic of commands alone, as fast as it goes or at a rate.
#[derive(Debug, Clone, Copy)]
pub struct Messaging {
    /// Commands answered per second, first publish to last reply.
    pub per_s: f64,
    /// Publish to reply.
    pub reply_ms: Percentiles,
}

/// Declares `queue` as a durable quorum queue, as the worker's commands queue is.
async fn declare_quorum_queue(channel: &Channel, queue: &str) -> lapin::Result<()> {
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .queue_declare(queue.into(), durable, topology::quorum())
        .await?;
    Ok(())
}

/// A consumer of `queue` on a channel of its own that takes up to
/// `prefetch` unacked deliveries; the channel is returned to be kept open
/// for as long as the consumer is used.
async fn consume(
    conn: &Connection,
    queue: &str,
    prefetch: u16,
) -> lapin::Result<(Channel, Consumer)> {
    let channel = conn.create_channel().await?;
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await?;
    let consumer = channel
        .basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok((channel, consumer))
}

/// Messages per second consumed and acked one by one (prefetch `prefetch`).
pub async fn consume_ack(
    amqp_url: &str,
    queue: &str,
    n: usize,
    prefetch: u16,
) -> Result<f64, BenchError> {
    let conn = Connection::connect(amqp_url, ConnectionProperties::default()).await?;
    let channel = conn.create_channel().await?;
    declare_quorum_queue(&channel, queue).await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let body = vec![b'x'; 600];
    for chunk in 0..n.div_ceil(1000) {
        for _ in 0..1000.min(n - chunk * 1000) {
            channel
                .basic_publish(
                    "".into(),
                    queue.into(),
                    BasicPublishOptions::default(),
                    &body,
                    BasicProperties::default().with_delivery_mode(2),
                )
                .await?;
        }
        channel.wait_for_confirms().await?;
    }
    let (_consumer_channel, mut consumer) = consume(&conn, queue, prefetch).await?;
    let started = Instant::now();
    let mut seen = 0;
    while seen < n {
        let Some(delivery) = consumer.next().await else {
            break;
        };
        delivery?.acker.ack(BasicAckOptions::default()).await?;
        seen += 1;
    }
    let rate = seen as f64 / started.elapsed().as_secs_f64();
    channel
        .queue_delete(queue.into(), QueueDeleteOptions::default())
        .await?;
    let _ = conn.close(200, "bye".into()).await;
    Ok(rate)
}

/// Commands per second that a command's messaging alone allows: N
/// persistent commands published with confirms to a quorum queue while a
/// consumer on its own connection takes what is waiting (up to `prefetch`),
/// publishes a reply to the sender's queue and a persistent event to a topic
/// exchange for each, waits for their confirms, then acks each delivery, as
/// the worker does; timed from the first publish until the sender has every
/// reply. The worker does the same plus a transaction and an email per
/// command, so it can never be faster than this.
pub async fn command_messaging(
    amqp_url: &str,
    prefix: &str,
    n: usize,
    prefetch: u16,
    rate: Option<f64>,
) -> Result<Messaging, BenchError> {
    let queue = format!("{prefix}.raw_commands");
    let exchange = format!("{prefix}.raw_events");
    let portal = Connection::connect(amqp_url, ConnectionProperties::default()).await?;
    let setup = portal.create_channel().await?;
    declare_quorum_queue(&setup, &queue).await?;
    setup
        .exchange_declare(
            exchange.as_str().into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    let (reply_to, replies) = private_reply_queue(&setup).await?;

    let worker = Connection::connect(amqp_url, ConnectionProperties::default()).await?;
    let (_consume, deliveries) = consume(&worker, &queue, prefetch).await?;
    let publish = worker.create_channel().await?;
    publish
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let responder = tokio::spawn(respond(deliveries, publish, exchange.clone(), n, prefetch));
    // Replies are timed as they arrive, while the commands are still going out.
    let collector = tokio::spawn(time_replies(replies, n));

    let sent = send_commands(&portal, &queue, &reply_to, n, rate).await?;
    let arrivals = match collector.await {
        Ok(Ok(arrivals)) => arrivals,
        Ok(Err(received)) => return Err(stalled(received, n, responder).await),
        Err(e) => return Err(BenchError::new(e.to_string())),
    };
    let figures = sent.figures(&arrivals);
    responder
        .await
        .map_err(|e| BenchError::new(e.to_string()))??;
    setup
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await?;
    setup
        .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
        .await?;
    let _ = worker.close(200, "bye".into()).await;
    let _ = portal.close(200, "bye".into()).await;
    Ok(figures)
}

/// The worker's side of `command_messaging`: until `n` commands are
/// answered, takes what is waiting and answers it as one batch.
async fn respond(
    mut deliveries: Consumer,
    publish: Channel,
    events: String,
    n: usize,
    prefetch: u16,
) -> Result<(), BenchError> {
    let reply = vec![b'r'; 300];
    let event = vec![b'e'; 700];
    let mut answered = 0;
    while answered < n {
        let Some(batch) = next_batch(&mut deliveries, prefetch).await? else {
            break;
        };
        answer(&publish, &events, &batch, &reply, &event).await?;
        answered += batch.len();
    }
    Ok(())
}

/// The next delivery and as many more as are already waiting, up to
/// `prefetch`; `None` once the consumer has ended.
async fn next_batch(
    deliveries: &mut Consumer,
    prefetch: u16,
) -> Result<Option<Vec<Delivery>>, BenchError> {
    let Some(first) = deliveries.next().await else {
        return Ok(None);
    };
    let mut batch = vec![first?];
    while batch.len() < usize::from(prefetch) {
        match deliveries.next().now_or_never() {
            Some(Some(delivery)) => batch.push(delivery?),
            Some(None) | None => break,
        }
    }
    Ok(Some(batch))
}

/// Publishes a reply to each command's sender and a persistent event for
/// each, waits for all their confirms, then acks the commands.
async fn answer(
    publish: &Channel,
    events: &str,
    batch: &[Delivery],
    reply: &[u8],
    event: &[u8],
) -> Result<(), BenchError> {
    let mut confirms = Vec::with_capacity(2 * batch.len());
    for delivery in batch {
        let to = delivery
            .properties
            .reply_to()
            .as_ref()
            .map(|r| r.as_str().to_owned())
            .unwrap_or_default();
        let correlation = delivery.properties.correlation_id().clone();
        let mut props = BasicProperties::default();
        if let Some(id) = correlation {
            props = props.with_correlation_id(id);
        }
        let options = BasicPublishOptions::default();
        confirms.push(
            publish
                .basic_publish("".into(), to.as_str().into(), options, reply, props)
                .await?,
        );
        let persistent = BasicProperties::default().with_delivery_mode(2);
        confirms.push(
            publish
                .basic_publish(
                    events.into(),
                    "user.invited".into(),
                    options,
                    event,
                    persistent,
                )
                .await?,
        );
    }
    for confirm in confirms {
        if !matches!(confirm.await?, Confirmation::Ack(None)) {
            return Err(BenchError::new("a reply or event was not confirmed"));
        }
    }
    for delivery in batch {
        delivery.acker.ack(BasicAckOptions::default()).await?;
    }
    Ok(())
}

/// When each of `n` replies arrived, with the index of its command; on
/// a minute without one, how many had arrived.
async fn time_replies(
    mut replies: Consumer,
    n: usize,
) -> Result<Vec<(Option<usize>, Instant)>, usize> {
    let mut arrivals: Vec<(Option<usize>, Instant)> = Vec::with_capacity(n);
    while arrivals.len() < n {
        match tokio::time::timeout(Duration::from_secs(60), replies.next()).await {
            Ok(Some(Ok(reply))) => {
                let at = Instant::now();
                let index = reply
                    .properties
                    .correlation_id()
                    .as_ref()
                    .and_then(|c| c.as_str().parse::<usize>().ok());
                arrivals.push((index, at));
            }
            Ok(Some(Err(_))) | Ok(None) | Err(_) => return Err(arrivals.len()),
        }
    }
    Ok(arrivals)
}

/// When the commands went out.
struct Sent {
    /// The first publish.
    started: Instant,
    /// When each command was published, by index.
    at: Vec<Instant>,
}

impl Sent {
    /// Commands answered per second, and publish to reply.
    fn figures(&self, arrivals: &[(Option<usize>, Instant)]) -> Messaging {
        let n = self.at.len();
        let last = arrivals
            .iter()
            .map(|(_, at)| *at)
            .max()
            .unwrap_or(self.started);
        let per_s = n as f64 / last.duration_since(self.started).as_secs_f64();
        let reply_ms = Percentiles::of(
            arrivals
                .iter()
                .filter_map(|(i, at)| {
                    let sent = self.at.get((*i)?)?;
                    Some(at.duration_since(*sent).as_secs_f64() * 1000.0)
                })
                .collect(),
        );
        Messaging { per_s, reply_ms }
    }
}

/// Publishes `n` persistent commands to `queue` with confirms (every 500
/// and at the end), each at its due time when `rate` is set.
async fn send_commands(
    portal: &Connection,
    queue: &str,
    reply_to: &str,
    n: usize,
    rate: Option<f64>,
) -> Result<Sent, BenchError> {
    let sender = portal.create_channel().await?;
    sender
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let command = vec![b'c'; 600];
    let interval = rate.map(|r| Duration::from_secs_f64(1.0 / r));
    let mut at = Vec::with_capacity(n);
    let started = Instant::now();
    for i in 0..n {
        if let Some(interval) = interval {
            tokio::time::sleep_until((started + interval.mul_f64(i as f64)).into()).await;
        }
        let props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_reply_to(reply_to.into())
            .with_correlation_id(i.to_string().as_str().into());
        at.push(Instant::now());
        sender
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                &command,
                props,
            )
            .await?;
        if i % 500 == 499 {
            sender.wait_for_confirms().await?;
        }
    }
    sender.wait_for_confirms().await?;
    Ok(Sent { started, at })
}

/// The error for replies that stopped after `received` of `n`: with the
/// consuming side's error if it has failed; if it is still running, it is
/// stopped.
async fn stalled(
    received: usize,
    n: usize,
    responder: tokio::task::JoinHandle<Result<(), BenchError>>,
) -> BenchError {
    let cause = if responder.is_finished() {
        match responder.await {
            Ok(Err(e)) => format!(": the consuming side failed: {e}"),
            Err(e) => format!(": the consuming side failed: {e}"),
            Ok(Ok(())) => String::new(),
        }
    } else {
        responder.abort();
        String::new()
    };
    BenchError::new(format!(
        "raw command messaging stalled after {received} of {n} replies{cause}"
    ))
}

/// Single-row insert transactions per second on `connections` connections.
pub async fn insert_transactions(
    pool: &PgPool,
    n: usize,
    connections: usize,
) -> Result<f64, BenchError> {
    sqlx::query("CREATE TABLE IF NOT EXISTS bench_raw_insert (id bigserial PRIMARY KEY, payload jsonb NOT NULL)")
        .execute(pool)
        .await?;
    let started = Instant::now();
    let per_task = n / connections.max(1);
    let mut tasks = Vec::new();
    for _ in 0..connections.max(1) {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..per_task {
                let mut tx = pool.begin().await?;
                sqlx::query("INSERT INTO bench_raw_insert (payload) VALUES ($1)")
                    .bind(serde_json::json!({"i": i}))
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
            }
            Ok::<_, sqlx::Error>(())
        }));
    }
    for t in tasks {
        t.await.map_err(|e| BenchError::new(e.to_string()))??;
    }
    let rate = (per_task * connections.max(1)) as f64 / started.elapsed().as_secs_f64();
    sqlx::query("DROP TABLE bench_raw_insert")
        .execute(pool)
        .await?;
    Ok(rate)
}
