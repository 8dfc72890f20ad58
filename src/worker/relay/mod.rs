//! Claims due outbox rows, delivers them, marks them sent or schedules a retry.

use futures_util::StreamExt;
use lettre::message::Mailbox;
use lettre::{Address, Message};
use serde_json::Value;
use sqlx::PgPool;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

use crate::broker::publisher::{Pending, PublishError};
use crate::broker::{Publisher, SessionWatch};
use crate::domain::email;
use crate::domain::notification::EmailJob;
use crate::mail::{Mailer, Renderer, message};
use crate::outbox::Wakeup;
use crate::outbox::confirms::Confirmer;
use crate::outbox::handoff::HandoffQueues;
use crate::outbox::marks::Delivered;
use crate::store::StoreError;
use crate::store::outbox::{self, ClaimedRow, Lane, OutboxKind};
use crate::store::payload::{EventHead, Publication};
use crate::telemetry::metrics;

/// How the relay claims and retries.
#[derive(Debug, Clone)]
pub struct RelaySettings {
    /// Rows claimed per pass.
    pub batch: i64,
    /// How long a claim lasts.
    pub lease: Duration,
    /// Email attempts before a row is marked failed.
    pub max_attempts: i32,
    /// First retry delay; doubles per attempt.
    pub retry_base: Duration,
    /// Emails sent at once.
    pub concurrency: usize,
}

/// The relay.
pub struct Relay {
    owner: uuid::Uuid,
    pool: PgPool,
    renderer: Arc<Renderer>,
    mailer: Arc<Mailer>,
    sessions: SessionWatch,
    wakeup: Arc<Wakeup>,
    settings: RelaySettings,
}

/// Delay before retry number `attempts` (1-based): base doubling, capped at 1 h.
pub fn retry_delay(base: Duration, attempts: i32) -> Duration {
    let factor = 1u32 << attempts.clamp(1, 20).saturating_sub(1);
    base.saturating_mul(factor).min(Duration::from_secs(3600))
}

enum Delivery {
    Sent,
    Retry(String),
    Failed(String),
}

impl Relay {
    /// The relay `owner` over `pool`, delivering through `mailer` and the
    /// current session.
    pub fn new(
        owner: uuid::Uuid,
        pool: PgPool,
        renderer: Arc<Renderer>,
        mailer: Arc<Mailer>,
        sessions: SessionWatch,
        wakeup: Arc<Wakeup>,
        settings: RelaySettings,
    ) -> Relay {
        Relay {
            owner,
            pool,
            renderer,
            mailer,
            sessions,
            wakeup,
            settings,
        }
    }

    /// Delivers until `shutdown` in two lanes (publications, emails): rows
    /// handed over by commands as they come, rows left in the table on
    /// wake-ups and once a second. Then keeps delivering what is due for up
    /// to `flush` and hands back whatever it still holds. Both lanes hand
    /// what they delivered to one marker (`marks`), so an email and the
    /// publications delivered at about the same time share an UPDATE.
    pub async fn run(
        self: Arc<Self>,
        queues: HandoffQueues,
        shutdown: watch::Receiver<bool>,
        flush: Duration,
    ) {
        let (marks, marking) = super::marks::start(self.pool.clone());
        let emails = tokio::spawn(self.clone().email_lane(
            queues.emails,
            queues.emails_sender,
            shutdown.clone(),
            flush,
            marks.clone(),
        ));
        self.clone()
            .publication_lane(queues.publications, shutdown, flush, marks)
            .await;
        let _ = emails.await;
        // Every delivered row marked before the undelivered are handed back.
        let _ = marking.await;
        self.release().await;
    }

    /// The publication lane: publishes handed-over rows as they arrive, and
    /// claims what is left in the table in passes (on a wake-up, and at
    /// least once a second), again at once while passes come back full.
    async fn publication_lane(
        self: Arc<Self>,
        mut handed: tokio::sync::mpsc::Receiver<ClaimedRow>,
        mut shutdown: watch::Receiver<bool>,
        flush: Duration,
        marks: tokio::sync::mpsc::UnboundedSender<Delivered>,
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
        handed: &mut tokio::sync::mpsc::Receiver<ClaimedRow>,
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

    /// Hands back the rows this relay claimed but did not deliver.
    pub async fn release(&self) {
        match outbox::release(&self.pool, self.owner).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(rows = n, "handed back undelivered outbox rows"),
            Err(e) => {
                tracing::warn!(error = %e, "could not hand back outbox rows; their lease will expire")
            }
        }
    }

