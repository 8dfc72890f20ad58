//! A small command client: publish one command, wait for its reply.
//!
//! Backs `user-lifecycle send`, the way to try the worker by hand, and is
//! what an upstream service does: a CloudEvents envelope on `P.commands`
//! with `reply_to` pointing at its own exclusive queue.

use futures_util::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, Consumer};
use serde_json::{Value, json};
use std::time::Duration;
use thiserror::Error;
use uuid::Uuid;

use super::topology::Topology;

/// What went wrong talking to the worker.
#[derive(Debug, Error)]
pub enum ClientError {
    /// AMQP failed.
    #[error(transparent)]
    Amqp(#[from] lapin::Error),
    /// No reply in time.
    #[error("no reply within {0:?}: is the worker running with the same AMQP_PREFIX?")]
    Timeout(Duration),
    /// The reply was not JSON.
    #[error("the reply is not JSON: {0}")]
    BadReply(String),
    /// The broker refused the command.
    #[error("the broker did not confirm the command")]
    NotConfirmed,
}

/// A connection that sends commands and collects replies.
pub struct CommandClient {
    _connection: Connection,
    channel: Channel,
    replies: Consumer,
    reply_queue: String,
    topology: Topology,
}

/// Declares a server-named queue only this connection uses, gone with it,
/// and consumes it without acks: where a sender of commands gets its replies.
/// Returns the queue's name (the `reply_to` to send) and its consumer.
pub async fn private_reply_queue(channel: &Channel) -> lapin::Result<(String, Consumer)> {
    let queue = channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    let name = queue.name().as_str().to_owned();
    let replies = channel
        .basic_consume(
            name.as_str().into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    Ok((name, replies))
}

impl CommandClient {
    /// Connects and declares the topology and a private reply queue.
    pub async fn connect(url: &str, prefix: &str) -> Result<CommandClient, ClientError> {
        let connection = Connection::connect(url, ConnectionProperties::default()).await?;
        let channel = connection.create_channel().await?;
        let topology = Topology::new(prefix);
        topology.declare(&channel).await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        let (reply_queue, replies) = private_reply_queue(&channel).await?;
        Ok(CommandClient {
            _connection: connection,
            channel,
            replies,
            reply_queue,
            topology,
        })
    }

    /// A command envelope of `kind` with `data`, acting as `actor`.
    pub fn envelope(kind: &str, data: Value, actor: Option<&str>) -> Value {
        let mut env = json!({
            "specversion": "1.0",
            "id": Uuid::new_v4().to_string(),
            "source": "user-lifecycle/cli",
            "type": kind,
            "time": chrono::Utc::now().to_rfc3339(),
            "data": data,
        });
        if let (Some(actor), Value::Object(map)) = (actor, &mut env) {
            map.insert("actor".into(), Value::String(actor.to_owned()));
        }
        env
    }

    /// Publishes raw `body` with `reply_to` set and `correlation_id`; confirmed.
    pub async fn publish_raw(
        &self,
        routing_key: &str,
        body: &[u8],
        correlation_id: &str,
    ) -> Result<(), ClientError> {
        self.publish_with_headers(routing_key, body, correlation_id, FieldTable::default())
            .await
    }

    /// Like `publish_raw`, with AMQP `headers` (e.g. `traceparent`).
    pub async fn publish_with_headers(
        &self,
        routing_key: &str,
        body: &[u8],
        correlation_id: &str,
        headers: FieldTable,
    ) -> Result<(), ClientError> {
        let props = BasicProperties::default()
            .with_content_type("application/cloudevents+json".into())
            .with_delivery_mode(2)
            .with_reply_to(self.reply_queue.as_str().into())
            .with_correlation_id(correlation_id.into())
            .with_headers(headers);
        let confirmation = self
            .channel
            .basic_publish(
                self.topology.commands.as_str().into(),
                routing_key.into(),
                BasicPublishOptions::default(),
                body,
                props,
            )
            .await?
            .await?;
        if confirmation.is_ack() {
            Ok(())
        } else {
            Err(ClientError::NotConfirmed)
        }
    }

    /// Waits for the next reply on the private queue.
    pub async fn next_reply(&mut self, timeout: Duration) -> Result<(String, Value), ClientError> {
        let next = tokio::time::timeout(timeout, self.replies.next())
            .await
            .map_err(|_| ClientError::Timeout(timeout))?;
        let delivery = match next {
            Some(d) => d?,
            None => return Err(ClientError::Timeout(timeout)),
        };
        let correlation = delivery
            .properties
            .correlation_id()
            .as_ref()
            .map(|c| c.as_str().to_owned())
            .unwrap_or_default();
        let body = serde_json::from_slice(&delivery.data)
            .map_err(|e| ClientError::BadReply(e.to_string()))?;
        Ok((correlation, body))
    }

    /// Sends `envelope` and waits for the reply with the same correlation id.
    pub async fn send(
        &mut self,
        envelope: &Value,
        timeout: Duration,
    ) -> Result<Value, ClientError> {
        let id = envelope["id"].as_str().unwrap_or_default().to_owned();
        let kind = envelope["type"].as_str().unwrap_or("command").to_owned();
        let body =
            serde_json::to_vec(envelope).map_err(|e| ClientError::BadReply(e.to_string()))?;
        self.publish_raw(&kind, &body, &id).await?;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let (correlation, reply) = self.next_reply(left).await?;
            if correlation == id {
                return Ok(reply);
            }
        }
    }
}
