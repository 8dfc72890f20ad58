//! An SMTP server on a tokio socket: [`serve_smtp`] for a handler of the
//! caller's, and [`Sink`], which accepts every message, records when it
//! arrived for whom, and keeps the body only of messages it was asked to.

use mailin::{Action, Handler, Response, SessionBuilder};
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

#[derive(Default)]
struct Received {
    arrivals: Vec<(String, Instant)>,
    bodies: HashMap<String, Vec<u8>>,
    keep: HashSet<String>,
}

/// The running sink.
#[derive(Clone)]
pub struct Sink {
    /// Where it listens.
    pub addr: SocketAddr,
    received: Arc<Mutex<Received>>,
}

struct Session {
    received: Arc<Mutex<Received>>,
    to: Vec<String>,
    data: Vec<u8>,
    keep: bool,
}

impl Handler for Session {
    fn data_start(&mut self, _: &str, _: &str, _: bool, to: &[String]) -> Response {
        self.to = to.iter().map(|t| t.to_ascii_lowercase()).collect();
        self.data.clear();
        // Bodies are kept only for the few addresses asked for.
        self.keep = self
            .received
            .lock()
            .is_ok_and(|r| !r.keep.is_empty() && self.to.iter().any(|t| r.keep.contains(t)));
        mailin::response::OK
    }

    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        if self.keep {
            self.data.extend_from_slice(buf);
        }
        Ok(())
    }

    fn data_end(&mut self) -> Response {
        let now = Instant::now();
        if let Ok(mut r) = self.received.lock() {
            for to in self.to.drain(..) {
                if r.keep.contains(&to) {
                    r.bodies.insert(to.clone(), std::mem::take(&mut self.data));
                }
                r.arrivals.push((to, now));
            }
        }
        mailin::response::OK
    }
}

impl Sink {
    /// Starts listening on a free local port.
    pub async fn start() -> std::io::Result<Sink> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let sink = Sink {
            addr: listener.local_addr()?,
            received: Arc::default(),
        };
        let s = sink.clone();
        accept_forever(listener, "the SMTP sink", move |stream, ip| {
            let s = s.clone();
            async move { s.serve(stream, ip).await }
        });
        Ok(sink)
    }

    async fn serve(&self, stream: tokio::net::TcpStream, ip: IpAddr) {
        let handler = Session {
            received: self.received.clone(),
            to: vec![],
            data: vec![],
            keep: false,
        };
        let style = SmtpStyle {
            pipelining: true,
            ..SmtpStyle::default()
        };
        serve_smtp(stream, ip, "bench-sink", handler, &style).await;
    }

    /// Keep the body of messages to `address` (to read a token from it).
    pub fn keep_body_for(&self, address: &str) {
        if let Ok(mut r) = self.received.lock() {
            r.keep.insert(address.to_ascii_lowercase());
        }
    }

    /// The body of the last message kept for `address`.
    pub fn body_for(&self, address: &str) -> Option<Vec<u8>> {
        self.received
            .lock()
            .ok()?
            .bodies
            .get(&address.to_ascii_lowercase())
            .cloned()
    }

    /// The arrivals since the last call (or [`Sink::clear`]): recipient
    /// and time. Taken, not copied: the run polls this while it measures.
    pub fn take_arrivals(&self) -> Vec<(String, Instant)> {
        self.received
            .lock()
            .map(|mut r| std::mem::take(&mut r.arrivals))
            .unwrap_or_default()
    }

    /// Forgets the arrivals recorded so far.
    pub fn clear(&self) {
        if let Ok(mut r) = self.received.lock() {
            r.arrivals.clear();
        }
    }
}

