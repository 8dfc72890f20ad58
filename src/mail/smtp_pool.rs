//! A small pool of SMTP connections on lettre's SMTP client.
//!
//! lettre's own pool puts a connection back even when a send was cancelled
//! half-way (a timeout), so the next message on it fails with "503 bad
//! sequence"; and it leaves Nagle's algorithm on, which costs a delayed-ACK
//! round (40 ms on Linux) per message. This pool owns its connections: a
//! connection goes back only after a clean send, anything else closes it,
//! every send (connect included) is bounded by `MAIL_TIMEOUT`, and sockets
//! are opened with `TCP_NODELAY`, their writes held until the client reads
//! (`corked`), so a message and its final `.` go out as one segment. On a
//! plaintext connection to a server that offers PIPELINING, a message's
//! envelope and `DATA` go out together (`pipelining`): two round trips per
//! message instead of four.

use lettre::address::Envelope;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, TlsParameters};
use lettre::transport::smtp::commands::Ehlo;
use lettre::transport::smtp::extension::ClientId;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

use super::corked::{CorkedStream, Pipe};
use super::error::MailError;
use super::pipelining;
use crate::config::SmtpTls;

/// A connection idle longer than this is checked with `NOOP` before reuse.
const CHECK_IDLE_AFTER: Duration = Duration::from_secs(10);
/// A connection idle longer than this is closed rather than reused.
const MAX_IDLE: Duration = Duration::from_secs(60);

/// Where and how to connect.
pub struct SmtpServer {
    /// Host name (also the TLS server name).
    pub host: String,
    /// Port.
    pub port: u16,
    /// Connection security.
    pub tls: SmtpTls,
    /// TLS settings when `tls` is not `None`.
    pub tls_parameters: Option<TlsParameters>,
    /// Login, if the server wants one.
    pub credentials: Option<Credentials>,
}

/// Up to `size` open connections to one server.
pub struct SmtpPool {
    server: SmtpServer,
    hello: ClientId,
    timeout: Duration,
    slots: Semaphore,
    idle: Mutex<Vec<(Connection, Instant)>>,
}

/// An open connection, and its pipe when messages may be pipelined on it.
struct Connection {
    smtp: AsyncSmtpConnection,
    pipelined: Option<Pipe>,
}

/// What the server answered, as the outbox needs to know it.
fn classify(e: lettre::transport::smtp::Error) -> MailError {
    // 500–504 mean the dialogue went wrong (syntax, sequence): a fresh
    // connection may succeed. Other 5xx answers are about the message or
    // the mailbox and will not change.
    let code = e.status().map(|c| c.to_string()).unwrap_or_default();
    let dialogue = matches!(code.as_str(), "500" | "501" | "502" | "503" | "504");
    MailError {
        permanent: e.is_permanent() && !dialogue,
        detail: format!("SMTP: {e}"),
    }
}

impl SmtpPool {
    /// A pool of at most `size` connections to `server`; each send, connect
    /// included, may take at most `timeout`.
    pub fn new(server: SmtpServer, size: usize, timeout: Duration) -> SmtpPool {
        SmtpPool {
            server,
            hello: ClientId::default(),
            timeout,
            slots: Semaphore::new(size.max(1)),
            idle: Mutex::new(Vec::new()),
        }
    }

    async fn connect(&self) -> Result<Connection, MailError> {
        let s = &self.server;
        let mut pipe = None;
        let mut conn = if s.tls == SmtpTls::Wrapper {
            AsyncSmtpConnection::connect_tokio1(
                (s.host.as_str(), s.port),
                Some(self.timeout),
                &self.hello,
                s.tls_parameters.clone(),
                None,
            )
            .await
            .map_err(classify)?
        } else {
            let tcp = tokio::net::TcpStream::connect((s.host.as_str(), s.port))
                .await
                .map_err(|e| MailError {
                    permanent: false,
                    detail: format!("SMTP: cannot connect to {}:{}: {e}", s.host, s.port),
                })?;
            let _ = tcp.set_nodelay(true);
            let stream = CorkedStream::new(tcp);
            pipe = Some(stream.pipe());
            AsyncSmtpConnection::connect_with_transport(Box::new(stream), &self.hello)
                .await
                .map_err(classify)?
        };
        let wants_tls = matches!(s.tls, SmtpTls::StartTls | SmtpTls::Opportunistic);
        if wants_tls && !conn.is_encrypted() {
            match (&s.tls_parameters, conn.can_starttls()) {
                (Some(params), true) => conn
                    .starttls(params.clone(), &self.hello)
                    .await
                    .map_err(classify)?,
                (_, false) if s.tls == SmtpTls::StartTls => {
                    return Err(MailError {
                        permanent: false,
                        detail: format!(
                            "SMTP: {} does not offer STARTTLS, which MAIL_URL requires",
                            s.host
                        ),
                    });
                }
                _ => {}
            }
        }
        // The pipe writes below TLS: only a connection left in plaintext
        // may use it. lettre keeps no note of PIPELINING, so ask again
        // (RFC 5321 allows a second EHLO), once per connection, before AUTH;
        // a server that refuses the second EHLO gets no pipelining.
        let pipelined = match pipe {
            Some(pipe) if !conn.is_encrypted() => {
                match conn.command(Ehlo::new(self.hello.clone())).await {
                    Ok(ehlo) => pipelining::offered(&ehlo).then_some(pipe),
                    Err(e) if e.is_transient() || e.is_permanent() => None,
                    Err(e) => return Err(classify(e)),
                }
            }
            _ => None,
        };
        if let Some(credentials) = &s.credentials {
            conn.auth(&[Mechanism::Plain, Mechanism::Login], credentials)
                .await
                .map_err(classify)?;
        }
        Ok(Connection {
            smtp: conn,
            pipelined,
        })
    }

    /// A connection from the pool if a live one is idle, else a new one.
    async fn checkout(&self) -> Result<Connection, MailError> {
        loop {
            let parked = self.idle.lock().ok().and_then(|mut idle| idle.pop());
            let Some((mut conn, since)) = parked else {
                break;
            };
            if since.elapsed() > MAX_IDLE {
                conn.smtp.abort().await;
                continue;
            }
            if since.elapsed() > CHECK_IDLE_AFTER && !conn.smtp.test_connected().await {
                conn.smtp.abort().await;
                continue;
            }
            return Ok(conn);
        }
        self.connect().await
    }

    /// Sends `message` to `envelope`'s recipients within the timeout.
    pub async fn send(&self, envelope: &Envelope, message: &[u8]) -> Result<(), MailError> {
        let _slot = self.slots.acquire().await.map_err(|_| MailError {
            permanent: false,
            detail: "SMTP pool closed".into(),
        })?;
        let attempt = async {
            let mut conn = self.checkout().await?;
            match &conn.pipelined {
                Some(pipe) => pipelining::send(&mut conn.smtp, pipe, envelope, message).await,
                None => conn.smtp.send(envelope, message).await,
            }
            .map_err(classify)?;
            Ok::<_, MailError>(conn)
        };
        match tokio::time::timeout(self.timeout, attempt).await {
            Ok(Ok(conn)) => {
                if let Ok(mut idle) = self.idle.lock() {
                    idle.push((conn, Instant::now()));
                }
                Ok(())
            }
            // A failed or cut-off dialogue closes its connection (dropped here).
            Ok(Err(e)) => Err(e),
            Err(_) => Err(MailError {
                permanent: false,
                detail: format!("SMTP: no answer within MAIL_TIMEOUT ({:?})", self.timeout),
            }),
        }
    }
}
