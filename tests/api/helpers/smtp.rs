//! A real SMTP server inside the test: mailin's protocol state machine on a
//! tokio socket. Collects every message it accepts; can be told to answer
//! with an error to exercise the worker's retries. Offers PIPELINING, as
//! most servers do, unless told not to, and counts pipelined envelopes.

use dev_support::{SmtpStyle, accept_forever, serve_smtp};
use mail_parser::MessageParser;
use mailin::{Handler, Response};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Notify;

/// One message as the server received it.
#[derive(Debug, Clone)]
pub struct Mail {
    pub to: Vec<String>,
    pub raw: Vec<u8>,
}

impl Mail {
    fn parsed(&self) -> mail_parser::Message<'_> {
        MessageParser::default()
            .parse(&self.raw)
            .expect("a parsable MIME message")
    }

    pub fn subject(&self) -> String {
        self.parsed().subject().unwrap_or_default().to_owned()
    }

    pub fn text(&self) -> String {
        self.parsed()
            .body_text(0)
            .map(|c| c.into_owned())
            .unwrap_or_default()
    }

    pub fn html(&self) -> String {
        self.parsed()
            .body_html(0)
            .map(|c| c.into_owned())
            .unwrap_or_default()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.parsed().header_raw(name).map(|s| s.trim().to_owned())
    }

    pub fn message_id(&self) -> String {
        self.parsed().message_id().unwrap_or_default().to_owned()
    }

    /// Both a text and an HTML alternative.
    pub fn is_multipart_alternative(&self) -> bool {
        let m = self.parsed();
        m.header_raw("Content-Type")
            .is_some_and(|c| c.contains("multipart/alternative"))
            && m.text_body_count() > 0
            && m.html_body_count() > 0
    }

    /// The token of the link `…/PATH?token=T` in the text part.
    pub fn token(&self, path: &str) -> String {
        let text = self.text();
        let marker = format!("{path}?token=");
        let start = text
            .find(&marker)
            .unwrap_or_else(|| panic!("no {marker} link in:\n{text}"))
            + marker.len();
        text[start..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .collect()
    }
}

/// How the server answers the end of DATA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// 250: accepted.
    Accept,
    /// 451: try again later.
    Transient,
    /// 550: never.
    Permanent,
    /// The server is down: connections are closed at once.
    Down,
    /// The server greets only after this long (slower than `MAIL_TIMEOUT`).
    Slow(Duration),
    /// Accepts each message, but only this long after its end (on
    /// connections opened from then on).
    SlowAccept(Duration),
    /// 550 to every recipient (`RCPT`): the mailbox does not exist.
    RefuseRecipient,
}

#[derive(Default)]
struct State {
    mails: Vec<Mail>,
    answer: Option<Answer>,
    /// PIPELINING is not offered (to connections opened from then on).
    no_pipelining: bool,
    /// A second EHLO on a connection is refused (from then on).
    one_ehlo: bool,
}

/// The running server.
#[derive(Clone)]
pub struct SmtpServer {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    arrived: Arc<Notify>,
    pipelined: Arc<AtomicUsize>,
}

struct Session {
    state: Arc<Mutex<State>>,
    arrived: Arc<Notify>,
    to: Vec<String>,
    data: Vec<u8>,
}

impl Handler for Session {
    fn rcpt(&mut self, _to: &str) -> Response {
        match self.state.lock().unwrap().answer {
            Some(Answer::RefuseRecipient) => Response::custom(550, "no such mailbox".into()),
            _ => mailin::response::OK,
        }
    }

    fn data_start(&mut self, _domain: &str, _from: &str, _is8bit: bool, to: &[String]) -> Response {
        self.to = to.to_vec();
        self.data.clear();
        mailin::response::OK
    }

    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.data.extend_from_slice(buf);
        Ok(())
    }

    fn data_end(&mut self) -> Response {
        let mut state = self.state.lock().unwrap();
        match state.answer.unwrap_or(Answer::Accept) {
            Answer::Accept | Answer::Slow(_) | Answer::SlowAccept(_) | Answer::RefuseRecipient => {
                state.mails.push(Mail {
                    to: std::mem::take(&mut self.to),
                    raw: std::mem::take(&mut self.data),
                });
                drop(state);
                self.arrived.notify_waiters();
                mailin::response::OK
            }
            Answer::Transient => Response::custom(451, "try again later".into()),
            Answer::Permanent => Response::custom(550, "mailbox unavailable".into()),
            Answer::Down => Response::custom(421, "shutting down".into()),
        }
    }
}

