//! What a commit hands to the relay: its claimed outbox rows and a wake-up.
//!
//! Shared by everything that writes outbox rows (the handler, the
//! scheduler) and the relay that delivers them (`crate::worker::relay`),
//! so neither depends on the other.

#![cfg(feature = "worker")]

pub mod handoff;

pub use handoff::{Handoff, HandoffQueues};

use tokio::sync::Notify;

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