/// Accepts connections on `listener` for as long as the process runs and
/// serves each with `serve` on a task of its own. A failed `accept` (a
/// client that reset before it was taken, no file descriptor left for a
/// moment) is reported under `name` and listening goes on: a server that
/// stopped would refuse the worker's next connections. Shared by the
/// benchmark's sink and the tests' server.
pub fn accept_forever<F, Fut>(listener: TcpListener, name: &'static str, serve: F)
where
    F: Fn(tokio::net::TcpStream, IpAddr) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, peer)) => {
                    tokio::spawn(serve(stream, peer.ip()));
                }
                Err(e) => {
                    eprintln!("{name} could not accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    });
}

/// How [`serve_smtp`] behaves beyond mailin's defaults.
#[derive(Debug, Clone, Default)]
pub struct SmtpStyle {
    /// How long it takes to answer the end of each message (a slow server,
    /// for tests).
    pub accept_delay: Duration,
    /// Offer PIPELINING (RFC 2920), as most servers do.
    pub pipelining: bool,
    /// Refuse a second `EHLO` on a connection (503), as a few strict
    /// servers do.
    pub one_ehlo: bool,
    /// Counts transactions whose `MAIL` arrived with the next command
    /// already behind it: the client pipelined them.
    pub pipelined: Arc<AtomicUsize>,
}

/// The `EHLO` answer `reply` with PIPELINING added after its first line.
fn with_pipelining(reply: Vec<u8>) -> Vec<u8> {
    match reply.windows(2).position(|w| w == b"\r\n") {
        Some(end) if reply.starts_with(b"250-") => {
            let mut offered = reply[..end + 2].to_vec();
            offered.extend_from_slice(b"250-PIPELINING\r\n");
            offered.extend_from_slice(&reply[end + 2..]);
            offered
        }
        _ => reply,
    }
}

/// Whether `line` is the SMTP command `verb` (case-insensitive).
fn is_command(line: &[u8], verb: &[u8]) -> bool {
    line.len() >= verb.len() && line[..verb.len()].eq_ignore_ascii_case(verb)
}

/// Speaks SMTP on `stream` with mailin's state machine and `handler` until
/// the client leaves, as `style` says. Replies are written when the client
/// has sent nothing more yet, so the replies to pipelined commands go back
/// together, as real servers do. Shared by the benchmark's sink and the
/// tests' server.
pub async fn serve_smtp<H: Handler>(
    stream: tokio::net::TcpStream,
    ip: IpAddr,
    name: &str,
    handler: H,
    style: &SmtpStyle,
) {
    let _ = stream.set_nodelay(true);
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut session = SessionBuilder::new(name).build(ip, handler);
    let Ok(greeting) = session.greeting().buffer() else {
        return;
    };
    if write.write_all(&greeting).await.is_err() {
        return;
    }
    let mut line = Vec::new();
    let mut replies = Vec::new();
    // Between DATA's 354 and the final `.`: lines are the message's.
    let mut in_message = false;
    let mut ehlos = 0usize;
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if !in_message && is_command(&line, b"MAIL") && !reader.buffer().is_empty() {
            style.pipelined.fetch_add(1, Ordering::Relaxed);
        }
        let ehlo = !in_message && is_command(&line, b"EHLO");
        ehlos += usize::from(ehlo);
        if ehlo && style.one_ehlo && ehlos > 1 {
            replies.extend_from_slice(b"503 5.5.1 EHLO already given\r\n");
        } else {
            let response = session.process(&line);
            if in_message && line == b".\r\n" {
                in_message = false;
            }
            if !style.accept_delay.is_zero() && line == b".\r\n" {
                tokio::time::sleep(style.accept_delay).await;
            }
            match response.action {
                Action::NoReply => {}
                Action::Reply | Action::UpgradeTls => {
                    let Ok(mut reply) = response.buffer() else {
                        return;
                    };
                    if style.pipelining && ehlo {
                        reply = with_pipelining(reply);
                    }
                    in_message |= response.code == 354;
                    replies.extend_from_slice(&reply);
                    // mailin stays in its DATA state after refusing a message:
                    // hang up, as a server that refuses would on the client's QUIT.
                    if response.is_error && response.code >= 400 && line == b".\r\n" {
                        let _ = write.write_all(&replies).await;
                        return;
                    }
                }
                Action::Close => {
                    if let Ok(buf) = response.buffer() {
                        replies.extend_from_slice(&buf);
                    }
                    let _ = write.write_all(&replies).await;
                    return;
                }
            }
        }
        if reader.buffer().is_empty() && !replies.is_empty() {
            if write.write_all(&replies).await.is_err() {
                return;
            }
            replies.clear();
        }
    }
}