impl SmtpServer {
    pub async fn start() -> SmtpServer {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the test SMTP server");
        let server = SmtpServer {
            addr: listener.local_addr().unwrap(),
            state: Arc::default(),
            arrived: Arc::default(),
            pipelined: Arc::default(),
        };
        let s = server.clone();
        accept_forever(listener, "the test SMTP server", move |stream, ip| {
            let s = s.clone();
            async move { s.serve(stream, ip).await }
        });
        server
    }

    async fn serve(&self, stream: tokio::net::TcpStream, ip: IpAddr) {
        let (answer, no_pipelining, one_ehlo) = {
            let state = self.state.lock().unwrap();
            (state.answer, state.no_pipelining, state.one_ehlo)
        };
        let mut style = SmtpStyle {
            pipelining: !no_pipelining,
            one_ehlo,
            pipelined: self.pipelined.clone(),
            ..SmtpStyle::default()
        };
        match answer {
            Some(Answer::Down) => return,
            Some(Answer::Slow(delay)) => tokio::time::sleep(delay).await,
            Some(Answer::SlowAccept(delay)) => style.accept_delay = delay,
            _ => {}
        }
        let handler = Session {
            state: self.state.clone(),
            arrived: self.arrived.clone(),
            to: vec![],
            data: vec![],
        };
        serve_smtp(stream, ip, "test-smtp", handler, &style).await;
    }

    /// The URL for `MAIL_URL`.
    pub fn url(&self) -> String {
        format!("smtp://{}", self.addr)
    }

    /// Makes the server answer the end of every message with `answer`.
    pub fn answer_with(&self, answer: Answer) {
        self.state.lock().unwrap().answer = Some(answer);
    }

    /// Stops offering PIPELINING to connections opened from now on.
    pub fn stop_offering_pipelining(&self) {
        self.state.lock().unwrap().no_pipelining = true;
    }

    /// Refuses a second EHLO on connections opened from now on.
    pub fn refuse_second_ehlo(&self) {
        self.state.lock().unwrap().one_ehlo = true;
    }

    /// Transactions whose envelope arrived pipelined (see `SmtpStyle`).
    pub fn pipelined(&self) -> usize {
        self.pipelined.load(Ordering::Relaxed)
    }

    /// Messages received in total.
    pub fn count(&self) -> usize {
        self.state.lock().unwrap().mails.len()
    }

    /// Everything received so far.
    pub fn mails(&self) -> Vec<Mail> {
        self.state.lock().unwrap().mails.clone()
    }

    /// Waits until `count` messages to `to` arrived; returns them.
    pub async fn wait_for(&self, to: &str, count: usize, timeout: Duration) -> Vec<Mail> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let arrived = self.arrived.notified();
            let matching: Vec<Mail> = self
                .mails()
                .into_iter()
                .filter(|m| m.to.iter().any(|t| t.eq_ignore_ascii_case(to)))
                .collect();
            if matching.len() >= count {
                return matching;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                panic!(
                    "expected {count} email(s) to {to} within {timeout:?}, got {}",
                    matching.len()
                );
            }
        }
    }

    /// Waits for the first message to `to`.
    pub async fn mail_to(&self, to: &str) -> Mail {
        self.wait_for(to, 1, Duration::from_secs(15))
            .await
            .remove(0)
    }

    /// Messages per recipient, for recipients whose address ends with `suffix`.
    pub fn per_recipient(&self, suffix: &str) -> std::collections::HashMap<String, usize> {
        let mut per = std::collections::HashMap::new();
        for mail in self.mails() {
            for to in mail.to.iter().filter(|t| t.ends_with(suffix)) {
                *per.entry(to.clone()).or_default() += 1;
            }
        }
        per
    }

    /// How many messages went to `to`.
    pub fn count_to(&self, to: &str) -> usize {
        self.mails()
            .iter()
            .filter(|m| m.to.iter().any(|t| t.eq_ignore_ascii_case(to)))
            .count()
    }
}
