//! What the worker does with one delivery: read its properties and headers,
//! ack it, or hand it back to the broker.

use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use lapin::types::{AMQPValue, ShortString};

/// A message property as text, `None` when absent or empty.
pub fn property(value: &Option<ShortString>) -> Option<String> {
    value
        .as_ref()
        .map(|s| s.as_str().to_owned())
        .filter(|s| !s.is_empty())
}

/// How often the broker has delivered this message before (quorum queues
/// count failed deliveries in `x-delivery-count`).
pub fn previous_deliveries(delivery: &Delivery) -> u32 {
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

/// A text header of `delivery`.
pub fn header_str(delivery: &Delivery, key: &str) -> Option<String> {
    delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|h| super::publisher::header_str(h, key))
}

/// Acks `delivery` alone.
pub async fn ack(delivery: &Delivery) {
    send_ack(delivery, BasicAckOptions::default()).await;
}

/// Acks `delivery` and every unsettled delivery before it on its channel.
pub async fn ack_up_to(delivery: &Delivery) {
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

/// Hands `delivery` back to the broker, which delivers it again.
pub async fn requeue(delivery: &Delivery) {
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
