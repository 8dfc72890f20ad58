//! The deliveries that arrived together: admitted one by one, applied as
//! one batch (`handler::batch`), the applied ones acked together and each
//! of the others settled (`settle`).

use lapin::message::Delivery;
use tokio::sync::{OwnedSemaphorePermit, watch};
use tracing::Instrument;

use super::admit::{Incoming, admit};
use super::deps::Deps;
use super::outcome::record_applied;
use super::settle::settle;
use crate::broker::Publisher;
use crate::broker::acks::AckLedger;
use crate::broker::delivery::{ack, ack_up_to};
use crate::domain::reply::Reply;
use crate::handler::{BatchItem, FunnelStep, HandleError, Handled};

/// A command the batch applied: its reply and the funnel steps it took.
type Applied = (Incoming, Reply, Vec<FunnelStep>);

/// Handles the deliveries that arrived together: poison is dead-lettered
/// one by one, the commands are applied as one batch, then the applied ones
/// are acked together (one frame when `ledger` allows, else one per
/// command) and each of the others is settled (answered, retried or handed
/// back) in arrival order. `permit` is this batch's place among the
/// transactions running at once: when every command was applied it goes
/// back before the acks, so the next batch's transaction does not wait for
/// them; otherwise once all is settled (settling may use the database).
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
    let mut applied = Vec::with_capacity(incoming.len());
    let mut others = Vec::new();
    for (command, result) in incoming.into_iter().zip(results) {
        match result {
            Ok(Handled::Processed { reply, funnel }) => applied.push((command, reply, funnel)),
            other => others.push((command, other)),
        }
    }
    let permit = (!others.is_empty()).then_some(permit);
    ack_applied(&applied, ledger).await;
    for (command, reply, funnel) in applied {
        let kind = command.envelope.kind.as_str();
        command
            .span
            .in_scope(|| record_applied(kind, &reply, funnel, command.started));
    }
    for (command, result) in others {
        let span = command.span.clone();
        settle(command, result, deps, publisher, db_down)
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

/// Acks the applied commands: in one frame when no other delivery of the
/// channel is open below the last of them, else one by one.
async fn ack_applied(applied: &[Applied], ledger: &AckLedger) {
    let tags: Vec<u64> = applied
        .iter()
        .map(|(command, ..)| command.delivery.delivery_tag)
        .collect();
    let combined = applied.len() > 1 && ledger.covering(&tags).is_some();
    match applied.iter().max_by_key(|(c, ..)| c.delivery.delivery_tag) {
        Some((command, ..)) if combined => ack_up_to(&command.delivery).await,
        _ => {
            futures_util::future::join_all(
                applied.iter().map(|(command, ..)| ack(&command.delivery)),
            )
            .await;
        }
    }
}
