//! What the worker does with a delivery's outcome outside the outbox: an
//! applied command counted and logged, a reply published straight away
//! (to a duplicate, a reused id, a message that is not a command), the
//! dead-letter copy of a delivery; replies and copies confirmed.

use lapin::message::Delivery;

use crate::broker::Publisher;
use crate::broker::delivery::{ack, requeue};
use std::time::Instant;

use crate::domain::reply::{Reply, ReplyStatus};
use crate::domain::trace::TraceParent;
use crate::handler::{FunnelStep, Handled, ReplyAddress};
use crate::telemetry::metrics;

/// Counts and logs a command that was applied and acked.
fn record_applied(kind: &'static str, reply: &Reply, funnel: Vec<FunnelStep>, started: Instant) {
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

/// Answers a command that was handled: nothing to publish for one applied
/// now (its reply is in the outbox); the stored reply, marked as a
/// duplicate, for a redelivery; the refusal for a reused id.
pub(super) async fn answer_handled(
    handled: &Handled,
    address: Option<&ReplyAddress>,
    trace: Option<&TraceParent>,
    publisher: &Publisher,
) {
    let Some(address) = address else {
        return;
    };
    match handled {
        Handled::Processed { .. } => {}
        Handled::Duplicate(reply) => {
            let duplicate = reply.clone().as_duplicate();
            publish_reply(publisher, address, &duplicate, trace).await
        }
        Handled::IdReused(reply) => publish_reply(publisher, address, reply, trace).await,
    }
}

/// Counts and logs a command that was handled and acked.
pub(super) fn record_handled(kind: &'static str, handled: Handled, started: Instant) {
    match handled {
        Handled::Processed { reply, funnel } => record_applied(kind, &reply, funnel, started),
        Handled::Duplicate(_) => {
            tracing::info!("duplicate delivery answered with the stored reply");
            metrics::command(kind, "duplicate", started.elapsed());
        }
        Handled::IdReused(reply) => {
            tracing::warn!(
                status = reply.status.as_str(),
                code = %reply.code,
                "command id already recorded for a different command; refused"
            );
            metrics::command(kind, reply.status.as_str(), started.elapsed());
        }
    }
}

pub(super) async fn publish_reply(
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
pub(super) async fn dead_letter(
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
