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
use crate::handler::{FunnelStep, ReplyAddress};
use crate::telemetry::metrics;

/// Counts and logs a command that was applied and acked.
pub(super) fn record_applied(
    kind: &'static str,
    reply: &Reply,
    funnel: Vec<FunnelStep>,
    started: Instant,
) {
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
