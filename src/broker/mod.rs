//! RabbitMQ (lapin): topology, the command consumer, confirmed publishing,
//! and the connection supervisor that reconnects with backoff.

pub mod acks;
pub mod client;
pub mod consumer;
pub mod publisher;
pub mod session;
pub mod topology;

pub use publisher::Publisher;
pub use session::{Session, SessionWatch};
pub use topology::Topology;
