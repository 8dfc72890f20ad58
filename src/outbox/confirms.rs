//! The publication lane's confirms and marks, off the lane's path.
//!
//! A batch of replies and events is published, then the broker confirms
//! it, then its rows are marked sent. If the lane waited for the confirms
//! (and for the mark before) before publishing the next batch, every reply
//! would queue behind the previous batch's round trip to the broker and
//! UPDATE in the database. So the lane only publishes and hands each batch
//! here: one task waits for the confirms in publishing order (a channel
//! confirms in order), puts a refused row back to be retried, and marks
//! the confirmed rows sent, everything confirmed while a mark runs going
//! into the next one. Each batch holds a place among
//! [`Confirmer::IN_FLIGHT`] from its publishing until its mark finished, so
//! at most that many batches are ever published but not marked (a failed
//! mark is tried again until written): what a crash or a database outage
//! can make a relay publish again (with the same message ids).

use futures_util::StreamExt;
use sqlx::PgPool;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use super::relay::retry_delay;
use crate::broker::publisher::{Pending, PublishError};
use crate::store::outbox::{self, ClaimedRow, Lane};

/// A published batch: each row with its publish's outcome so far.
pub type Published = Vec<(ClaimedRow, Result<Pending, PublishError>)>;

/// Waits for the confirms of published batches and marks their rows.
#[derive(Debug)]
pub struct Confirmer {
    room: Arc<Semaphore>,
    batches: Option<mpsc::UnboundedSender<(Published, OwnedSemaphorePermit)>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Confirmer {
    /// Batches published but not yet marked, at most.
    pub const IN_FLIGHT: usize = 4;

    /// A confirmer marking in `pool`, waiting at most `limit` for a confirm.
    pub fn start(pool: PgPool, limit: Duration) -> Confirmer {
        let (batches, received) = mpsc::unbounded_channel();
        Confirmer {
            room: Arc::new(Semaphore::new(Self::IN_FLIGHT)),
            batches: Some(batches),
            task: Some(tokio::spawn(confirm_and_mark(pool, limit, received))),
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

    /// Waits until every batch handed over is confirmed and marked.
    pub async fn finish(&mut self) {
        self.batches = None;
        self.room.close();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

/// Confirms the batches in order; the confirmed rows of as many as came in
/// meanwhile are marked in one UPDATE, one at a time.
async fn confirm_and_mark(
    pool: PgPool,
    limit: Duration,
    batches: mpsc::UnboundedReceiver<(Published, OwnedSemaphorePermit)>,
) {
    let (confirmed_tx, confirmed_rx) = mpsc::unbounded_channel();
    let confirming = {
        let pool = pool.clone();
        async move {
            let mut batches = batches;
            while let Some((batch, permit)) = batches.recv().await {
                let sent = confirm(&pool, limit, batch).await;
                let _ = confirmed_tx.send((sent, permit));
            }
        }
    };
    let marking = super::gathered(confirmed_rx).for_each(|all| {
        let pool = pool.clone();
        async move {
            let ids: Vec<i64> = all
                .iter()
                .flat_map(|(sent, _)| sent.iter().copied())
                .collect();
            if !ids.is_empty() {
                super::marks::mark_sent(&pool, &ids, Lane::Publications).await;
            }
            // The places go back only now.
            drop(all);
        }
    });
    tokio::join!(confirming, marking);
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
