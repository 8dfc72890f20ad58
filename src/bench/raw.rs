//! The machine's raw limits, measured in the same run as the worker:
//! consume + ack of persistent messages from a quorum queue doing no work,
//! and single-row insert transactions on as many connections as the worker.

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use sqlx::PgPool;
use std::time::Instant;

use super::BenchError;

/// Messages per second consumed and acked one by one (prefetch `prefetch`).
pub async fn consume_ack(
    amqp_url: &str,
    queue: &str,
    n: usize,
    prefetch: u16,
) -> Result<f64, BenchError> {
    let conn = Connection::connect(amqp_url, ConnectionProperties::default()).await?;
    let channel = conn.create_channel().await?;
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(LongString::from("quorum")),
    );
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            args,
        )
        .await?;
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
    let consumer_channel = conn.create_channel().await?;
    consumer_channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await?;
    let mut consumer = consumer_channel
        .basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
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
