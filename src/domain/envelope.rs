//! The CloudEvents 1.0 envelope every command arrives in, and why one may not.
//!
//! A message that is not such an envelope can never succeed: the consumer
//! dead-letters it with the `EnvelopeError`'s reason and keeps going.

use serde_json::Value;
use thiserror::Error;

use super::command::CommandType;
use super::command_fingerprint::CommandFingerprint;
use super::field_error::FieldError;
use super::ids::{CommandId, UserId};
use super::trace::TraceParent;

/// The largest message the worker accepts (64 KiB).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// A parsed command envelope. `data` is parsed per `kind` by `Command::parse`.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// Idempotency key.
    pub id: CommandId,
    /// Which service sent it.
    pub source: String,
    /// The command type.
    pub kind: CommandType,
    /// The acting portal user, if any.
    pub actor: Option<UserId>,
    /// The command's data, still JSON.
    pub data: Value,
    /// Trace context: the CloudEvents `traceparent` attribute (the AMQP
    /// header of the same name, read by the consumer, takes precedence).
    pub traceparent: Option<TraceParent>,
}

impl Envelope {
    /// What binds its id to this command: type, actor and data.
    pub fn fingerprint(&self) -> CommandFingerprint {
        CommandFingerprint::of(self.kind, self.actor, &self.data)
    }
}

/// Why a message is not a command envelope. The `reason` label is used in
/// the `x-error` header's prefix and in `dead_lettered_total{reason}`.
#[derive(Debug, Error, PartialEq)]
pub enum EnvelopeError {
    /// Over `MAX_MESSAGE_BYTES`.
    #[error("message is {0} bytes; the limit is 65536")]
    TooLarge(usize),
    /// Not UTF-8 JSON.
    #[error("message is not JSON: {0}")]
    NotJson(String),
    /// JSON, but not a CloudEvents 1.0 command envelope.
    #[error("not a CloudEvents 1.0 envelope: {0}")]
    NotEnvelope(FieldError),
    /// A well-formed envelope of a type the worker does not know.
    #[error("unknown command type {0:?}")]
    UnknownType(String),
}

impl EnvelopeError {
    /// Short label for metrics and the dead-letter header.
    pub fn reason(&self) -> &'static str {
        match self {
            EnvelopeError::TooLarge(_) => "too_large",
            EnvelopeError::NotJson(_) => "not_json",
            EnvelopeError::NotEnvelope(_) => "not_envelope",
            EnvelopeError::UnknownType(_) => "unknown_type",
        }
    }
}

/// What could be salvaged from a bad message to address a reply.
pub fn salvage_id(body: &[u8]) -> Option<String> {
    if body.len() > MAX_MESSAGE_BYTES {
        return None;
    }
    let v: Value = super::strict_json::from_slice(body).ok()?;
    let id = v.get("id")?.as_str()?;
    CommandId::parse(id).ok().map(|c| c.as_str().to_owned())
}

