//! Email: templates rendered with handlebars, sent with lettre.
//!
//! Templates are loaded and checked at start (a broken or missing `en`
//! template stops start-up); messages are multipart text + HTML with a
//! stable `Message-ID` per outbox row and `Auto-Submitted: auto-generated`.

#![cfg(feature = "worker")]

mod corked;
mod error;
pub mod message;
mod pipelining;
pub mod smtp_pool;
pub mod templates;
pub mod transport;

pub use error::MailError;
pub use templates::{Rendered, Renderer, TemplateError};
pub use transport::Mailer;
