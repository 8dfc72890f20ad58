//! The command consumer: deliveries in, batches applied, then the acks.
//!
//! Deliveries that are waiting together are applied together, in one
//! transaction (see `handler::batch`); alone, a delivery is applied alone,
//! so batching adds no latency. When the database is away, consumption
//! pauses until it is back; on shutdown, prefetched deliveries go back to
//! the broker and in-flight batches get a grace period to finish.

use futures_util::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions};
use lapin::types::FieldTable;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use super::apply::process;
use super::deps::Deps;
use crate::broker::acks::AckLedger;
use crate::broker::delivery::requeue;
use crate::broker::session::{Session, backoff};

/// Why a consuming stint ended.
enum Ended {
    Shutdown,
    ConnectionLost,
    DatabaseDown,
}

/// Consumes `session`'s command queue until the connection is lost or
/// `shutdown` turns true, pausing while the database is unreachable.
pub async fn run(session: Session, deps: Arc<Deps>, mut shutdown: watch::Receiver<bool>) {
    loop {
        if !wait_for_database(&deps, &mut shutdown).await {
            return;
        }
        match consume(&session, &deps, &mut shutdown).await {
            Ended::Shutdown | Ended::ConnectionLost => return,
            Ended::DatabaseDown => {
                tracing::warn!("PostgreSQL is unreachable: consumption paused until it is back");
            }
        }
    }
}

/// Waits until the database answers; false if shutdown came first.
async fn wait_for_database(deps: &Deps, shutdown: &mut watch::Receiver<bool>) -> bool {
    let mut attempt = 0;
    loop {
        if *shutdown.borrow() {
            return false;
        }
        let ping = tokio::time::timeout(
            Duration::from_secs(2),
            sqlx::query("SELECT 1").execute(&deps.pool),
        )
        .await;
        if matches!(ping, Ok(Ok(_))) {
            if attempt > 0 {
                tracing::info!("PostgreSQL is back: consuming again");
            }
            deps.health.set_database(true);
            return true;
        }
        deps.health.set_database(false);
        attempt += 1;
        tokio::select! {
            _ = tokio::time::sleep(backoff(attempt.min(6))) => {}
            _ = crate::shutdown::requested(shutdown) => return false,
        }
    }
}

/// One consuming stint: takes deliveries in batches and applies each batch
/// in a task of its own, at most `concurrency` at once.
async fn consume(
    session: &Session,
    deps: &Arc<Deps>,
    shutdown: &mut watch::Receiver<bool>,
) -> Ended {
    let queue = session.topology.commands.clone();
    let mut consumer = match session
        .consume
        .basic_consume(
            queue.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
    {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "cannot start consuming");
            return Ended::ConnectionLost;
        }
    };
    let (db_down_tx, mut db_down) = watch::channel(false);
    let db_down_tx = Arc::new(db_down_tx);
    let permits = Arc::new(Semaphore::new(deps.concurrency.max(1)));
    let ledger = Arc::new(AckLedger::default());
    let mut tasks = JoinSet::new();
    tracing::info!(queue = %queue, "consuming commands");
    let ended = loop {
        tokio::select! {
            biased;
            _ = crate::shutdown::requested(shutdown) => break Ended::Shutdown,
            _ = crate::shutdown::requested(&mut db_down) => break Ended::DatabaseDown,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            next = consumer.next() => {
                let first = match next {
                    Some(Ok(delivery)) => delivery,
                    Some(Err(e)) => break lost(&e),
                    None => {
                        tracing::warn!("the command consumer was cancelled by the broker");
                        break Ended::ConnectionLost;
                    }
                };
                let Ok(permit) = permits.clone().acquire_owned().await else { break Ended::Shutdown };
                let (batch, failed) = take_waiting(&mut consumer, first, deps.batch_size);
                let deps = deps.clone();
                let publisher = session.publisher.clone();
                let db_down = db_down_tx.clone();
                let ledger = ledger.clone();
                let open = ledger.open(batch.iter().map(|d| d.delivery_tag).collect());
                tasks.spawn(async move {
                    process(batch, &deps, &publisher, &db_down, &ledger, permit).await;
                    // Every delivery of the batch is settled by now.
                    drop(open);
                });
                if let Some(e) = failed {
                    break lost(&e);
                }
            }
        }
    };
    if !matches!(ended, Ended::ConnectionLost) {
        stop_consuming(session, consumer).await;
    }
    finish_in_flight(tasks, deps.grace).await;
    ended
}

/// The consumer's channel failed.
fn lost(error: &lapin::Error) -> Ended {
    tracing::warn!(error = %error, "the command consumer lost its channel");
    Ended::ConnectionLost
}

/// `first` and whatever else is already waiting, up to `most` deliveries;
/// and the channel's error if it failed meanwhile.
fn take_waiting(
    consumer: &mut lapin::Consumer,
    first: Delivery,
    most: usize,
) -> (Vec<Delivery>, Option<lapin::Error>) {
    let mut batch = vec![first];
    while batch.len() < most.max(1) {
        match consumer.next().now_or_never() {
            Some(Some(Ok(delivery))) => batch.push(delivery),
            Some(Some(Err(e))) => return (batch, Some(e)),
            Some(None) | None => break,
        }
    }
    (batch, None)
}

/// Cancels the consumer and hands the deliveries already prefetched back
/// to the broker.
async fn stop_consuming(session: &Session, mut consumer: lapin::Consumer) {
    if let Err(e) = session
        .consume
        .basic_cancel(consumer.tag(), BasicCancelOptions::default())
        .await
    {
        tracing::debug!(error = %e, "cancelling the consumer");
    }
    while let Ok(Some(Ok(delivery))) =
        tokio::time::timeout(Duration::from_millis(200), consumer.next()).await
    {
        requeue(&delivery).await;
    }
}

/// Lets the batches in flight finish within `grace`; what is still running
/// then is aborted, and its deliveries are redelivered by the broker.
async fn finish_in_flight(mut tasks: JoinSet<()>, grace: Duration) {
    let in_flight = tasks.len();
    if in_flight > 0 {
        tracing::info!(in_flight, "waiting for in-flight commands");
    }
    let drained =
        tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(
            left = tasks.len(),
            "grace period over; unfinished commands will be redelivered"
        );
        tasks.abort_all();
    }
}
