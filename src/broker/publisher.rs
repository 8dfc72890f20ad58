//! Publishing with publisher confirms, checking what lapin 4 can hide: a
//! `Nack`, and an `Ack` that carries a returned (unroutable) message.

use lapin::Confirmation;
use lapin::options::BasicPublishOptions;
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, PublisherConfirm};
use thiserror::Error;

use super::topology::Topology;
use crate::domain::redact::redact_body;

/// A publish the broker did not take.
#[derive(Debug, Error)]
pub enum PublishError {
    /// The channel or connection failed.
    #[error(transparent)]
    Amqp(#[from] lapin::Error),
    /// The broker refused the message.
    #[error("the broker nacked the message")]
    Nacked,
    /// The broker did not confirm in time.
    #[error("no publisher confirm within {0:?}")]
    NoConfirm(std::time::Duration),
    /// A mandatory message had no route.
    #[error("unroutable: {0}")]
    Returned(String),
    /// The outbox row's payload does not read as a publication.
    #[error("the outbox row does not read as a publication: {0}")]
    Unreadable(String),
}

/// A publish in flight; `confirmed` waits for the broker's answer.
pub struct Pending(PublisherConfirm);

impl Pending {
    /// Waits for the broker's confirm and checks it.
    pub async fn confirmed(self) -> Result<(), PublishError> {
        match self.0.await? {
            Confirmation::Ack(None) | Confirmation::NotRequested => Ok(()),
            Confirmation::Ack(Some(returned)) => Err(PublishError::Returned(format!(
                "{} {}",
                returned.reply_code, returned.reply_text
            ))),
            Confirmation::Nack(_) => Err(PublishError::Nacked),
        }
    }
}

/// A confirm-mode channel and the names to publish to.
#[derive(Clone)]
pub struct Publisher {
    channel: Channel,
    topology: Topology,
}

fn persistent(content_type: &str) -> BasicProperties {
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type(content_type.into())
}

/// Adds the W3C `traceparent` header when there is one.
fn with_trace(props: BasicProperties, trace: Option<&str>) -> BasicProperties {
    match trace {
        Some(trace) if !trace.is_empty() => {
            let mut headers = FieldTable::default();
            headers.insert(
                "traceparent".into(),
                AMQPValue::LongString(LongString::from(trace)),
            );
            props.with_headers(headers)
        }
        _ => props,
    }
}

impl Publisher {
    /// Wraps `channel`, which must be in confirm mode.
    pub fn new(channel: Channel, topology: Topology) -> Publisher {
        Publisher { channel, topology }
    }

    /// The names it publishes to.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Whether the channel still works.
    pub fn is_usable(&self) -> bool {
        self.channel.status().connected()
    }

    async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        mandatory: bool,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<Pending, PublishError> {
        let confirm = self
            .channel
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions {
                    mandatory,
                    ..Default::default()
                },
                body,
                properties,
            )
            .await?;
        Ok(Pending(confirm))
    }

    /// Publishes an event (a CloudEvent JSON document) with `routing_key`.
    pub async fn event(
        &self,
        routing_key: &str,
        message_id: &str,
        body: &[u8],
        trace: Option<&str>,
    ) -> Result<Pending, PublishError> {
        let props = with_trace(
            persistent("application/cloudevents+json")
                .with_message_id(message_id.into())
                .with_type(routing_key.into()),
            trace,
        );
        self.publish(&self.topology.events, routing_key, false, body, props)
            .await
    }

    /// Publishes a reply to `reply_to` through the default exchange.
    pub async fn reply(
        &self,
        reply_to: &str,
        correlation_id: &str,
        body: &[u8],
        trace: Option<&str>,
    ) -> Result<Pending, PublishError> {
        let props = with_trace(
            BasicProperties::default()
                .with_content_type("application/json".into())
                .with_correlation_id(correlation_id.into()),
            trace,
        );
        self.publish("", reply_to, false, body, props).await
    }

    /// Publishes a copy of a bad message to the dead-letter exchange with
    /// `x-error` (why) and `x-error-reason` (a short label), its secrets
    /// redacted (`domain::redact`). Mandatory: the dead-letter queue must
    /// exist, or the copy would be lost.
    pub async fn dead_letter(
        &self,
        body: &[u8],
        original: Option<&BasicProperties>,
        reason: &str,
        error: &str,
    ) -> Result<Pending, PublishError> {
        let mut headers = original
            .and_then(|p| p.headers().clone())
            .unwrap_or_default();
        headers.insert(
            "x-error".into(),
            AMQPValue::LongString(LongString::from(error)),
        );
        headers.insert(
            "x-error-reason".into(),
            AMQPValue::LongString(LongString::from(reason)),
        );
        let mut props = original.cloned().unwrap_or_default().with_delivery_mode(2);
        props = props.with_headers(headers);
        let body = redact_body(body);
        self.publish(&self.topology.dead, "", true, &body, props)
            .await
    }
}

/// Headers of a message as a table (for tests and tools).
pub fn header_str(headers: &FieldTable, key: &str) -> Option<String> {
    headers
        .inner()
        .iter()
        .find(|(k, _)| k.as_str() == key)
        .and_then(|(_, v)| match v {
            AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
            AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
            _ => None,
        })
}
