//! The wire contract, proven against a real worker: one test binary, a
//! module per area, the harness in `helpers`. Run one area with
//! `cargo test --test api <module>::`, e.g. `cargo test --test api trust::`.

mod helpers;

mod batch_equivalence;
mod batching;
mod crashes;
mod delivery;
mod email_faults;
mod expiry;
mod hostile_input;
mod invitations;
mod mixed_batches;
mod observability;
mod onboarding;
mod one_statement;
mod operations;
mod ops_commands;
mod password_reset;
mod replicas;
mod scopes;
mod transient_errors;
mod trust;
mod users;
