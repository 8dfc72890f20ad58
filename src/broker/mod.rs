//! RabbitMQ (lapin): topology, confirmed publishing, what to do with a
//! delivery, and the connection supervisor that reconnects with backoff.
//! The loop that consumes commands is `crate::worker`'s.

#![cfg(feature = "worker")]

pub mod acks;
pub mod client;
pub mod delivery;
pub mod publisher;
pub mod session;
pub mod topology;

pub use publisher::Publisher;
pub use session::{Session, SessionWatch};
pub use topology::Topology;
