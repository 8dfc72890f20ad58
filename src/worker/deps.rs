//! What the consumer's batches need besides the broker session.

use sqlx::PgPool;
use std::time::Duration;

use crate::handler::Handler;
use crate::telemetry::health::Health;

/// What the consumer needs besides the session.
pub struct Deps {
    /// Applies commands.
    pub handler: Handler,
    /// Checked before consuming and while paused.
    pub pool: PgPool,
    /// Readiness: the database flag is kept current here.
    pub health: Health,
    /// Transactions applying commands at once.
    pub concurrency: usize,
    /// Most deliveries applied in one transaction (those already waiting).
    pub batch_size: usize,
    /// How long in-flight commands may take after shutdown.
    pub grace: Duration,
    /// Deliveries of a transiently failing command before it is dead-lettered.
    pub max_deliveries: u32,
}
