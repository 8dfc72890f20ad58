//! What user-lifecycle's tests and benchmark run next to the worker and
//! the production build leaves out: an SMTP server on a local port.
//!
//! [`serve_smtp`] speaks SMTP with mailin's state machine and a handler of
//! the caller's; [`Sink`] is a ready-made server that accepts every message
//! and records when it arrived for whom.

mod smtp;

pub use smtp::{Sink, SmtpStyle, accept_forever, serve_smtp};
