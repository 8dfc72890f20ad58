//! Builds the MIME message of an email: headers, text and HTML alternatives.

use lettre::Message;
use lettre::address::Envelope;
use lettre::message::header::{Header, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use uuid::Uuid;

use super::templates::Rendered;

/// `Auto-Submitted: auto-generated` (RFC 3834): no auto-replies, please.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AutoSubmitted;

impl Header for AutoSubmitted {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("Auto-Submitted")
    }

    fn parse(_: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(AutoSubmitted)
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), "auto-generated".to_owned())
    }
}

/// The `Message-ID` of the outbox row `id`: the same on every attempt, so a
/// retried send is recognisable as the same message.
pub fn message_id(id: Uuid, from: &Mailbox) -> String {
    format!("<{id}@{}>", from.email.domain())
}

/// Assembles the message.
pub fn build(
    from: &Mailbox,
    to: Mailbox,
    message_id: String,
    rendered: Rendered,
) -> Result<Message, lettre::error::Error> {
    // Given, the envelope is not parsed back out of the From and To
    // headers lettre has just written.
    let envelope = Envelope::new(Some(from.email.clone()), vec![to.email.clone()])?;
    Message::builder()
        .envelope(envelope)
        .from(from.clone())
        .to(to)
        .subject(rendered.subject)
        .message_id(Some(message_id))
        .header(AutoSubmitted)
        .multipart(MultiPart::alternative_plain_html(
            crlf_line_endings(&rendered.text),
            crlf_line_endings(&rendered.html),
        ))
}

/// `text` with every line ending in CRLF, as a message body must. lettre
/// would add each missing `\r` by moving the rest of the body along, a
/// copy of the tail per line of a rendered template.
fn crlf_line_endings(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 16);
    for line in text.split_inclusive('\n') {
        match line.strip_suffix('\n') {
            Some(content) if !content.ends_with('\r') => {
                out.push_str(content);
                out.push_str("\r\n");
            }
            _ => out.push_str(line),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_ends_in_crlf_and_nothing_else_changes() {
        assert_eq!(crlf_line_endings(""), "");
        assert_eq!(crlf_line_endings("one line"), "one line");
        assert_eq!(crlf_line_endings("\n"), "\r\n");
        assert_eq!(crlf_line_endings("a\nb\n"), "a\r\nb\r\n");
        assert_eq!(crlf_line_endings("a\r\nb\nc"), "a\r\nb\r\nc");
        assert_eq!(
            crlf_line_endings("Grüße\n\nZoë\r\n"),
            "Grüße\r\n\r\nZoë\r\n"
        );
        assert_eq!(
            crlf_line_endings("a\rb\n"),
            "a\rb\r\n",
            "a lone CR is left alone"
        );
    }

    #[test]
    fn the_envelope_is_the_sender_and_the_recipient() {
        let from: Mailbox = "Portal <no-reply@portal.example>".parse().unwrap();
        let to: Mailbox = "Zoë Ünal <zoe@acme.example>".parse().unwrap();
        let rendered = Rendered {
            subject: "Welcome".into(),
            text: "Hello Zoë,\n\nwelcome.\n".into(),
            html: "<p>Hello Zoë,</p>\n<p>welcome.</p>\n".into(),
        };
        let message = build(&from, to, "<id@portal.example>".into(), rendered).unwrap();
        let envelope = message.envelope();
        assert_eq!(
            envelope.from().map(ToString::to_string).as_deref(),
            Some("no-reply@portal.example")
        );
        let recipients: Vec<String> = envelope.to().iter().map(ToString::to_string).collect();
        assert_eq!(recipients, ["zoe@acme.example"]);
        let formatted = String::from_utf8(message.formatted()).unwrap();
        assert!(
            !formatted.replace("\r\n", "").contains('\n'),
            "a bare LF in the message: {formatted}"
        );
    }
}
