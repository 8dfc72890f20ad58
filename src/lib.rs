//! user-lifecycle: the worker that owns a B2B customer portal's user lifecycle.
//!
//! Commands arrive over RabbitMQ, are checked against the domain's rules and
//! applied in PostgreSQL in one transaction each; emails, events and replies
//! leave through a transactional outbox. See `README.md` and `docs/contract.md`.
//!
//! The `worker` feature (on by default) brings the adapters and the binary;
//! without it the library is `domain` alone, pure and free of I/O crates.

// Every module but `domain` starts with `#![cfg(feature = "worker")]`.
pub mod app;
pub mod broker;
pub mod cli;
pub mod config;
pub mod domain;
pub mod handler;
pub mod mail;
pub mod ops;
pub mod outbox;
pub mod scheduler;
pub mod shutdown;
pub mod store;
pub mod telemetry;
pub mod worker;
