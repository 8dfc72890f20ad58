//! The publication lane's confirms, off the lane's path.
//!
//! A batch of replies and events is published, then the broker confirms
//! it, then its rows are marked sent. If the lane waited for the confirms
//! (and for the mark before) before publishing the next batch, every reply
//! would queue behind the previous batch's round trip to the broker and
//! UPDATE in the database. So the lane only publishes and hands each batch
//! here: one task waits for the confirms in publishing order (a channel
//! confirms in order), puts a refused row back to be retried, and hands the
//! confirmed rows to the relay's marker (`marks`), which marks them with
//! whatever else was delivered meanwhile. Each batch holds a place among
//! [`Confirmer::IN_FLIGHT`] from its publishing until its mark finished, so
//! at most that many batches are ever published but not marked (a failed
//! mark is tried again until written): what a crash or a database outage
//! can make a relay publish again (with the same message ids).

use sqlx::PgPool;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use super::marks::Delivered;
use super::retry::retry_delay;
use crate::broker::publisher::{Pending, PublishError};
use crate::store::outbox::{self, ClaimedRow};

/// A published batch: each row with its publish's outcome so far.
pub type Published = Vec<(ClaimedRow, Result<Pending, PublishError>)>;

/// Waits for the confirms of published batches and hands their rows to be marked.
#[derive(Debug)]
pub struct Confirmer {
    room: Arc<Semaphore>,
    batches: Option<mpsc::UnboundedSender<(Published, OwnedSemaphorePermit)>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Confirmer {
    /// Batches published but not yet marked, at most.
    pub const IN_FLIGHT: usize = 4;

    /// A confirmer waiting at most `limit` for a confirm, retrying in
    /// `pool`, handing confirmed rows to `marks` (the relay's marker).
    pub(crate) fn start(
        pool: PgPool,
        limit: Duration,
        marks: mpsc::UnboundedSender<Delivered>,
    ) -> Confirmer {
        let (batches, received) = mpsc::unbounded_channel();
        Confirmer {
            room: Arc::new(Semaphore::new(Self::IN_FLIGHT)),
            batches: Some(batches),
            task: Some(tokio::spawn(confirm_all(pool, limit, received, marks))),
        }
    }

    /// A place for the next batch, once fewer than [`Self::IN_FLIGHT`] are
    /// published but not marked. `None` once finished.
    pub async fn room(&self) -> Option<OwnedSemaphorePermit> {
        self.room.clone().acquire_owned().await.ok()
    }

    /// Hands over a batch published in the place `permit`.
    pub fn published(&self, batch: Published, permit: OwnedSemaphorePermit) {
        if let Some(batches) = &self.batches {
            // The task ends only after the sender is dropped (`finish`).
            let _ = batches.send((batch, permit));
        }
    }

    /// Waits until every batch handed over is confirmed and handed on to
    /// be marked (the relay waits for its marker before it stops).
    pub async fn finish(&mut self) {
        self.batches = None;
        self.room.close();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

/// Confirms the batches in order and hands each one's confirmed rows, with
/// its place, to `marks`.
async fn confirm_all(
    pool: PgPool,
    limit: Duration,
    mut batches: mpsc::UnboundedReceiver<(Published, OwnedSemaphorePermit)>,
    marks: mpsc::UnboundedSender<Delivered>,
) {
    while let Some((batch, place)) = batches.recv().await {
        let sent = confirm(&pool, limit, batch).await;
        // The marker runs until the relay stops, after this task; were it
        // gone, the place goes back unmarked and the rows are published
        // again after their lease, as after a crash.
        let _ = marks.send((sent, place));
    }
}

/// Waits for each row's confirm; returns the confirmed rows' ids and puts
/// the others back to be retried later.
async fn confirm(pool: &PgPool, limit: Duration, batch: Published) -> Vec<i64> {
    let mut sent = Vec::with_capacity(batch.len());
    for (row, started) in batch {
        let result = match started {
            Ok(p) => tokio::time::timeout(limit, p.confirmed())
                .await
                .unwrap_or(Err(PublishError::NoConfirm(limit))),
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => sent.push(row.id),
            Err(e) => {
                let delay = retry_delay(Duration::from_millis(500), row.attempts)
                    .min(Duration::from_secs(30));
                tracing::warn!(outbox_id = row.id, kind = row.kind.as_str(), error = %e, "publish failed; will retry");
                if let Err(e) = outbox::retry_later(pool, row.id, delay, &e.to_string()).await {
                    // Still claimed: published again when the lease runs out.
                    tracing::warn!(outbox_id = row.id, error = %e, "could not schedule the retry");
                }
            }
        }
    }
    sent
}
