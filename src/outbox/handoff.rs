//! Outbox rows handed from a command's commit straight to this worker's relay.
//!
//! A command writes its outbox rows already claimed by the local relay
//! ([`Handoff::claim`]), and after the commit the consumer passes them over
//! in memory: the relay publishes the reply and events and sends the email
//! at once, without a claim query and its extra row version per row.
//! Nothing depends on the hand-over arriving: emails are claimed only while
//! the relay's email queue has room for them (otherwise they wait in the
//! table for its claimer, which reads them oldest first), rows that still
//! find a queue full are handed back to the table at once
//! ([`Handoff::deliver`]), and rows of a worker that died are claimed by any
//! relay when their lease runs out, as any claimed row is.

use sqlx::PgPool;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
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
    /// Emails were written unclaimed since the relay was last woken.
    emails_left: AtomicBool,
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
            claim: Claim {
                owner,
                lease,
                emails: true,
            },
            publications,
            emails,
            wakeup,
            pool,
            emails_left: AtomicBool::new(false),
        };
        (Arc::new(handoff), queues)
    }

    /// The claim a command writes its outbox rows with, `emails` of them
    /// emails. Emails are claimed only if the relay's email queue has room
    /// for all of them now: when it is full (SMTP slower than commands come
    /// in), claiming them would only hand them back, a second row version
    /// each, and the claimer could not take the oldest first.
    pub fn claim(&self, emails: usize) -> Claim {
        let room = emails == 0 || self.emails.capacity() >= emails;
        if !room {
            self.emails_left.store(true, Ordering::Relaxed);
        }
        Claim {
            emails: room,
            ..self.claim
        }
    }

    /// Passes committed `rows` to the relay. Rows its queues have no room
    /// for are handed back to the table, due at once, and the relay is woken
    /// to claim them.
    pub async fn deliver(&self, rows: Vec<ClaimedRow>) {
        // Emails written unclaimed wait for the claimer: tell it.
        if self.emails_left.swap(false, Ordering::Relaxed) {
            self.wakeup.wake();
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::payload::Payload;
    use serde_json::json;

    fn email_row(id: i64) -> ClaimedRow {
        ClaimedRow {
            id,
            kind: OutboxKind::Email,
            message_id: Uuid::new_v4(),
            payload: Payload::new(&json!({})).unwrap(),
            attempts: 1,
            created_at: chrono::Utc::now(),
            claimed_at: std::time::Instant::now(),
        }
    }

    #[tokio::test]
    async fn emails_are_claimed_only_while_the_email_queue_has_room_and_the_claimer_is_told() {
        // Never connects: rows that fit the queues need no database.
        let pool = sqlx::postgres::PgPoolOptions::new()
            .connect_lazy("postgres://nobody@127.0.0.1:1/none")
            .unwrap();
        let wakeup = Arc::new(Wakeup::default());
        let (handoff, mut queues) = Handoff::new(
            Uuid::new_v4(),
            Duration::from_secs(60),
            2,
            wakeup.clone(),
            pool,
        );
        let claim = handoff.claim(2);
        assert!(claim.emails && claim.takes(OutboxKind::Email));
        handoff.deliver(vec![email_row(1), email_row(2)]).await;

        // Full: emails are written unclaimed; replies and events still are.
        let claim = handoff.claim(1);
        assert!(!claim.emails && !claim.takes(OutboxKind::Email));
        assert!(claim.takes(OutboxKind::Reply) && claim.takes(OutboxKind::Event));
        assert!(handoff.claim(0).emails, "no email, nothing to hold back");

        // After the commit the claimer is woken to take them from the table.
        handoff.deliver(Vec::new()).await;
        tokio::time::timeout(Duration::from_secs(1), wakeup.emails.notified())
            .await
            .expect("the email claimer was woken");

        // Room again once the senders took a row.
        assert_eq!(queues.emails.recv().await.map(|r| r.id), Some(1));
        assert!(handoff.claim(1).emails);
        assert!(!handoff.claim(2).emails, "room for one, not two");
    }
}
