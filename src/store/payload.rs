//! What an outbox row carries: its JSON, serialized once when the row is
//! made. It is written to the `payload` column as it is, and a publication
//! is published from it as it is (its `body` read in place), so no JSON
//! tree is built, serialized twice and dropped per row.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::borrow::Cow;

use super::StoreError;

/// An outbox row's JSON text.
#[derive(Debug, Clone)]
pub struct Payload(Box<RawValue>);

/// How a publication row addresses its body: an event's routing key, or a
/// reply's queue, correlation id and trace.
#[derive(Serialize)]
struct PublicationRow<'a, B: Serialize + ?Sized> {
    #[serde(skip_serializing_if = "Option::is_none")]
    routing_key: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reply_to: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    correlation_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    traceparent: Option<&'a str>,
    body: &'a B,
}

/// A publication row's fields, read in place from its payload.
#[derive(Debug, Deserialize)]
pub struct Publication<'a> {
    /// An event's routing key.
    #[serde(default, borrow)]
    pub routing_key: Option<Cow<'a, str>>,
    /// A reply's queue.
    #[serde(default, borrow)]
    pub reply_to: Option<Cow<'a, str>>,
    /// A reply's correlation id.
    #[serde(default, borrow)]
    pub correlation_id: Option<Cow<'a, str>>,
    /// A reply's W3C trace context.
    #[serde(default, borrow)]
    pub traceparent: Option<Cow<'a, str>>,
    /// The message body, exactly as it is published.
    #[serde(borrow)]
    pub body: &'a RawValue,
}

/// A dead-letter row: the copy of a command whose data turned out invalid,
/// published to the dead-letter exchange with the reason and error.
#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DeadLetterRow {
    /// The `x-reason` it is published with (`invalid_data`).
    #[serde(default)]
    pub reason: String,
    /// What was wrong, the `x-error` header.
    #[serde(default)]
    pub error: String,
    /// The command's body with its secrets redacted, in base64.
    #[serde(default)]
    pub body_base64: String,
    /// The command's `reply_to`, kept for a replay.
    #[serde(default)]
    pub reply_to: Option<String>,
    /// The command's `correlation_id`, kept for a replay.
    #[serde(default)]
    pub correlation_id: Option<String>,
}

impl DeadLetterRow {
    /// The copy's body; empty if the stored text is not base64.
    pub fn body(&self) -> Vec<u8> {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(&self.body_base64)
            .unwrap_or_default()
    }
}

/// What the relay needs from an event's body besides publishing it.
#[derive(Debug, Deserialize)]
pub struct EventHead<'a> {
    /// The event's id (its AMQP message id).
    #[serde(borrow)]
    pub id: Cow<'a, str>,
    /// Its W3C trace context, if it has one.
    #[serde(default, borrow)]
    pub traceparent: Option<Cow<'a, str>>,
}

fn unwritable(e: serde_json::Error) -> StoreError {
    StoreError::Corrupt {
        table: "outbox",
        detail: format!("a payload does not serialize: {e}"),
    }
}

impl Payload {
    /// `value` as a row's payload.
    pub fn new<T: Serialize + ?Sized>(value: &T) -> Result<Payload, StoreError> {
        serde_json::value::to_raw_value(value)
            .map(Payload)
            .map_err(unwritable)
    }

    /// An event row's payload: `body` (the CloudEvent) under `routing_key`.
    pub fn event<B: Serialize + ?Sized>(
        routing_key: &str,
        body: &B,
    ) -> Result<Payload, StoreError> {
        Payload::new(&PublicationRow {
            routing_key: Some(routing_key),
            reply_to: None,
            correlation_id: None,
            traceparent: None,
            body,
        })
    }

    /// A reply row's payload: `body` to `reply_to` with its correlation id.
    pub fn reply<B: Serialize + ?Sized>(
        reply_to: &str,
        correlation_id: &str,
        traceparent: Option<&str>,
        body: &B,
    ) -> Result<Payload, StoreError> {
        Payload::new(&PublicationRow {
            routing_key: None,
            reply_to: Some(reply_to),
            correlation_id: Some(correlation_id),
            traceparent,
            body,
        })
    }

    /// A payload read back from the table.
    pub(crate) fn from_raw(raw: Box<RawValue>) -> Payload {
        Payload(raw)
    }

    /// The JSON as it is bound to the `jsonb` column.
    pub fn raw(&self) -> &RawValue {
        &self.0
    }

    /// The payload read as `T`, borrowing from it where `T` can.
    pub fn read<'a, T: Deserialize<'a>>(&'a self) -> Result<T, serde_json::Error> {
        serde_json::from_str(self.0.get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    #[test]
    fn an_event_row_publishes_its_body_as_written() {
        let body = json!({"id": "e-1", "type": "user.invited", "data": {"a": "b\"c"}});
        let payload = Payload::event("user.invited", &body).unwrap();
        let publication: Publication<'_> = payload.read().unwrap();
        assert_eq!(publication.routing_key.as_deref(), Some("user.invited"));
        assert_eq!(publication.reply_to, None);
        let published: Value = serde_json::from_str(publication.body.get()).unwrap();
        assert_eq!(published, body);
        let head: EventHead<'_> = serde_json::from_str(publication.body.get()).unwrap();
        assert_eq!(head.id, "e-1");
        assert_eq!(head.traceparent, None);
    }

    #[test]
    fn a_reply_row_keeps_its_address_and_trace() {
        let body = json!({"status": "applied", "data": {"user_id": "u-1"}});
        let trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let payload = Payload::reply("amq.gen-\"x\"", "c-1", Some(trace), &body).unwrap();
        let publication: Publication<'_> = payload.read().unwrap();
        assert_eq!(publication.reply_to.as_deref(), Some("amq.gen-\"x\""));
        assert_eq!(publication.correlation_id.as_deref(), Some("c-1"));
        assert_eq!(publication.traceparent.as_deref(), Some(trace));
        assert_eq!(publication.routing_key, None);
        let published: Value = serde_json::from_str(publication.body.get()).unwrap();
        assert_eq!(published, body);
    }

    #[test]
    fn a_payload_is_json_text_that_reads_back() {
        let payload = Payload::new(&json!({"to": "a@example.com", "n": 1})).unwrap();
        let back: Value = serde_json::from_str(payload.raw().get()).unwrap();
        assert_eq!(back, json!({"to": "a@example.com", "n": 1}));
        let read: Value = payload.read().unwrap();
        assert_eq!(read, back);
    }

    #[test]
    fn a_dead_letter_row_reads_what_earlier_workers_wrote() {
        // The JSON object that dead-letter rows already in the table hold.
        let stored = json!({
            "reason": "invalid_data",
            "error": "invite_user: email: not an address",
            "body_base64": "e30=",
            "reply_to": null,
            "correlation_id": "c-1",
        });
        let payload = Payload::new(&stored).unwrap();
        let row: DeadLetterRow = payload.read().unwrap();
        assert_eq!(row.reason, "invalid_data");
        assert_eq!(row.error, "invite_user: email: not an address");
        assert_eq!(row.body(), b"{}");
        assert_eq!(row.reply_to, None);
        assert_eq!(row.correlation_id.as_deref(), Some("c-1"));
        let written: Value = Payload::new(&row).unwrap().read().unwrap();
        assert_eq!(
            written, stored,
            "written with the same keys it is read with"
        );
    }
}
