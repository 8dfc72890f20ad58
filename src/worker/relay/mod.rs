//! The relay: delivers the outbox rows commands and the scheduler committed.
//!
//! Two lanes run side by side, so a slow SMTP server never delays a reply:
//! publications (events, replies, dead letters) go to the broker with
//! publisher confirms (`publications`, `confirms`), emails through the mail
//! transport (`emails`). Both take the rows a command hands over after its
//! commit (`crate::outbox::Handoff`) and claim what is left in the table;
//! a shared marker marks delivered rows sent (`marks`). Safe with several
//! workers: rows are claimed with `FOR UPDATE SKIP LOCKED` and a lease.

mod confirms;
mod emails;
mod marks;
mod publications;
mod retry;

pub use retry::retry_delay;

use sqlx::PgPool;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

use crate::broker::SessionWatch;
use crate::mail::{Mailer, Renderer};
use crate::outbox::{HandoffQueues, Wakeup};
use crate::store::StoreError;
use crate::store::outbox::{self, ClaimedRow, Lane};

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

/// The relay: what it delivers with, and how.
pub struct Relay {
    /// Whose claims are this relay's (the handoff claims rows for it).
    pub owner: uuid::Uuid,
    /// The outbox's database.
    pub pool: PgPool,
    /// Renders email templates.
    pub renderer: Arc<Renderer>,
    /// Sends emails.
    pub mailer: Arc<Mailer>,
    /// The current broker session, for publishing.
    pub sessions: SessionWatch,
    /// Woken when a commit leaves rows in the table.
    pub wakeup: Arc<Wakeup>,
    /// How it claims and retries.
    pub settings: RelaySettings,
}

impl Relay {
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
        let (marks, marking) = marks::start(self.pool.clone());
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
}
