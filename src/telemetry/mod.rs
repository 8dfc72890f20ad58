//! Telemetry: logs (tracing), metrics (Prometheus) and the health endpoints.
//!
//! Ops watch the worker only through these, so every name here is part of
//! the contract (`user_lifecycle_*` metrics, `/metrics`, `/healthz`, `/readyz`).

#![cfg(feature = "worker")]

pub mod health;
pub mod http;
pub mod logs;
pub mod metrics;
