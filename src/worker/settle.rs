//! Settling a command whose batch failed it: retry a transient failure
//! in-process (and answer what the retry gives), or hand the delivery back.
//!
//! A command whose handling fails for a transient reason is retried a few
//! times in-process with growing delays, then handed back to the broker;
//! after `max_deliveries` it is dead-lettered with the reason. When the
//! database itself is away, the delivery goes back at once and consumption
//! pauses (`consume`): nothing is acked before its transaction committed.

use std::time::Duration;
use tokio::sync::watch;

use super::admit::Incoming;
use super::deps::Deps;
use super::outcome::{answer_handled, dead_letter, record_handled};
use crate::broker::Publisher;
use crate::broker::delivery::{ack, previous_deliveries, requeue};
use crate::handler::{HandleError, Handled};
use crate::telemetry::metrics;

/// Transient failures retried in-process before the delivery goes back to the broker.
const IN_PROCESS_ATTEMPTS: u32 = 3;

/// Settles `command`, whose first attempt ended in `first`: applied late,
/// answered, retried in-process, or handed back.
pub(super) async fn settle(
    command: Incoming,
    first: Result<Handled, HandleError>,
    deps: &Deps,
    publisher: &Publisher,
    db_down: &watch::Sender<bool>,
) {
    let mut result = first;
    let mut attempt = 0;
    loop {
        match result {
            Ok(handled) => return answer(&command, handled, publisher).await,
            Err(e) if e.is_unavailable() => {
                tracing::warn!(error = %e, "database unavailable; the command goes back to the broker");
                db_down.send_replace(true);
                requeue(&command.delivery).await;
                return;
            }
            Err(e) => {
                attempt += 1;
                if attempt >= IN_PROCESS_ATTEMPTS {
                    return give_up(&command, &e, deps, publisher).await;
                }
                let delay = Duration::from_millis(100 * 4u64.pow(attempt));
                tracing::warn!(error = %e, attempt, retry_in_ms = delay.as_millis() as u64, "command failed; retrying");
                tokio::time::sleep(delay).await;
                let Incoming {
                    envelope,
                    address,
                    delivery,
                    ..
                } = &command;
                result = deps
                    .handler
                    .handle(envelope, address.as_ref(), &delivery.data)
                    .await;
            }
        }
    }
}

/// Acks a command that was handled, answering a duplicate or a reused id.
async fn answer(command: &Incoming, handled: Handled, publisher: &Publisher) {
    let envelope = &command.envelope;
    let trace = envelope.traceparent.as_ref();
    answer_handled(&handled, command.address.as_ref(), trace, publisher).await;
    ack(&command.delivery).await;
    record_handled(envelope.kind.as_str(), handled, command.started);
}

/// A command that failed every in-process attempt: back to the broker,
/// or to the dead letters once it has failed `max_deliveries` times.
async fn give_up(command: &Incoming, error: &HandleError, deps: &Deps, publisher: &Publisher) {
    let delivery = &command.delivery;
    metrics::command(
        command.envelope.kind.as_str(),
        "error",
        command.started.elapsed(),
    );
    let deliveries = previous_deliveries(delivery) + 1;
    if deliveries >= deps.max_deliveries {
        let message = format!("failed {deliveries} deliveries in a row, last: {error}");
        tracing::error!(error = %error, deliveries, "command keeps failing; dead-lettering it");
        // No reply: the command was not refused, and an operator who
        // replays it from the dead-letter queue gets it applied (but for a
        // token, which the copy has redacted).
        dead_letter(delivery, publisher, "transient", &message, None).await;
    } else {
        tracing::error!(error = %error, deliveries, "command failed; handing it back to the broker");
        tokio::time::sleep(Duration::from_secs(1)).await;
        requeue(delivery).await;
    }
}
