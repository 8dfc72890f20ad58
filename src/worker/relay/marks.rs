//! Marking delivered rows sent, through a database outage.
//!
//! A row delivered but not marked sent is delivered again once its lease
//! runs out. Each lane holds something for every delivered row until its
//! mark is written (the email lane a send permit, the publication lane a
//! place among the batches in flight), which bounds how many rows a crash
//! can make the next relay deliver twice. If a failed mark gave those back,
//! a lane would go on delivering through a database outage, every row of it
//! unmarked and delivered again afterwards. So a failed mark is tried again,
//! still holding them, until it is written: the lane stops delivering what
//! it could not record, and the bound holds however long the outage lasts.
//! (On the way out, the time the worker gives its relay to finish ends the
//! waiting.)

use futures_util::StreamExt;
use sqlx::PgPool;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio::task::JoinHandle;

use crate::store::outbox;

/// Rows a lane delivered, and what it holds until they are marked (an
/// email's send permit, a publication batch's place).
pub(crate) type Delivered = (Vec<i64>, OwnedSemaphorePermit);

/// Marks that may run at once: a lane waits for its rows' mark before its
/// permit or place goes back, so a second update in flight keeps the lanes
/// from idling behind the first.
const MARKS_IN_FLIGHT: usize = 2;

/// Starts the relay's marker: both lanes hand it what they delivered, and
/// everything handed over while the marks in flight run goes into one
/// UPDATE — an email sent and the replies and events confirmed at about
/// the same time are marked together, not by an UPDATE each. The task
/// ends once every sender is dropped and every mark written.
pub(crate) fn start(pool: PgPool) -> (mpsc::UnboundedSender<Delivered>, JoinHandle<()>) {
    let (delivered, received) = mpsc::unbounded_channel::<Delivered>();
    let task = tokio::spawn(async move {
        gathered(received)
            .for_each_concurrent(MARKS_IN_FLIGHT, |all| {
                let pool = pool.clone();
                async move {
                    let ids: Vec<i64> = all
                        .iter()
                        .flat_map(|(ids, _)| ids.iter().copied())
                        .collect();
                    if !ids.is_empty() {
                        mark_sent(&pool, &ids).await;
                    }
                    // The permits and places go back only now.
                    drop(all);
                }
            })
            .await;
    });
    (delivered, task)
}

/// First wait before a mark is tried again; doubles up to [`MAX_WAIT`].
const FIRST_WAIT: Duration = Duration::from_millis(100);
/// Longest wait between two tries.
const MAX_WAIT: Duration = Duration::from_secs(2);
/// A mark still failing is logged again every this many tries.
const LOG_EVERY: u32 = 10;

/// Marks `ids` sent, trying again until it is written.
async fn mark_sent(pool: &PgPool, ids: &[i64]) {
    let mut wait = FIRST_WAIT;
    let mut failures = 0u32;
    loop {
        match outbox::mark_sent(pool, ids).await {
            Ok(()) => {
                if failures > 0 {
                    tracing::info!(
                        rows = ids.len(),
                        failures,
                        "marked sent after the database came back"
                    );
                }
                return;
            }
            Err(e) => {
                if failures.is_multiple_of(LOG_EVERY) {
                    tracing::warn!(error = %e, rows = ids.len(), failures = failures + 1, "marking sent failed; the lanes wait and try again");
                }
                failures = failures.saturating_add(1);
            }
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(MAX_WAIT);
    }
}

/// What arrives on `rx`, as groups: each group is everything that arrived
/// while the one before was being handled, so one database write covers it.
fn gathered<T>(rx: mpsc::UnboundedReceiver<T>) -> impl futures_util::Stream<Item = Vec<T>> {
    futures_util::stream::unfold(rx, |mut rx| async move {
        let first = rx.recv().await?;
        let mut all = vec![first];
        while let Ok(more) = rx.try_recv() {
            all.push(more);
        }
        Some((all, rx))
    })
}
