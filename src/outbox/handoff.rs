//! Outbox rows handed from a command's commit straight to this worker's relay.
//!
//! A command writes its outbox rows already claimed by the local relay
//! ([`Handoff::claim`]), and after the commit the consumer passes them over
//! in memory: the relay publishes the reply and events and sends the email
//! at once, without a claim query and its extra row version per row.
//! Nothing depends on the hand-over arriving: rows that find the relay's
//! queue full are handed back to the table at once ([`Handoff::deliver`]),
//! and rows of a worker that died are claimed by any relay when their lease
//! runs out, as rows claimed by a relay always were.

use sqlx::PgPool;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::outbox::Wakeup;
use crate::store::outbox::{self, Claim, ClaimedRow, OutboxKind};

/// The sending side, shared by everything that commits outbox rows.
#[derive(Debug)]
pub struct Handoff {
    claim: Claim,
    publications: mpsc::Sender<ClaimedRow>,
    emails: mpsc::Sender<ClaimedRow>,
    wakeup: Arc<Wakeup>,
    pool: PgPool,
}

/// The receiving side, owned by the relay.
#[derive(Debug)]
pub struct HandoffQueues {
    /// Events, replies and dead letters.
    pub publications: mpsc::Receiver<ClaimedRow>,
    /// Emails; the relay's own claimer feeds the same queue.
    pub emails: mpsc::Receiver<ClaimedRow>,
    /// A sender on `emails`, for that claimer.
    pub emails_sender: mpsc::Sender<ClaimedRow>,
}

impl Handoff {
    /// A hand-over for the relay `owner` whose claims last `lease`, queueing
    /// at most `capacity` rows per lane; `wakeup` tells the relay about rows
    /// left in the table.
    pub fn new(
        owner: Uuid,
        lease: Duration,
        capacity: usize,
        wakeup: Arc<Wakeup>,
        pool: PgPool,
    ) -> (Arc<Handoff>, HandoffQueues) {
        let capacity = capacity.max(1);
        let (publications, publications_rx) = mpsc::channel(capacity);
        let (emails, emails_rx) = mpsc::channel(capacity);
        let queues = HandoffQueues {
            publications: publications_rx,
            emails: emails_rx,
            emails_sender: emails.clone(),
        };
        let handoff = Handoff {
            claim: Claim { owner, lease },
            publications,
            emails,
            wakeup,
            pool,
        };
        (Arc::new(handoff), queues)
    }

    /// The claim commands write their outbox rows with.
    pub fn claim(&self) -> Claim {
        self.claim
    }

    /// Passes committed `rows` to the relay. Rows its queues have no room
    /// for are handed back to the table, due at once, and the relay is woken
    /// to claim them.
    pub async fn deliver(&self, rows: Vec<ClaimedRow>) {
        if rows.is_empty() {
            return;
        }
        let mut left = Vec::new();
        for row in rows {
            let queue = match row.kind {
                OutboxKind::Email => &self.emails,
                _ => &self.publications,
            };
            if let Err(e) = queue.try_send(row) {
                left.push(e.into_inner().id);
            }
        }
        if left.is_empty() {
            return;
        }
        if let Err(e) = outbox::unclaim(&self.pool, &left, self.claim.owner).await {
            // Still claimed: delivered when the lease runs out.
            tracing::warn!(error = %e, rows = left.len(), "could not hand outbox rows back to the table");
        }
        self.wakeup.wake();
    }
}