    /// Claims up to `limit` due rows of `lane` for this relay.
    async fn claim(&self, lane: Lane, limit: i64) -> Result<Vec<ClaimedRow>, StoreError> {
        outbox::claim(&self.pool, lane, limit, self.settings.lease, self.owner).await
    }

    /// One pass of the publication lane: claim a batch and publish it.
    /// Returns the rows claimed.
    async fn publish_pass(&self, confirmer: &Confirmer) -> Result<usize, StoreError> {
        let rows = self.claim(Lane::Publications, self.settings.batch).await?;
        let claimed = rows.len();
        self.publish_all(rows, confirmer).await?;
        Ok(claimed)
    }

    /// The email lane: one continuous stream of rows rather than passes, so
    /// the SMTP pool never idles while the last emails of a pass finish and
    /// the next claim runs. Commands hand their emails to `queued`; a
    /// claimer adds what is left in the table, claiming whenever half of
    /// `batch` is free in the queue. On shutdown the claimer claims what is
    /// due for up to `flush`; rows queued but not sent by then are handed
    /// back by `release`.
    async fn email_lane(
        self: Arc<Self>,
        queued: tokio::sync::mpsc::Receiver<ClaimedRow>,
        queue: tokio::sync::mpsc::Sender<ClaimedRow>,
        shutdown: watch::Receiver<bool>,
        flush: Duration,
        marks: tokio::sync::mpsc::UnboundedSender<Delivered>,
    ) {
        let chunk = usize::try_from(self.settings.batch).unwrap_or(1).max(2) / 2;
        let give_up = std::sync::atomic::AtomicBool::new(false);
        let (done, claimer_done) = watch::channel(false);
        let claiming = async {
            self.claim_emails(queue, chunk, shutdown, flush, &give_up)
                .await;
            done.send_replace(true);
        };
        let sending = self.send_stream(queued, claimer_done, &give_up, marks);
        tokio::join!(claiming, sending);
    }

