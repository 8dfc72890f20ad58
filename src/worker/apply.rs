//! The deliveries that arrived together: admitted one by one, applied as
//! one batch (`handler::batch`), the handled ones answered and acked
//! together and each failed one settled (`settle`).

use lapin::message::Delivery;
use tokio::sync::{OwnedSemaphorePermit, watch};
use tracing::Instrument;

use super::admit::{Incoming, admit};
use super::deps::Deps;
use super::outcome::{answer_handled, record_handled};
use super::settle::settle;
use crate::broker::Publisher;
use crate::broker::acks::AckLedger;
use crate::broker::delivery::{ack, ack_up_to};
use crate::handler::{BatchItem, HandleError, Handled};

/// A command the batch handled (applied, or answered as recorded before).
type Done = (Incoming, Handled);

/// Handles the deliveries that arrived together: poison is dead-lettered
/// one by one, the commands are applied as one batch, the answers to those
/// recorded before are published (together), then every handled command is
/// acked (one frame when `ledger` allows, else one per command) and each
/// failed one is settled (retried or handed back) in arrival order.
/// `permit` is this batch's place among the transactions running at once:
/// when nothing failed it goes back before the answers and acks, so the
/// next batch's transaction does not wait for them; otherwise once all is
/// settled (settling may use the database).
pub(super) async fn process(
    deliveries: Vec<Delivery>,
    deps: &Deps,
    publisher: &Publisher,
    db_down: &watch::Sender<bool>,
    ledger: &AckLedger,
    permit: OwnedSemaphorePermit,
) {
    let mut incoming = Vec::with_capacity(deliveries.len());
    for delivery in deliveries {
        if let Some(command) = admit(delivery, publisher).await {
            incoming.push(command);
        }
    }
    let results = apply(&incoming, deps).await;
    let mut done = Vec::with_capacity(incoming.len());
    let mut failed = Vec::new();
    for (command, result) in incoming.into_iter().zip(results) {
        match result {
            Ok(handled) => done.push((command, handled)),
            Err(e) => failed.push((command, e)),
        }
    }
    let permit = (!failed.is_empty()).then_some(permit);
    futures_util::future::join_all(done.iter().map(|(command, handled)| {
        let trace = command.envelope.traceparent.as_ref();
        answer_handled(handled, command.address.as_ref(), trace, publisher)
            .instrument(command.span.clone())
    }))
    .await;
    ack_done(&done, ledger).await;
    for (command, handled) in done {
        let kind = command.envelope.kind.as_str();
        command
            .span
            .in_scope(|| record_handled(kind, handled, command.started));
    }
    for (command, error) in failed {
        let span = command.span.clone();
        settle(command, Err(error), deps, publisher, db_down)
            .instrument(span)
            .await;
    }
    drop(permit);
}

/// Applies the admitted commands as one batch.
async fn apply(incoming: &[Incoming], deps: &Deps) -> Vec<Result<Handled, HandleError>> {
    let items: Vec<BatchItem<'_>> = incoming
        .iter()
        .map(|c| BatchItem {
            envelope: &c.envelope,
            reply_to: c.address.as_ref(),
            raw: &c.delivery.data,
            span: &c.span,
        })
        .collect();
    deps.handler.handle_batch(&items).await
}

/// Acks the handled commands: in one frame when no other delivery of the
/// channel is open below the last of them, else one by one.
async fn ack_done(done: &[Done], ledger: &AckLedger) {
    let tags: Vec<u64> = done
        .iter()
        .map(|(command, _)| command.delivery.delivery_tag)
        .collect();
    let combined = done.len() > 1 && ledger.covering(&tags).is_some();
    match done.iter().max_by_key(|(c, _)| c.delivery.delivery_tag) {
        Some((command, _)) if combined => ack_up_to(&command.delivery).await,
        _ => {
            futures_util::future::join_all(done.iter().map(|(command, _)| ack(&command.delivery)))
                .await;
        }
    }
}
