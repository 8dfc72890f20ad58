//! `dead-letters list`: what waits in `P.commands.dead`, and why, without
//! taking anything out of it.
//!
//! Each message is shown with its position, reason, error, command id,
//! type and size; its body only when asked (`--show-body`), and then only
//! the first 200 bytes, because bodies may hold personal data.

use serde_json::{Value, json};

use super::OpsError;
use super::dead_letters::{DeadLetterQueue, Held, printable};

/// What `list` found.
#[derive(Debug)]
pub struct Listing {
    /// The dead-letter queue's name.
    pub queue: String,
    /// Messages ready in it when the listing started.
    pub waiting: u32,
    /// The messages to show (at most the limit), head of the queue first.
    pub letters: Vec<Held>,
}

/// Reads the dead letters and puts every one of them back, in order; keeps
/// the first `limit` to show. (All are read even with a limit: returning
/// only the first few would move them behind the rest.)
pub async fn list(url: &str, prefix: &str, limit: Option<usize>) -> Result<Listing, OpsError> {
    let queue = DeadLetterQueue::open(url, prefix).await?;
    let mut letters = queue.take_all().await?;
    queue.put_back(&letters).await?;
    letters.truncate(limit.unwrap_or(usize::MAX));
    let listing = Listing {
        queue: queue.topology().dead_queue.clone(),
        waiting: queue.waiting(),
        letters,
    };
    queue.close().await?;
    Ok(listing)
}

fn or_dash(s: &Option<String>) -> String {
    s.as_deref()
        .map(printable)
        .unwrap_or_else(|| "-".to_owned())
}

/// One dead letter as text lines for a terminal.
pub fn text(held: &Held, show_body: bool) -> String {
    let l = &held.letter;
    let mut out = format!(
        "#{} reason={} id={} type={} size={}\n    error: {}",
        l.position,
        or_dash(&l.reason),
        or_dash(&l.id),
        or_dash(&l.kind),
        l.size,
        or_dash(&l.error),
    );
    if show_body {
        let (preview, left) = held.body_preview();
        out.push_str("\n    body: ");
        out.push_str(&printable(&preview));
        if left > 0 {
            out.push_str(&format!(" […{left} more bytes]"));
        }
    }
    out
}

/// One dead letter as a JSON object (`body` and `body_truncated` only with `show_body`).
pub fn json(held: &Held, show_body: bool) -> Value {
    let l = &held.letter;
    let mut v = json!({
        "position": l.position,
        "reason": l.reason,
        "error": l.error,
        "id": l.id,
        "type": l.kind,
        "size": l.size,
    });
    if show_body && let Value::Object(map) = &mut v {
        let (preview, left) = held.body_preview();
        map.insert("body".into(), Value::String(preview));
        map.insert("body_truncated".into(), Value::Bool(left > 0));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::dead_letters::DeadLetter;
    use lapin::message::Delivery;

    fn held(body: &[u8], id: Option<&str>) -> Held {
        Held {
            letter: DeadLetter {
                position: 2,
                reason: Some("invalid_data".into()),
                error: Some("user.phone: not a phone number".into()),
                id: id.map(str::to_owned),
                kind: Some("invite_user".into()),
                size: body.len(),
            },
            delivery: Delivery::mock(1, "".into(), "".into(), false, body.to_vec()),
        }
    }

    #[test]
    fn text_hides_the_body_unless_asked() {
        let h = held(b"{\"secret\": \"ann@example.com\"}", Some("c-9"));
        let plain = text(&h, false);
        assert_eq!(
            plain,
            "#2 reason=invalid_data id=c-9 type=invite_user size=29\n    error: user.phone: not a phone number"
        );
        assert!(!plain.contains("ann@example.com"));
        assert!(text(&h, true).ends_with("\n    body: {\"secret\": \"ann@example.com\"}"));
    }

    #[test]
    fn a_long_body_is_cut_and_says_how_much_is_left() {
        let h = held(&[b'x'; 260], None);
        let out = text(&h, true);
        assert!(out.contains(" id=- "), "{out}");
        assert!(
            out.ends_with(&format!("{} […60 more bytes]", "x".repeat(200))),
            "{out}"
        );
        let v = json(&h, true);
        assert_eq!(v["body"].as_str().map(str::len), Some(200));
        assert_eq!(v["body_truncated"], true);
    }

    #[test]
    fn json_has_the_fields_and_no_body_by_default() {
        let v = json(&held(b"{}", Some("c-9")), false);
        assert_eq!(
            v,
            serde_json::json!({"position": 2, "reason": "invalid_data",
                "error": "user.phone: not a phone number", "id": "c-9",
                "type": "invite_user", "size": 2})
        );
    }
}
