//! The orchestration above the adapters: the command consumer and the relay.
//!
//! A delivery travels `consume` → `admit` → `apply` (the handler, in one
//! transaction) → ack, or `settle` for what the batch did not apply; the
//! rows its commit wrote reach the broker and the SMTP server through
//! `relay`. Adapters (`broker`, `store`, `mail`, `telemetry`) never import
//! this module; it imports them.

#![cfg(feature = "worker")]

mod admit;
mod apply;
pub mod consume;
mod deps;
mod outcome;
pub mod relay;
mod settle;

pub use deps::Deps;
pub use relay::{Relay, RelaySettings};
