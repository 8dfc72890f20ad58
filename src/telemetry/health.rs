//! Liveness and readiness state shared by the adapters and `/readyz`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::metrics;

/// What `/readyz` reports: ready only when PostgreSQL and RabbitMQ are connected.
#[derive(Debug, Default, Clone)]
pub struct Health {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    broker: AtomicBool,
    database: AtomicBool,
    stopping: AtomicBool,
}

impl Health {
    /// Records whether the broker connection is up (and exports `broker_connected`).
    pub fn set_broker(&self, up: bool) {
        self.inner.broker.store(up, Ordering::SeqCst);
        metrics::broker_connected(up);
    }

    /// Records whether the database answered its last check.
    pub fn set_database(&self, up: bool) {
        self.inner.database.store(up, Ordering::SeqCst);
    }

    /// Marks the worker as shutting down: no longer ready.
    pub fn set_stopping(&self) {
        self.inner.stopping.store(true, Ordering::SeqCst);
    }

    /// Is the broker connected?
    pub fn broker(&self) -> bool {
        self.inner.broker.load(Ordering::SeqCst)
    }

    /// Did the database answer?
    pub fn database(&self) -> bool {
        self.inner.database.load(Ordering::SeqCst)
    }

    /// Ready to take work.
    pub fn ready(&self) -> bool {
        self.broker() && self.database() && !self.inner.stopping.load(Ordering::SeqCst)
    }
}