    /// Claims due emails into `queue`, `chunk` at most at a time, until
    /// shutdown (plus `flush`); sets `give_up` when it stops for good.
    async fn claim_emails(
        &self,
        queue: tokio::sync::mpsc::Sender<ClaimedRow>,
        chunk: usize,
        mut shutdown: watch::Receiver<bool>,
        flush: Duration,
        give_up: &std::sync::atomic::AtomicBool,
    ) {
        let mut deadline: Option<tokio::time::Instant> = None;
        loop {
            if deadline.is_none() && *shutdown.borrow() {
                deadline = Some(tokio::time::Instant::now() + flush);
            }
            let until = deadline.unwrap_or_else(far_future);
            // Room first: rows are claimed only when the senders can take them.
            let permits = tokio::select! {
                permits = queue.reserve_many(chunk) => permits,
                _ = tokio::time::sleep_until(until) => break,
            };
            let Ok(permits) = permits else { break };
            let limit = i64::try_from(chunk).unwrap_or(i64::MAX);
            match self.claim(Lane::Emails, limit).await {
                Ok(rows) => {
                    let full = rows.len() == chunk;
                    for (permit, row) in permits.zip(rows) {
                        permit.send(row);
                    }
                    if full {
                        continue;
                    }
                    if deadline.is_some() {
                        break; // stopping, and nothing more is due
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, lane = Lane::Emails.name(), "outbox claim failed")
                }
            }
            if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                break;
            }
            tokio::select! {
                _ = self.wakeup.emails.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = crate::shutdown::requested(&mut shutdown) => {}
                _ = tokio::time::sleep_until(until) => {}
            }
        }
        if deadline.is_some() {
            give_up.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Sends the rows of `queued`, `concurrency` at a time, until the
    /// claimer is `done` and the queue is empty. Sent rows go to `marks`,
    /// the relay's marker, which marks them with whatever else was
    /// delivered meanwhile. A send holds its permit until its row is
    /// marked (a failed mark is tried again until written), so at most
    /// `concurrency` emails are ever sent-or-sending but not yet marked,
    /// through a database outage too: the most a crash or an outage can
    /// make a relay send twice. Once `give_up` is set, queued rows are no
    /// longer sent (`release` hands them back).
    async fn send_stream(
        &self,
        queued: tokio::sync::mpsc::Receiver<ClaimedRow>,
        done: watch::Receiver<bool>,
        give_up: &std::sync::atomic::AtomicBool,
        marks: tokio::sync::mpsc::UnboundedSender<Delivered>,
    ) {
        let concurrency = self.settings.concurrency.max(1);
        let permits = Arc::new(tokio::sync::Semaphore::new(concurrency));
        // Commands keep a sender on the queue: the stream ends when the
        // claimer is done and the queue empty, not when it closes.
        let rows =
            futures_util::stream::unfold((queued, done), |(mut queued, mut done)| async move {
                let mut finished = *done.borrow();
                while !finished {
                    tokio::select! {
                        row = queued.recv() => return row.map(|row| (row, (queued, done))),
                        changed = done.changed() => finished = changed.is_err() || *done.borrow(),
                    }
                }
                let row = queued.try_recv().ok()?;
                Some((row, (queued, done)))
            });
        // Twice as many emails are in hand as may be sending: the next ones
        // are rendered and built while the permits wait for their marks.
        rows.for_each_concurrent(2 * concurrency, |row| {
            let marks = marks.clone();
            let permits = permits.clone();
            async move {
                let stopped = || give_up.load(std::sync::atomic::Ordering::Relaxed);
                if stopped() {
                    return;
                }
                let email = match self.prepare_email(row).await {
                    Ok(Some(email)) => email,
                    Ok(None) => return,
                    Err(e) => {
                        tracing::warn!(error = %e, lane = Lane::Emails.name(), "recording an email outcome failed");
                        return;
                    }
                };
                let Ok(permit) = permits.acquire_owned().await else {
                    return;
                };
                if stopped() {
                    return;
                }
                match self.deliver_email(email).await {
                    Ok(Some(id)) => {
                        // The marker outlives the lanes (`run`).
                        let _ = marks.send((vec![id], permit));
                    }
                    Ok(None) => {}
                    Err(e) => tracing::warn!(error = %e, lane = Lane::Emails.name(), "recording an email outcome failed"),
                }
            }
        })
        .await;
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
        // after the other each row cost a round trip to that thread (1 ms
        // at the median, 8 ms at p99 for the 7 rows of a batch of 4
        // invites at 1,000 commands/s, the last reply leaving last).
        // Polled together, they queue their frames in order on the first
        // poll and one wake-up writes them all.
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

    /// Reads an email row and renders and builds its message. A row that
    /// cannot become a message is recorded failed here (`None`).
    async fn prepare_email(&self, row: ClaimedRow) -> Result<Option<ReadyEmail>, StoreError> {
        let job = match row.payload.read::<EmailJob>() {
            Ok(job) => job,
            Err(e) => {
                tracing::error!(outbox_id = row.id, error = %e, "email row does not parse; marking it failed");
                metrics::email("unknown", "failed");
                outbox::mark_failed(&self.pool, row.id, &format!("payload does not parse: {e}"))
                    .await?;
                return Ok(None);
            }
        };
        match self.build(&row, &job) {
            Ok(message) => Ok(Some(ReadyEmail { row, job, message })),
            Err(error) => {
                self.record(&row, &job, Delivery::Failed(error), Duration::ZERO)
                    .await?;
                Ok(None)
            }
        }
    }

    /// Sends one prepared email; a row that is sent is returned to be
    /// marked sent (with its neighbours), any other outcome is recorded here.
    async fn deliver_email(&self, email: ReadyEmail) -> Result<Option<i64>, StoreError> {
        let ReadyEmail { row, job, message } = email;
        // A send is bounded by half the lease, so it may start only while
        // half the lease is left: otherwise another relay (or this one's
        // claimer) could claim the row mid-send. A row queued that long has
        // its claim renewed first, unless another claim took it meanwhile.
        if row.claimed_at.elapsed() > self.settings.lease / 2 {
            let renewed = outbox::renew(
                &self.pool,
                row.id,
                self.owner,
                row.attempts,
                self.settings.lease,
            )
            .await?;
            tracing::debug!(outbox_id = row.id, renewed, "claim renewed before sending");
            if !renewed {
                return Ok(None);
            }
        }
        let started = std::time::Instant::now();
        let outcome = self.transmit(message).await;
        self.record(&row, &job, outcome, started.elapsed()).await
    }

    /// Records the `outcome` of one attempt at `row` (`elapsed` sending);
    /// returns the row's id if it was sent, for marking.
    async fn record(
        &self,
        row: &ClaimedRow,
        job: &EmailJob,
        outcome: Delivery,
        elapsed: Duration,
    ) -> Result<Option<i64>, StoreError> {
        let template = job.template.as_str();
        match outcome {
            Delivery::Sent => {
                tracing::debug!(outbox_id = row.id, template, user_id = ?job.user_id, "email sent");
                metrics::email(template, "sent");
                metrics::email_send(template, "sent", elapsed);
                Ok(Some(row.id))
            }
            Delivery::Retry(error) if row.attempts < self.settings.max_attempts => {
                let delay = retry_delay(self.settings.retry_base, row.attempts);
                tracing::warn!(outbox_id = row.id, template, user_id = ?job.user_id, attempts = row.attempts,
                    retry_in_ms = delay.as_millis() as u64, error = %error, "email not sent; will retry");
                metrics::email(template, "retry");
                metrics::email_send(template, "retry", elapsed);
                outbox::retry_later(&self.pool, row.id, delay, &error).await?;
                Ok(None)
            }
            Delivery::Retry(error) | Delivery::Failed(error) => {
                tracing::error!(outbox_id = row.id, template, user_id = ?job.user_id, attempts = row.attempts,
                    error = %error, "email failed for good");
                metrics::email(template, "failed");
                metrics::email_send(template, "failed", elapsed);
                outbox::mark_failed(&self.pool, row.id, &error).await?;
                Ok(None)
            }
        }
    }

    /// Renders `job` and builds its message; an error says why it never can be.
    fn build(&self, row: &ClaimedRow, job: &EmailJob) -> Result<Message, String> {
        let rendered = self.renderer.render(job).map_err(|e| e.to_string())?;
        let address: Address = email::deliverable(&job.to)
            .parse()
            .map_err(|e| format!("recipient address rejected: {e}"))?;
        let to = Mailbox::new(Some(job.to_name.clone()), address);
        let id = message::message_id(row.message_id, self.mailer.from());
        message::build(self.mailer.from(), to, id, rendered)
            .map_err(|e| format!("message cannot be built: {e}"))
    }

    /// Hands `message` to the mail transport.
    async fn transmit(&self, message: Message) -> Delivery {
        // A send never outlives half the lease, so no other relay can claim
        // the row while this one may still be sending it.
        let limit = self.settings.lease / 2;
        match tokio::time::timeout(limit, self.mailer.send(message)).await {
            Ok(Ok(())) => Delivery::Sent,
            Ok(Err(e)) if e.permanent => Delivery::Failed(e.detail),
            Ok(Err(e)) => Delivery::Retry(e.detail),
            Err(_) => Delivery::Retry(format!("sending took longer than {limit:?}")),
        }
    }
}

/// An email row with its job and built message, waiting to be sent.
struct ReadyEmail {
    row: ClaimedRow,
    job: EmailJob,
    message: Message,
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
            use base64::Engine;
            let p: Value = row.payload.read().map_err(unreadable)?;
            let text = |key: &str| {
                p.get(key)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned()
            };
            let body = base64::engine::general_purpose::STANDARD
                .decode(text("body_base64"))
                .unwrap_or_default();
            let mut original = lapin::BasicProperties::default()
                .with_content_type("application/cloudevents+json".into())
                .with_delivery_mode(2);
            if let Some(reply_to) = p["reply_to"].as_str() {
                original = original.with_reply_to(reply_to.into());
            }
            if let Some(correlation_id) = p["correlation_id"].as_str() {
                original = original.with_correlation_id(correlation_id.into());
            }
            publisher
                .dead_letter(&body, Some(&original), &text("reason"), &text("error"))
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

/// A deadline that never comes.
fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(86_400 * 365)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delay_doubles_and_is_capped() {
        let base = Duration::from_secs(2);
        assert_eq!(retry_delay(base, 1), Duration::from_secs(2));
        assert_eq!(retry_delay(base, 2), Duration::from_secs(4));
        assert_eq!(retry_delay(base, 5), Duration::from_secs(32));
        assert_eq!(retry_delay(base, 40), Duration::from_secs(3600));
    }
}
