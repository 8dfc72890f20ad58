//! The outbox relay: delivers what commands and the scheduler committed.
//!
//! Emails go through the mail transport; events, replies and dead letters
//! through the broker with publisher confirms. Safe with several workers:
//! rows are claimed with `FOR UPDATE SKIP LOCKED` and a lease.

pub mod relay;

pub use relay::{Relay, RelaySettings};
