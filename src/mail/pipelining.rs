//! SMTP PIPELINING (RFC 2920) for the pool's plaintext connections.
//!
//! lettre sends `MAIL`, each `RCPT` and `DATA` one at a time, waiting for
//! each reply: four round trips per message, each a write and a wake-up on
//! both sides. A server that offers PIPELINING takes the envelope and
//! `DATA` in one go; the client then reads their replies in order and sends
//! the body only after `DATA`'s `354`. So a message costs two round trips,
//! whatever the distance to the server. lettre still formats every command
//! and parses every reply; this module changes when they are written,
//! through the stream's [`Pipe`]. The body goes through the pipe too,
//! dot-stuffed here: lettre's own writer stuffs it a byte at a time into a
//! buffer of its own, a visible share of the worker's CPU under load (see
//! docs/decisions/0007-own-smtp-pool-with-pipelining.md).

use lettre::address::Envelope;
use lettre::transport::smtp::client::AsyncSmtpConnection;
use lettre::transport::smtp::commands::{Data, Mail, Rcpt};
use lettre::transport::smtp::extension::{Extension, MailBodyParameter, MailParameter};
use lettre::transport::smtp::response::Response;

use super::corked::Pipe;

/// Whether a server's `EHLO` answer offers PIPELINING.
pub fn offered(ehlo: &Response) -> bool {
    ehlo.message().any(|line| {
        line.split_whitespace()
            .next()
            .is_some_and(|keyword| keyword.eq_ignore_ascii_case("PIPELINING"))
    })
}

/// The `MAIL` parameters the message needs, or `None` when the server lacks
/// an extension it needs (lettre's own dialogue then refuses it, saying why).
fn mail_parameters(
    conn: &AsyncSmtpConnection,
    envelope: &Envelope,
    message: &[u8],
) -> Option<Vec<MailParameter>> {
    let info = conn.server_info();
    let mut parameters = Vec::new();
    let addresses = envelope.from().into_iter().chain(envelope.to());
    if addresses.map(AsRef::<str>::as_ref).any(|a| !a.is_ascii()) {
        if !info.supports_feature(Extension::SmtpUtfEight) {
            return None;
        }
        parameters.push(MailParameter::SmtpUtfEight);
    }
    if !message.is_ascii() {
        if !info.supports_feature(Extension::EightBitMime) {
            return None;
        }
        parameters.push(MailParameter::Body(MailBodyParameter::EightBitMime));
    }
    Some(parameters)
}

/// The envelope and `DATA`, as the commands lettre would send one by one.
fn envelope_commands(envelope: &Envelope, parameters: Vec<MailParameter>) -> String {
    let mut commands = Mail::new(envelope.from().cloned(), parameters).to_string();
    for to in envelope.to() {
        commands.push_str(&Rcpt::new(to.clone(), vec![]).to_string());
    }
    commands.push_str(&Data.to_string());
    commands
}

/// Sends `message` to `envelope` on `conn`, whose stream writes `pipe`
/// ahead, to a server that offered PIPELINING. The first refusal ends the
/// dialogue with its error; the connection must not be reused then (replies
/// to the commands after it are still on their way).
pub async fn send(
    conn: &mut AsyncSmtpConnection,
    pipe: &Pipe,
    envelope: &Envelope,
    message: &[u8],
) -> Result<Response, lettre::transport::smtp::Error> {
    let Some(parameters) = mail_parameters(conn, envelope, message) else {
        return conn.send(envelope, message).await;
    };
    pipe.push(envelope_commands(envelope, parameters).as_bytes());
    // MAIL, each RCPT, then DATA's 354 (a positive reply, or an error).
    for _ in 0..envelope.to().len() + 2 {
        conn.read_response().await?;
    }
    pipe.push_with(|data| {
        dot_stuffed(message, data);
        data.extend_from_slice(b"\r\n.\r\n");
    });
    conn.read_response().await
}

/// Appends `message` to `data` as `DATA` carries it (RFC 5321, 4.5.2): a
/// line that begins with `.` gets a second one, so that no line of it
/// reads as the `.` that ends the message. Lines end with CRLF, as lettre
/// formats them and as its own writer reads them.
fn dot_stuffed(message: &[u8], data: &mut Vec<u8>) {
    data.reserve(message.len() + 8);
    if message.first() == Some(&b'.') {
        data.push(b'.');
    }
    let mut from = 0;
    for line_end in memchr::memmem::find_iter(message, b"\r\n.") {
        data.extend_from_slice(&message[from..line_end + 2]);
        data.push(b'.');
        from = line_end + 2;
    }
    data.extend_from_slice(&message[from..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use lettre::Address;
    use lettre::transport::smtp::response::{Category, Code, Detail, Severity};

    fn reply(lines: &[&str]) -> Response {
        Response::new(
            Code::new(
                Severity::PositiveCompletion,
                Category::MailSystem,
                Detail::Zero,
            ),
            lines.iter().map(|l| l.to_string()).collect(),
        )
    }

    fn stuffed(message: &str) -> String {
        let mut data = b"ahead;".to_vec();
        dot_stuffed(message.as_bytes(), &mut data);
        String::from_utf8(data).unwrap()
    }

    #[test]
    fn a_line_that_begins_with_a_dot_gets_a_second_one() {
        assert_eq!(
            stuffed(".a\r\nb\r\n.\r\n..c\r\n"),
            "ahead;..a\r\nb\r\n..\r\n...c\r\n"
        );
        assert_eq!(stuffed("a\r\n.\r\n.\r\n."), "ahead;a\r\n..\r\n..\r\n..");
    }

    #[test]
    fn dots_inside_a_line_or_after_a_bare_line_feed_stay_single() {
        assert_eq!(stuffed("a.b\r\nc..\r\n"), "ahead;a.b\r\nc..\r\n");
        assert_eq!(stuffed("a\n.b\r.c"), "ahead;a\n.b\r.c");
        assert_eq!(stuffed(""), "ahead;");
    }

    #[test]
    fn pipelining_is_offered_only_when_the_ehlo_answer_names_it() {
        assert!(offered(&reply(&["mx.example", "8BITMIME", "PIPELINING"])));
        assert!(offered(&reply(&["mx.example", "pipelining"])));
        assert!(!offered(&reply(&["mx.example", "8BITMIME", "CHUNKING"])));
        assert!(
            !offered(&reply(&["PIPELINING-LIKE", "SIZE 1000"])),
            "a keyword, not a prefix"
        );
    }

    #[test]
    fn the_envelope_goes_as_mail_each_rcpt_and_data_in_order() {
        let from: Address = "portal@example.com".parse().unwrap();
        let to: Vec<Address> = vec![
            "a@acme.example".parse().unwrap(),
            "b@acme.example".parse().unwrap(),
        ];
        let envelope = Envelope::new(Some(from), to).unwrap();
        assert_eq!(
            envelope_commands(&envelope, vec![]),
            "MAIL FROM:<portal@example.com>\r\n\
             RCPT TO:<a@acme.example>\r\n\
             RCPT TO:<b@acme.example>\r\n\
             DATA\r\n"
        );
        assert_eq!(
            envelope_commands(
                &envelope,
                vec![MailParameter::Body(MailBodyParameter::EightBitMime)]
            )
            .lines()
            .next(),
            Some("MAIL FROM:<portal@example.com> BODY=8BITMIME")
        );
    }
}
