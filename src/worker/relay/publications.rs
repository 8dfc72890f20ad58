//! The publication lane: events, replies and dead letters to the broker.

use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

use super::Relay;
use super::confirms::Confirmer;
use super::marks::Delivered;
use super::retry::retry_delay;
use crate::broker::Publisher;
use crate::broker::publisher::{Pending, PublishError};
use crate::store::StoreError;
use crate::store::outbox::{self, ClaimedRow, Lane, OutboxKind};
use crate::store::payload::{DeadLetterRow, EventHead, Publication};

impl Relay {
    /// The publication lane: publishes handed-over rows as they arrive, and
    /// claims what is left in the table in passes (on a wake-up, and at
    /// least once a second), again at once while passes come back full.
    pub(super) async fn publication_lane(
        self: Arc<Self>,
        mut handed: mpsc::Receiver<ClaimedRow>,
        mut shutdown: watch::Receiver<bool>,
        flush: Duration,
        marks: mpsc::UnboundedSender<Delivered>,
    ) {
        let wakeup = &self.wakeup.publications;
        let mut next_pass = tokio::time::Instant::now();
        let mut confirmer = Confirmer::start(self.pool.clone(), self.settings.lease / 2, marks);
        loop {
            if *shutdown.borrow() {
                let deadline = tokio::time::Instant::now() + flush;
                while let Ok(first) = handed.try_recv() {
                    self.publish_handed(first, &mut handed, &confirmer).await;
                }
                while tokio::time::Instant::now() < deadline {
                    match self.publish_pass(&confirmer).await {
                        Ok(n) if n > 0 => continue,
                        _ => break,
                    }
                }
                confirmer.finish().await;
                return;
            }
            if tokio::time::Instant::now() >= next_pass {
                next_pass = tokio::time::Instant::now() + Duration::from_secs(1);
                match self.publish_pass(&confirmer).await {
                    Ok(n) if n as i64 >= self.settings.batch => {
                        next_pass = tokio::time::Instant::now();
                        continue;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, lane = Lane::Publications.name(), "outbox pass failed")
                    }
                }
            }
            tokio::select! {
                Some(first) = handed.recv() => self.publish_handed(first, &mut handed, &confirmer).await,
                _ = wakeup.notified() => next_pass = tokio::time::Instant::now(),
                _ = tokio::time::sleep_until(next_pass) => {}
                _ = crate::shutdown::requested(&mut shutdown) => {}
            }
        }
    }

    /// Publishes `first` and whatever else is waiting in `handed`, up to a batch.
    async fn publish_handed(
        &self,
        first: ClaimedRow,
        handed: &mut mpsc::Receiver<ClaimedRow>,
        confirmer: &Confirmer,
    ) {
        let mut rows = vec![first];
        while (rows.len() as i64) < self.settings.batch {
            match handed.try_recv() {
                Ok(row) => rows.push(row),
                Err(_) => break,
            }
        }
        if let Err(e) = self.publish_all(rows, confirmer).await {
            tracing::warn!(error = %e, lane = Lane::Publications.name(), "publishing failed");
        }
    }

    /// One pass of the publication lane: claim a batch and publish it.
    /// Returns the rows claimed.
    async fn publish_pass(&self, confirmer: &Confirmer) -> Result<usize, StoreError> {
        let rows = self.claim(Lane::Publications, self.settings.batch).await?;
        let claimed = rows.len();
        self.publish_all(rows, confirmer).await?;
        Ok(claimed)
    }

    /// Publishes `rows` and hands them to `confirmer`, which waits for
    /// their confirms, marks those confirmed and puts the others back to
    /// be retried later; the lane goes on with the next rows meanwhile.
    async fn publish_all(
        &self,
        rows: Vec<ClaimedRow>,
        confirmer: &Confirmer,
    ) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let publisher = self.sessions.borrow().as_ref().map(|s| s.publisher.clone());
        let Some(publisher) = publisher else {
            for row in rows {
                let delay = retry_delay(Duration::from_millis(500), row.attempts)
                    .min(Duration::from_secs(10));
                outbox::retry_later(&self.pool, row.id, delay, "broker not connected").await?;
            }
            return Ok(());
        };
        // Only finished on the way out: the rows stay claimed until their lease ends.
        let Some(place) = confirmer.room().await else {
            return Ok(());
        };
        // The rows are published together, a chunk at a time: a publish
        // waits until lapin's I/O thread has written its frames, so one
        // after the other each row would cost a round trip to that thread
        // and the batch's last reply would wait for all the others.
        // Polled together, they queue their frames in order on the first
        // poll and one wake-up writes them all (figures in
        // docs/decisions/0006-relay-lanes-with-confirms-off-the-path.md).
        let mut published = Vec::with_capacity(rows.len());
        let mut rows = rows.into_iter().peekable();
        while rows.peek().is_some() {
            let chunk: Vec<ClaimedRow> = rows.by_ref().take(PUBLISHED_TOGETHER).collect();
            let started = futures_util::future::join_all(
                chunk.iter().map(|row| publish_row(&publisher, row)),
            )
            .await;
            published.extend(chunk.into_iter().zip(started));
        }
        confirmer.published(published, place);
        Ok(())
    }
}

async fn publish_row(publisher: &Publisher, row: &ClaimedRow) -> Result<Pending, PublishError> {
    let unreadable = |e: serde_json::Error| PublishError::Unreadable(e.to_string());
    match row.kind {
        OutboxKind::Event => {
            let p: Publication<'_> = row.payload.read().map_err(unreadable)?;
            let head: EventHead<'_> = serde_json::from_str(p.body.get()).map_err(unreadable)?;
            publisher
                .event(
                    p.routing_key.as_deref().unwrap_or_default(),
                    &head.id,
                    p.body.get().as_bytes(),
                    head.traceparent.as_deref(),
                )
                .await
        }
        OutboxKind::Reply => {
            let p: Publication<'_> = row.payload.read().map_err(unreadable)?;
            publisher
                .reply(
                    p.reply_to.as_deref().unwrap_or_default(),
                    p.correlation_id.as_deref().unwrap_or_default(),
                    p.body.get().as_bytes(),
                    p.traceparent.as_deref(),
                )
                .await
        }
        OutboxKind::DeadLetter => {
            let dead: DeadLetterRow = row.payload.read().map_err(unreadable)?;
            let mut original = lapin::BasicProperties::default()
                .with_content_type("application/cloudevents+json".into())
                .with_delivery_mode(2);
            if let Some(reply_to) = &dead.reply_to {
                original = original.with_reply_to(reply_to.as_str().into());
            }
            if let Some(correlation_id) = &dead.correlation_id {
                original = original.with_correlation_id(correlation_id.as_str().into());
            }
            publisher
                .dead_letter(&dead.body(), Some(&original), &dead.reason, &dead.error)
                .await
        }
        OutboxKind::Email => Err(PublishError::Returned(
            "an email row is not published".into(),
        )),
    }
}

/// Rows of a batch published at once. At most 30: up to that many,
/// `join_all` polls its futures one after the other in the order given, so
/// the rows keep their order on the wire (above, it hands them to a
/// `FuturesOrdered`, whose first polls follow no documented order).
const PUBLISHED_TOGETHER: usize = 30;
