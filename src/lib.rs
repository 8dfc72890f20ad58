//! user-lifecycle: the worker that owns a B2B customer portal's user lifecycle.
//!
//! Commands arrive over RabbitMQ, are checked against the domain's rules and
//! applied in PostgreSQL in one transaction each; emails, events and replies
//! leave through a transactional outbox. See `README.md` and the contract.

pub mod app;
pub mod bench;
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
