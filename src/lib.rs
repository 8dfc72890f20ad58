//! user-lifecycle: the worker that owns a B2B customer portal's user lifecycle.
//!
//! Commands arrive over RabbitMQ, are checked against the domain's rules and
//! applied in PostgreSQL in one transaction each; emails, events and replies
//! leave through a transactional outbox. See `README.md` and `docs/contract.md`.
//!
//! The `worker` feature (on by default) brings the adapters and the binary;
//! without it the library is `domain` alone, pure and free of I/O crates.

#[cfg(feature = "worker")]
pub mod app;
#[cfg(feature = "worker")]
pub mod broker;
#[cfg(feature = "worker")]
pub mod cli;
#[cfg(feature = "worker")]
pub mod config;
pub mod domain;
#[cfg(feature = "worker")]
pub mod handler;
#[cfg(feature = "worker")]
pub mod mail;
#[cfg(feature = "worker")]
pub mod ops;
#[cfg(feature = "worker")]
pub mod outbox;
#[cfg(feature = "worker")]
pub mod scheduler;
#[cfg(feature = "worker")]
pub mod shutdown;
#[cfg(feature = "worker")]
pub mod store;
#[cfg(feature = "worker")]
pub mod telemetry;
#[cfg(feature = "worker")]
pub mod worker;
