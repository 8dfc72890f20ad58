//! The trust model through the wire contract (issue 25): each module proves
//! one group of rules against a real worker, one test per rule, named after
//! the rule it proves.

mod abuse;
mod hygiene;
mod idempotency;
mod mailbox;
mod recovery;
mod rights;
