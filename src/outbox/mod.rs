//! The outbox relay: delivers what commands and the scheduler committed.
//!
//! Emails go through the mail transport; events, replies and dead letters
//! through the broker with publisher confirms. The two run as separate lanes,
//! so a slow SMTP server never delays a reply. Safe with several workers:
//! rows are claimed with `FOR UPDATE SKIP LOCKED` and a lease.

pub mod confirms;
pub mod handoff;
mod marks;
pub mod relay;

pub use handoff::{Handoff, HandoffQueues};
pub use relay::{Relay, RelaySettings};

use tokio::sync::{Notify, mpsc};

/// Wakes the relay's lanes after a commit that wrote outbox rows.
#[derive(Debug, Default)]
pub struct Wakeup {
    pub(crate) publications: Notify,
    pub(crate) emails: Notify,
}

impl Wakeup {
    /// Something was committed: deliver it now rather than at the next poll.
    pub fn wake(&self) {
        self.publications.notify_one();
        self.emails.notify_one();
    }
}

/// What arrives on `rx`, as groups: each group is everything that arrived
/// while the one before was being handled, so one database write covers it.
pub(crate) fn gathered<T>(
    rx: mpsc::UnboundedReceiver<T>,
) -> impl futures_util::Stream<Item = Vec<T>> {
    futures_util::stream::unfold(rx, |mut rx| async move {
        let first = rx.recv().await?;
        let mut all = vec![first];
        while let Ok(more) = rx.try_recv() {
            all.push(more);
        }
        Some((all, rx))
    })
}
