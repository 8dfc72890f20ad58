//! The dead-letter queue `P.commands.dead`, read without losing or
//! reordering anything: the ground the `dead-letters` tools stand on.
//!
//! The tools take every message waiting (with `basic.get` and manual acks),
//! keep them unacked while they work, and put back what they did not
//! consume with `basic.nack` + requeue, one by one in the order taken.
//! Where a requeued message lands depends on the queue type and the broker
//! version (a quorum queue on RabbitMQ 3.10 puts it at the back), so the
//! queue ends up as it was only because *all* of them are taken and
//! returned in order: a full turn. A listing limited to N messages still
//! takes them all. Only a message dead-lettered while a tool holds the
//! others can end up ahead of them.
//!
//! `nack`, not `reject`: RabbitMQ 4 counts a `reject` against a quorum
//! queue's delivery limit (default 20) and the dead-letter queue has no
//! dead-letter exchange of its own, so a message past the limit would be
//! dropped. A tool that dies midway loses nothing either: the broker takes
//! back what it held when the connection closes (though maybe not in order).
//!
//! The number of messages taken is bounded by what was waiting when the tool
//! started, so messages dead-lettered meanwhile (by a running worker, or by
//! a replay that failed again) are left for the next run.

use std::time::Duration;

use lapin::message::Delivery;
use lapin::options::{BasicGetOptions, BasicNackOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection, ConnectionProperties, ErrorKind};

use super::OpsError;
use crate::broker::Topology;
use crate::broker::publisher::header_str;
use crate::domain::envelope::{self, MAX_MESSAGE_BYTES};
use crate::domain::redact::redact_body;

/// How long `put_back` waits for the queue to count the messages it returned.
const REQUEUE_WAIT: Duration = Duration::from_secs(5);

/// Bytes of a body shown by `--show-body`.
pub const BODY_PREVIEW_BYTES: usize = 200;

/// Longest `type` shown: it is whatever the sender wrote.
const MAX_TYPE_CHARS: usize = 100;

/// What the tools show of one dead letter (never its body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// 1 for the head of the queue.
    pub position: usize,
    /// `x-error-reason` (`not_json`, `invalid_data`, `transient`, …); for a
    /// message the broker dead-lettered itself, its `x-first-death-reason`.
    pub reason: Option<String>,
    /// `x-error`: why, in words.
    pub error: Option<String>,
    /// The command id, when the body is an envelope with a valid `id`.
    pub id: Option<String>,
    /// The envelope's `type`, or else the AMQP `type` property.
    pub kind: Option<String>,
    /// Body size in bytes.
    pub size: usize,
}

/// A dead letter taken from the queue and not yet settled.
#[derive(Debug)]
pub struct Held {
    /// What it is.
    pub letter: DeadLetter,
    /// The delivery itself: body, properties, and the acker that settles it.
    pub(crate) delivery: Delivery,
}

impl Held {
    /// The first [`BODY_PREVIEW_BYTES`] of the body (lossy UTF-8, secrets
    /// redacted, also in a letter dead-lettered by a worker that did not
    /// redact), and how many bytes of it are not shown. Bodies may hold
    /// personal data: show this only when the operator asked for it.
    pub fn body_preview(&self) -> (String, usize) {
        let body = redact_body(&self.delivery.data);
        let cut = body.len().min(BODY_PREVIEW_BYTES);
        (
            String::from_utf8_lossy(&body[..cut]).into_owned(),
            body.len() - cut,
        )
    }
}

/// A connection to RabbitMQ with a channel on the dead-letter queue.
pub struct DeadLetterQueue {
    connection: Connection,
    channel: Channel,
    topology: Topology,
    waiting: u32,
}

impl DeadLetterQueue {
    /// Connects and checks that `P.commands.dead` exists (declares nothing).
    pub async fn open(url: &str, prefix: &str) -> Result<DeadLetterQueue, OpsError> {
        let properties = ConnectionProperties::default()
            .with_connection_name("user-lifecycle dead-letters".into());
        let connection = Connection::connect(url, properties)
            .await
            .map_err(OpsError::broker("connecting (AMQP_URL)"))?;
        let topology = Topology::new(prefix);
        let channel = connection
            .create_channel()
            .await
            .map_err(OpsError::broker("opening a channel"))?;
        let waiting = ready_messages(&channel, &topology.dead_queue).await?;
        Ok(DeadLetterQueue {
            connection,
            channel,
            topology,
            waiting,
        })
    }

