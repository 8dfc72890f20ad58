//! The domain: every rule of the contract, pure (no I/O, no async).
//!
//! Adapters (`store`, `broker`, `mail`, `scheduler`, `telemetry`) parse input
//! into these types at the edge and ask these modules for decisions; nothing
//! past the edge re-validates.

pub mod access;
pub mod authz;
pub mod command;
pub mod command_fingerprint;
pub mod country;
pub mod email;
pub mod envelope;
pub mod event;
pub mod expiry_notice;
pub mod field_error;
#[cfg(test)]
mod fixtures;
pub mod format_chars;
pub mod ids;
pub mod locale;
pub mod mail_cap;
pub mod name;
pub mod notification;
pub mod onboarding;
pub mod permission;
pub mod phone;
pub mod redact;
pub mod reply;
pub mod reply_to;
pub mod rights;
pub mod strict_json;
pub mod token;
pub mod trace;
#[cfg(test)]
mod trust_properties;
pub mod user;

pub use field_error::FieldError;
