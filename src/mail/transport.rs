//! Sends messages through pooled SMTP (`smtp_pool`) or writes them as `.eml` files.
//!
//! Errors are classified for the outbox (`error`): a permanent SMTP answer
//! (5xx) or an email that cannot be built is not retried; everything else is.

use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::TlsParameters;
use lettre::{AsyncFileTransport, AsyncTransport, Message, Tokio1Executor};
use std::time::Duration;

use super::error::MailError;
use super::smtp_pool::{SmtpPool, SmtpServer};
use crate::config::{MailUrl, SmtpTls};

enum Transport {
    Smtp(SmtpPool),
    File(AsyncFileTransport<Tokio1Executor>),
}

/// Sends emails.
pub struct Mailer {
    transport: Transport,
    from: Mailbox,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer")
            .field("from", &self.from.to_string())
            .finish()
    }
}

impl Mailer {
    /// A mailer for `url`, sending as `from`; each send may take `timeout`;
    /// at most `pool_size` SMTP connections. A file directory is created.
    pub fn new(
        url: &MailUrl,
        from: Mailbox,
        timeout: Duration,
        pool_size: u32,
    ) -> Result<Mailer, MailError> {
        let transport = match url {
            MailUrl::File(dir) => {
                std::fs::create_dir_all(dir).map_err(|e| {
                    MailError::permanent(format!(
                        "cannot create mail directory {}: {e}",
                        dir.display()
                    ))
                })?;
                Transport::File(AsyncFileTransport::<Tokio1Executor>::new(dir))
            }
            MailUrl::Smtp {
                host,
                port,
                tls,
                credentials,
            } => {
                let tls_parameters = match tls {
                    SmtpTls::None => None,
                    _ => Some(TlsParameters::new(host.clone()).map_err(|e| {
                        MailError::permanent(format!("TLS setup for {host} failed: {e}"))
                    })?),
                };
                let server = SmtpServer {
                    host: host.clone(),
                    port: *port,
                    tls: *tls,
                    tls_parameters,
                    credentials: credentials
                        .as_ref()
                        .map(|(u, p)| Credentials::new(u.clone(), p.clone())),
                };
                Transport::Smtp(SmtpPool::new(server, pool_size as usize, timeout))
            }
        };
        Ok(Mailer { transport, from })
    }

    /// The sender.
    pub fn from(&self) -> &Mailbox {
        &self.from
    }

    /// Sends one message.
    pub async fn send(&self, message: Message) -> Result<(), MailError> {
        match &self.transport {
            Transport::Smtp(pool) => pool.send(message.envelope(), &message.formatted()).await,
            Transport::File(t) => t.send(message).await.map(|_| ()).map_err(|e| MailError {
                permanent: false,
                detail: format!("file transport: {e}"),
            }),
        }
    }
}
