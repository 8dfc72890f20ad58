//! Ops tools on the worker's own binary: inspect and replay dead letters,
//! preview an email, run the expiry sweep now, show a user's audit trail.
//!
//! Each tool is a library function that returns what it found or did; the
//! command line (`main.rs`) only prints. They talk to the same RabbitMQ
//! queues and PostgreSQL database as the worker, by the contract's names,
//! and never print tokens or passwords, nor message bodies unless asked to.

#![cfg(feature = "worker")]

pub mod dead_letters;
pub mod expire_now;
pub mod history;
pub mod list_dead_letters;
pub mod preview_email;
pub mod replay_dead_letters;

use thiserror::Error;

use crate::mail::TemplateError;
use crate::store::StoreError;

/// Why an ops tool failed.
#[derive(Debug, Error)]
pub enum OpsError {
    /// Talking to RabbitMQ failed while `doing` something.
    #[error("RabbitMQ: {doing}")]
    Broker {
        /// What the tool was doing.
        doing: &'static str,
        /// lapin's error.
        #[source]
        source: lapin::Error,
    },
    /// A queue of the contract does not exist under this prefix.
    #[error(
        "queue {0} does not exist: is AMQP_PREFIX right, and has the worker run at least once?"
    )]
    MissingQueue(String),
    /// Publishing a replayed message was not confirmed; the dead letter stays.
    #[error(
        "replaying dead letter #{position} to {exchange} failed ({detail}); it stays in the dead-letter queue"
    )]
    Replay {
        /// Its position in the dead-letter queue.
        position: usize,
        /// Where it was published.
        exchange: String,
        /// What the broker said.
        detail: String,
    },
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The templates could not be loaded or rendered.
    #[error(transparent)]
    Template(#[from] TemplateError),
    /// The settings given to a tool make no sense.
    #[error("{0}")]
    Usage(String),
    /// Another process holds the expiry sweep's advisory lock.
    #[error(
        "the expiry sweep is running elsewhere right now (another worker holds its advisory lock); \
         nothing was done, try again in a moment"
    )]
    ExpiryLocked,
}

impl OpsError {
    /// Wraps a lapin error as a failure while `doing` something (for `map_err`).
    pub(crate) fn broker(doing: &'static str) -> impl FnOnce(lapin::Error) -> OpsError {
        move |source| OpsError::Broker { doing, source }
    }
}
