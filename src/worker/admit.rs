//! Admission: a delivery becomes a command, or is dead-lettered.
//!
//! A message that is not a command envelope is copied to the dead-letter
//! exchange (confirmed) and acked, so poison never blocks the queue; so is
//! a command whose `reply_to` names one of the worker's own queues
//! (`domain::reply_to`).

use lapin::message::Delivery;
use std::time::Instant;

use super::outcome::dead_letter;
use crate::broker::Publisher;
use crate::broker::delivery::{header_str, property};
use crate::domain::envelope::{self, Envelope};
use crate::domain::reply::{Reason, Rejection, Reply, ReplyStatus};
use crate::domain::reply_to::is_forbidden_reply_to;
use crate::domain::trace::TraceParent;
use crate::handler::ReplyAddress;
use crate::telemetry::metrics;

/// A delivery that parsed as a command envelope.
pub(super) struct Incoming {
    pub delivery: Delivery,
    pub envelope: Envelope,
    pub address: Option<ReplyAddress>,
    pub span: tracing::Span,
    pub started: Instant,
}

/// Parses `delivery` as a command envelope; anything else is dead-lettered
/// (and answered `invalid` if it asked for a reply).
pub(super) async fn admit(delivery: Delivery, publisher: &Publisher) -> Option<Incoming> {
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