    /// The names under the prefix.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Messages that were ready in the queue when it was opened.
    pub fn waiting(&self) -> u32 {
        self.waiting
    }

    /// The connection, for a publishing channel of its own.
    pub(crate) fn connection(&self) -> &Connection {
        &self.connection
    }

    /// Takes every message that was waiting at open, unacked and in queue
    /// order. All of them: see the module documentation for why.
    pub async fn take_all(&self) -> Result<Vec<Held>, OpsError> {
        let bound = usize::try_from(self.waiting).unwrap_or(usize::MAX);
        let mut held = Vec::new();
        while held.len() < bound {
            let got = self
                .channel
                .basic_get(
                    self.topology.dead_queue.as_str().into(),
                    BasicGetOptions { no_ack: false },
                )
                .await
                .map_err(OpsError::broker("reading the dead-letter queue"))?;
            let Some(message) = got else { break };
            let letter = describe(held.len() + 1, &message.delivery);
            held.push(Held {
                letter,
                delivery: message.delivery,
            });
        }
        Ok(held)
    }

    /// Puts `held` back into the queue (`nack` + requeue), one by one in
    /// the order given, which must be the order taken, and waits until the
    /// queue counts them as ready again: a quorum queue applies a requeue
    /// after the channel has sent it, and the next tool run must find every
    /// message waiting, or its turn would not be full.
    pub async fn put_back<'a>(
        &self,
        held: impl IntoIterator<Item = &'a Held>,
    ) -> Result<(), OpsError> {
        let requeue = BasicNackOptions {
            multiple: false,
            requeue: true,
        };
        let mut returned = 0u32;
        for h in held {
            h.delivery
                .acker
                .nack(requeue)
                .await
                .map_err(OpsError::broker("putting a dead letter back"))?;
            returned += 1;
        }
        let deadline = tokio::time::Instant::now() + REQUEUE_WAIT;
        loop {
            let ready = ready_messages(&self.channel, &self.topology.dead_queue).await?;
            if ready >= returned {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(
                    ready,
                    returned,
                    "the dead-letter queue has not counted every message put back yet"
                );
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Closes the channel (the broker has then processed every ack and nack
    /// sent on it) and the connection.
    pub async fn close(self) -> Result<(), OpsError> {
        self.channel
            .close(200, "done".into())
            .await
            .map_err(OpsError::broker("closing the channel"))?;
        if let Err(e) = self.connection.close(200, "done".into()).await {
            tracing::debug!(error = %e, "closing the AMQP connection");
        }
        Ok(())
    }
}

/// Ready messages in `queue`, which must exist (a passive declare).
pub(crate) async fn ready_messages(channel: &Channel, queue: &str) -> Result<u32, OpsError> {
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    match channel
        .queue_declare(queue.into(), passive, FieldTable::default())
        .await
    {
        Ok(q) => Ok(q.message_count()),
        Err(e) if is_not_found(&e) => Err(OpsError::MissingQueue(queue.to_owned())),
        Err(e) => Err(OpsError::broker("checking a queue")(e)),
    }
}

fn is_not_found(e: &lapin::Error) -> bool {
    matches!(e.kind(), ErrorKind::ProtocolError(err) if err.get_id() == 404)
}

/// What a delivery is, from its headers and (if an envelope) its body.
fn describe(position: usize, delivery: &Delivery) -> DeadLetter {
    let headers = delivery.properties.headers().clone().unwrap_or_default();
    let reason = header_str(&headers, "x-error-reason")
        .or_else(|| header_str(&headers, "x-first-death-reason"));
    let body = &delivery.data;
    let body_type = if body.len() <= MAX_MESSAGE_BYTES {
        serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v.get("type")?.as_str().map(str::to_owned))
    } else {
        None
    };
    let kind = body_type
        .or_else(|| {
            delivery
                .properties
                .kind()
                .as_ref()
                .map(|k| k.as_str().to_owned())
        })
        .filter(|k| !k.is_empty())
        .map(|k| k.chars().take(MAX_TYPE_CHARS).collect());
    DeadLetter {
        position,
        reason,
        error: header_str(&headers, "x-error"),
        id: envelope::salvage_id(body),
        kind,
        size: body.len(),
    }
}

/// `s` on one line with control characters escaped, safe for a terminal
/// whatever the sender put in it.
pub fn printable(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Whether a header is about the message's earlier life in the queues (the
/// dead-lettering reasons and the broker's delivery bookkeeping), and so
/// must not travel with a replayed copy.
pub fn is_dead_letter_header(name: &str) -> bool {
    matches!(
        name,
        "x-error" | "x-error-reason" | "x-delivery-count" | "x-death"
    ) || name.starts_with("x-first-death-")
        || name.starts_with("x-last-death-")
}

/// `headers` without the dead-letter bookkeeping, plus `extra`.
pub fn replay_headers(headers: Option<&FieldTable>, extra: (&str, AMQPValue)) -> FieldTable {
    let mut kept: std::collections::BTreeMap<_, _> = headers
        .map(|h| {
            h.inner()
                .iter()
                .filter(|(k, _)| !is_dead_letter_header(k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default();
    kept.insert(extra.0.into(), extra.1);
    FieldTable::from(kept)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::LongString;

    fn delivery(body: &[u8], headers: &[(&str, &str)]) -> Delivery {
        let mut d = Delivery::mock(7, "".into(), "".into(), false, body.to_vec());
        let mut table = FieldTable::default();
        for (k, v) in headers {
            table.insert((*k).into(), AMQPValue::LongString(LongString::from(*v)));
        }
        d.properties = d.properties.with_headers(table);
        d
    }

    #[test]
    fn an_envelope_shows_its_id_and_type_and_the_reasons() {
        let body = br#"{"specversion":"1.0","id":"c-1","source":"s","type":"resend_activation","data":{}}"#;
        let d = delivery(
            body,
            &[("x-error-reason", "transient"), ("x-error", "lock timeout")],
        );
        let letter = describe(3, &d);
        assert_eq!(
            letter,
            DeadLetter {
                position: 3,
                reason: Some("transient".into()),
                error: Some("lock timeout".into()),
                id: Some("c-1".into()),
                kind: Some("resend_activation".into()),
                size: body.len(),
            }
        );
    }

    #[test]
    fn a_message_the_broker_dead_lettered_shows_the_broker_reason() {
        let d = delivery(b"not json", &[("x-first-death-reason", "delivery_limit")]);
        let letter = describe(1, &d);
        assert_eq!(letter.reason.as_deref(), Some("delivery_limit"));
        assert_eq!(letter.error, None);
        assert_eq!(letter.id, None);
        assert_eq!(letter.kind, None);
    }

    #[test]
    fn the_preview_is_cut_at_200_bytes() {
        let body = vec![b'a'; 250];
        let held = Held {
            letter: describe(1, &delivery(&body, &[])),
            delivery: delivery(&body, &[]),
        };
        let (preview, left) = held.body_preview();
        assert_eq!(preview.len(), 200);
        assert_eq!(left, 50);
    }

    #[test]
    fn the_preview_redacts_secrets() {
        let token = crate::domain::token::SecretToken::generate().unwrap();
        let body = format!(
            r#"{{"id": "c-1", "data": {{"token": "{}"}}}}"#,
            token.expose()
        );
        let held = Held {
            letter: describe(1, &delivery(body.as_bytes(), &[])),
            delivery: delivery(body.as_bytes(), &[]),
        };
        let (preview, left) = held.body_preview();
        assert!(!preview.contains(token.expose()), "{preview}");
        assert!(preview.contains("[redacted]"), "{preview}");
        assert_eq!(left, 0);
    }

    #[test]
    fn printable_escapes_control_characters() {
        assert_eq!(printable("a\nb\x1b[31m"), "a\\nb\\u{1b}[31m");
        assert_eq!(printable("Jansen & Zn <x>"), "Jansen & Zn <x>");
    }

    #[test]
    fn replayed_headers_lose_the_dead_letter_bookkeeping_only() {
        let mut h = FieldTable::default();
        for k in [
            "x-error",
            "x-error-reason",
            "x-delivery-count",
            "x-death",
            "x-first-death-queue",
            "x-last-death-reason",
            "traceparent",
        ] {
            h.insert(k.into(), AMQPValue::LongString(LongString::from("v")));
        }
        let out = replay_headers(Some(&h), ("x-replayed", AMQPValue::Boolean(true)));
        let keys: Vec<&str> = out.inner().keys().map(|k| k.as_str()).collect();
        assert_eq!(keys, ["traceparent", "x-replayed"]);
    }
}
