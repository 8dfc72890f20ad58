//! Outages of the shared PostgreSQL and RabbitMQ, apart from the contract:
//! these tests stop and restart the services every other test uses, so
//! they live in a binary of their own (`cargo test --test outages`). Cargo
//! runs test binaries one after another, so no other test sees the outage;
//! inside this binary they take turns (`restarts::EXCLUSIVE`).

#[path = "../api/helpers/mod.rs"]
mod helpers;

mod restarts;
