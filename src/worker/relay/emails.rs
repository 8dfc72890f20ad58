//! The email lane: renders, builds and sends emails, records each outcome.

use futures_util::StreamExt;
use lettre::message::Mailbox;
use lettre::{Address, Message};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc, watch};

use super::Relay;
use super::marks::Delivered;
use super::retry::retry_delay;
use crate::domain::email;
use crate::domain::notification::EmailJob;
use crate::mail::message;
use crate::store::StoreError;
use crate::store::outbox::{self, ClaimedRow, Lane};
use crate::telemetry::metrics;

/// The outcome of one attempt at sending an email.
enum Delivery {
    Sent,
    Retry(String),
    Failed(String),
}

impl Relay {
    /// The email lane: one continuous stream of rows rather than passes, so
    /// the SMTP pool never idles while the last emails of a pass finish and
    /// the next claim runs. Commands hand their emails to `queued`; a
    /// claimer adds what is left in the table, claiming whenever half of
    /// `batch` is free in the queue. On shutdown the claimer claims what is
    /// due for up to `flush`; rows queued but not sent by then are handed
    /// back by `release`.
    pub(super) async fn email_lane(
        self: Arc<Self>,
        queued: mpsc::Receiver<ClaimedRow>,
        queue: mpsc::Sender<ClaimedRow>,
        shutdown: watch::Receiver<bool>,
        flush: Duration,
        marks: mpsc::UnboundedSender<Delivered>,
    ) {
        let chunk = usize::try_from(self.settings.batch).unwrap_or(1).max(2) / 2;
        let give_up = AtomicBool::new(false);
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
        queue: mpsc::Sender<ClaimedRow>,
        chunk: usize,
        mut shutdown: watch::Receiver<bool>,
        flush: Duration,
        give_up: &AtomicBool,
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
            give_up.store(true, Ordering::Relaxed);
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
        queued: mpsc::Receiver<ClaimedRow>,
        done: watch::Receiver<bool>,
        give_up: &AtomicBool,
        marks: mpsc::UnboundedSender<Delivered>,
    ) {
        let concurrency = self.settings.concurrency.max(1);
        let permits = Arc::new(Semaphore::new(concurrency));
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
                let stopped = || give_up.load(Ordering::Relaxed);
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

/// A deadline that never comes.
fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(86_400 * 365)
}