/// Parses a message body into an envelope.
pub fn parse(body: &[u8]) -> Result<Envelope, EnvelopeError> {
    if body.len() > MAX_MESSAGE_BYTES {
        return Err(EnvelopeError::TooLarge(body.len()));
    }
    let value: Value =
        super::strict_json::from_slice(body).map_err(|e| EnvelopeError::NotJson(e.to_string()))?;
    let Value::Object(map) = value else {
        return Err(EnvelopeError::NotEnvelope(FieldError::new(
            "",
            "the message must be a JSON object",
        )));
    };
    let string = |key: &str| -> Result<&str, EnvelopeError> {
        match map.get(key) {
            Some(Value::String(s)) if !s.trim().is_empty() => Ok(s),
            Some(_) => Err(EnvelopeError::NotEnvelope(FieldError::new(
                key,
                "must be a non-empty string",
            ))),
            None => Err(EnvelopeError::NotEnvelope(FieldError::new(
                key,
                "is required",
            ))),
        }
    };
    if string("specversion")? != "1.0" {
        return Err(EnvelopeError::NotEnvelope(FieldError::new(
            "specversion",
            "must be \"1.0\"",
        )));
    }
    let id = CommandId::parse(string("id")?).map_err(EnvelopeError::NotEnvelope)?;
    let source = string("source")?;
    if source.len() > 512 {
        return Err(EnvelopeError::NotEnvelope(FieldError::new(
            "source",
            "must be at most 512 bytes",
        )));
    }
    let type_name = string("type")?;
    let kind = CommandType::parse(type_name)
        .ok_or_else(|| EnvelopeError::UnknownType(type_name.chars().take(64).collect()))?;
    let actor = match map.get("actor") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => {
            Some(UserId::parse(s, "actor").map_err(EnvelopeError::NotEnvelope)?)
        }
        Some(_) => {
            return Err(EnvelopeError::NotEnvelope(FieldError::new(
                "actor",
                "must be a user id string",
            )));
        }
    };
    Ok(Envelope {
        id,
        source: source.to_owned(),
        kind,
        actor,
        data: map.get("data").cloned().unwrap_or(Value::Null),
        traceparent: map
            .get("traceparent")
            .and_then(Value::as_str)
            .and_then(TraceParent::parse),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(v: Value) -> Vec<u8> {
        serde_json::to_vec(&v).unwrap()
    }

    fn good() -> Value {
        json!({"specversion": "1.0", "id": "c-1", "source": "portal", "type": "check_email",
               "time": "2026-11-22T10:00:00Z", "data": {"email": "a@example.com"}, "extra": 1})
    }

    #[test]
    fn a_well_formed_envelope_parses_ignoring_extra_attributes() {
        let e = parse(&body(good())).unwrap();
        assert_eq!(e.id.as_str(), "c-1");
        assert_eq!(e.kind, CommandType::CheckEmail);
        assert_eq!(e.actor, None);
    }

    #[test]
    fn oversized_message_is_too_large() {
        let big = vec![b' '; MAX_MESSAGE_BYTES + 1];
        assert_eq!(parse(&big).unwrap_err().reason(), "too_large");
    }

    #[test]
    fn garbage_is_not_json() {
        assert_eq!(parse(b"\xff\xfe{").unwrap_err().reason(), "not_json");
        assert_eq!(parse(b"hello").unwrap_err().reason(), "not_json");
    }

    #[test]
    fn missing_or_wrong_attributes_are_not_an_envelope() {
        for key in ["specversion", "id", "source", "type"] {
            let mut v = good();
            v.as_object_mut().unwrap().remove(key);
            let err = parse(&body(v)).unwrap_err();
            assert_eq!(err.reason(), "not_envelope", "{key}");
            assert!(err.to_string().contains(key));
        }
        let mut v = good();
        v["specversion"] = json!("0.3");
        assert_eq!(parse(&body(v)).unwrap_err().reason(), "not_envelope");
        let mut v = good();
        v["actor"] = json!("not-a-uuid");
        assert!(parse(&body(v)).unwrap_err().to_string().contains("actor"));
        assert_eq!(
            parse(&body(json!([1, 2]))).unwrap_err().reason(),
            "not_envelope"
        );
    }

    #[test]
    fn unknown_type_is_named() {
        let mut v = good();
        v["type"] = json!("drop_tables");
        let err = parse(&body(v)).unwrap_err();
        assert_eq!(err, EnvelopeError::UnknownType("drop_tables".into()));
    }

    #[test]
    fn id_is_salvaged_for_the_reply_when_possible() {
        let mut v = good();
        v["type"] = json!("nope");
        assert_eq!(salvage_id(&body(v)), Some("c-1".into()));
        assert_eq!(salvage_id(b"nope"), None);
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_parse_or_are_refused_with_a_reason(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            match parse(&body) {
                Ok(env) => proptest::prop_assert!(!env.id.as_str().is_empty()),
                Err(e) => proptest::prop_assert!(!e.reason().is_empty() && !e.to_string().is_empty()),
            }
        }

        #[test]
        fn envelope_shaped_json_parses_or_is_refused(
            id in proptest::option::of("[ -~]{0,40}"),
            kind in proptest::option::of("[a-z_]{0,24}"),
            actor in proptest::option::of("[0-9a-f-]{0,40}"),
        ) {
            let mut v = json!({"specversion": "1.0", "source": "s", "data": {}});
            if let Some(id) = id { v["id"] = json!(id); }
            if let Some(kind) = kind { v["type"] = json!(kind); }
            if let Some(actor) = actor { v["actor"] = json!(actor); }
            let _ = parse(&body(v));
        }
    }
}
