//! What of a message body is a secret, and the body with its secrets taken
//! out.
//!
//! A command that is refused keeps a copy for diagnosis (the dead-letter
//! queue, the outbox row that publishes it). An activation or reset token
//! in such a copy is usable by whoever reads it until it expires, so every
//! copy keeps the body's shape and everything else but says `"[redacted]"`
//! where a secret was: the value of any field named like a token or a
//! password, at any depth, and any token wherever it appears (under a
//! misspelt field, inside a link).
//!
//! A body that is not JSON cannot be walked; its bytes are kept, except the
//! string after anything that reads as a secret field's key (`"token":
//! "…"`) and any run of characters that is a token, so that a body broken
//! by one stray byte does not carry its token through.

use serde_json::Value;
use std::borrow::Cow;

use super::envelope::MAX_MESSAGE_BYTES;
use super::token::SecretToken;

/// What a secret is replaced by.
pub const REDACTED: &str = "[redacted]";

/// True for a field whose value is a secret: its name, in any case,
/// contains `token` or `password` (`token`, `password`, `new_password`,
/// `reset_token`, …).
pub fn is_secret_field(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    name.contains("token") || name.contains("password")
}

/// True for a string the worker would take as a token: whatever field it
/// came in, it is one.
fn is_token(s: &str) -> bool {
    SecretToken::parse(s).is_some()
}

/// Replaces, in place, the value of every secret field in `value`, at any
/// depth, and redacts every string and key as [`redact_body`] redacts
/// bytes that are not JSON (a token inside a link, a body quoted as a
/// string). Returns whether anything was replaced.
pub fn redact(value: &mut Value) -> bool {
    match value {
        Value::Object(map) => {
            let mut any = false;
            if map.keys().any(|k| redacted_text(k).is_some()) {
                let entries = std::mem::take(map);
                *map = entries
                    .into_iter()
                    .map(|(k, v)| (redacted_text(&k).unwrap_or(k), v))
                    .collect();
                any = true;
            }
            for (key, v) in map.iter_mut() {
                if is_secret_field(key) {
                    if v.as_str() != Some(REDACTED) {
                        *v = Value::String(REDACTED.to_owned());
                        any = true;
                    }
                } else {
                    any |= redact(v);
                }
            }
            any
        }
        Value::Array(items) => {
            let mut any = false;
            for v in items {
                any |= redact(v);
            }
            any
        }
        Value::String(s) => match redacted_text(s) {
            Some(r) => {
                *s = r;
                true
            }
            None => false,
        },
        _ => false,
    }
}

/// `s` redacted as bytes, if that changed anything.
fn redacted_text(s: &str) -> Option<String> {
    match redact_bytes(s.as_bytes()) {
        Cow::Borrowed(_) => None,
        Cow::Owned(b) => Some(String::from_utf8_lossy(&b).into_owned()),
    }
}

/// `body` with its secrets redacted: borrowed as it is when it holds none.
///
/// JSON (up to the largest accepted message) is walked and written back
/// only when something was redacted; anything else is redacted as bytes.
pub fn redact_body(body: &[u8]) -> Cow<'_, [u8]> {
    if body.len() <= MAX_MESSAGE_BYTES
        && let Ok(mut value) = serde_json::from_slice::<Value>(body)
    {
        if !redact(&mut value) {
            return body.into();
        }
        if let Ok(out) = serde_json::to_vec(&value) {
            return out.into();
        }
    }
    redact_bytes(body)
}

/// Longest key looked at as a possible secret field's name, in bytes:
/// names are short, and a bound keeps a body of many quotes linear.
const MAX_KEY_BYTES: usize = 64;

/// Bytes that are not JSON: the string after a secret field's quoted key,
/// and every run of token characters that is a token, become `[redacted]`.
/// Every quote is tried as the start of a key, so quotes that do not pair
/// up (the body is broken after all) hide no key.
fn redact_bytes(body: &[u8]) -> Cow<'_, [u8]> {
    let mut out = Vec::with_capacity(body.len());
    let mut changed = false;
    let mut i = 0;
    while i < body.len() {
        let b = body[i];
        if b == b'"'
            && let Some(key_end) = key_end(body, i + 1)
            && is_secret_field(&String::from_utf8_lossy(&body[i + 1..key_end]))
            && let Some(value) = value_after_colon(body, key_end + 1)
        {
            out.extend_from_slice(&body[i..value]);
            out.extend_from_slice(b"\"");
            out.extend_from_slice(REDACTED.as_bytes());
            out.extend_from_slice(b"\"");
            changed = true;
            i = string_end(body, value + 1).saturating_add(1);
            continue;
        }
        if is_token_byte(b) {
            let run_end = body[i..]
                .iter()
                .position(|c| !is_token_byte(*c))
                .map_or(body.len(), |n| i + n);
            let run = &body[i..run_end];
            if std::str::from_utf8(run).is_ok_and(is_token) {
                out.extend_from_slice(REDACTED.as_bytes());
                changed = true;
            } else {
                out.extend_from_slice(run);
            }
            i = run_end;
            continue;
        }
        out.push(b);
        i += 1;
    }
    if changed { out.into() } else { body.into() }
}

/// The closing quote of a key whose text starts at `from`, if it closes
/// within [`MAX_KEY_BYTES`].
fn key_end(body: &[u8], from: usize) -> Option<usize> {
    let window = &body[from.min(body.len())..(from + MAX_KEY_BYTES + 1).min(body.len())];
    let end = string_end(window, 0);
    (end < window.len()).then_some(from + end)
}

/// Where the string whose text starts at `from` ends: the index of its
/// closing quote, or the body's length when it is never closed.
fn string_end(body: &[u8], from: usize) -> usize {
    let mut i = from;
    while i < body.len() {
        match body[i] {
            b'\\' => i += 2,
            b'"' => return i,
            _ => i += 1,
        }
    }
    body.len()
}

/// After a key ending before `from`: the index of the opening quote of a
/// string value (`: "`), if that is what follows.
fn value_after_colon(body: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    let skip = |i: &mut usize| {
        while *i < body.len() && body[*i].is_ascii_whitespace() {
            *i += 1;
        }
    };
    skip(&mut i);
    if body.get(i) != Some(&b':') {
        return None;
    }
    i += 1;
    skip(&mut i);
    (body.get(i) == Some(&b'"')).then_some(i)
}

/// A character of a token's alphabet (base64url).
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn token() -> String {
        SecretToken::generate().unwrap().expose().to_owned()
    }

    fn text(body: &[u8]) -> String {
        String::from_utf8_lossy(&redact_body(body)).into_owned()
    }

    #[test]
    fn token_and_password_fields_are_redacted_and_the_rest_kept() {
        let t = token();
        let mut v = json!({"specversion": "1.0", "id": "c-1", "type": "activate_user",
            "data": {"token": t, "colour": "red", "user": {"new_password": "hunter2"}}});
        assert!(redact(&mut v));
        assert_eq!(
            v,
            json!({"specversion": "1.0", "id": "c-1", "type": "activate_user",
                "data": {"token": REDACTED, "colour": "red", "user": {"new_password": REDACTED}}})
        );
    }

    #[test]
    fn secret_fields_are_found_in_any_case_and_inside_lists() {
        let mut v = json!([{"Token": 1}, {"PASSWORD": {"a": "b"}}, {"reset_token": null}]);
        redact(&mut v);
        assert_eq!(
            v,
            json!([{"Token": REDACTED}, {"PASSWORD": REDACTED}, {"reset_token": REDACTED}])
        );
    }

    #[test]
    fn a_token_under_another_name_is_redacted() {
        let t = token();
        let mut v = json!({"data": {"tokn": t, "link": format!("https://x.example/a?t={t}"),
            "quoted": format!(r#"{{"password": "pw", "id": "c-1"}}"#), t.clone(): 1}});
        redact(&mut v);
        assert_eq!(
            v,
            json!({"data": {"tokn": REDACTED, "link": "https://x.example/a?t=[redacted]",
                "quoted": r#"{"password": "[redacted]", "id": "c-1"}"#, REDACTED: 1}})
        );
    }

    #[test]
    fn a_body_without_secrets_is_kept_byte_for_byte() {
        let body = br#"{ "id": "c-1",  "data": {"email": "ann@example.com"} }"#;
        assert!(matches!(redact_body(body), Cow::Borrowed(_)));
        assert_eq!(redact_body(b"not json at all").as_ref(), b"not json at all");
    }

    #[test]
    fn a_json_body_is_written_back_redacted() {
        let t = token();
        let body = serde_json::to_vec(&json!({"id": "c-1", "data": {"token": t, "x": 1}})).unwrap();
        let out: Value = serde_json::from_slice(&redact_body(&body)).unwrap();
        assert_eq!(
            out,
            json!({"id": "c-1", "data": {"token": REDACTED, "x": 1}})
        );
    }

    #[test]
    fn a_body_broken_by_a_stray_byte_loses_its_token() {
        let t = token();
        let body = format!(r#"{{"id": "c-1", "data": {{"token" : "{t}", "password":"pw\"x"}}"#);
        let mut bytes = body.into_bytes();
        bytes.push(0xff);
        let out = text(&bytes);
        assert!(!out.contains(&t), "{out}");
        assert!(!out.contains("pw"), "{out}");
        assert!(out.contains(r#""token" : "[redacted]""#), "{out}");
        assert!(out.contains(r#""id": "c-1""#), "{out}");
    }

    #[test]
    fn a_token_anywhere_in_bytes_is_redacted() {
        let t = token();
        let out =
            text(format!("see https://portal.example/activate?token={t}&x=1 \u{1}").as_bytes());
        assert!(!out.contains(&t), "{out}");
        assert!(out.contains("token=[redacted]&x=1"), "{out}");
    }

    #[test]
    fn an_unclosed_secret_string_is_redacted_to_the_end() {
        let out = text(br#"{"password": "hunter2"#);
        assert_eq!(out, r#"{"password": "[redacted]""#);
    }

    #[test]
    fn a_duplicate_token_key_leaves_neither_value() {
        let (a, b) = (token(), token());
        let out = text(format!(r#"{{"token": "{a}", "token": "{b}"}}"#).as_bytes());
        assert!(!out.contains(&a) && !out.contains(&b), "{out}");
    }

    proptest! {
        #[test]
        fn no_token_survives_redaction_in_any_body(
            before in proptest::collection::vec(any::<u8>(), 0..64),
            after in proptest::collection::vec(any::<u8>(), 0..64),
            key in prop_oneof![Just("token"), Just("tokn"), Just("password"), Just("x")],
            quoted in any::<bool>(),
        ) {
            let t = token();
            let mut body = before.clone();
            if quoted {
                body.extend_from_slice(format!(r#" {{"{key}": "{t}"}} "#).as_bytes());
            } else {
                body.extend_from_slice(format!(" {t} ").as_bytes());
            }
            body.extend_from_slice(&after);
            let out = redact_body(&body);
            let out = String::from_utf8_lossy(&out);
            prop_assert!(!out.contains(&t), "{}", out);
        }

        #[test]
        fn redaction_is_idempotent(v in proptest::collection::vec(any::<u8>(), 0..128)) {
            let once = redact_body(&v).into_owned();
            let twice = redact_body(&once);
            prop_assert_eq!(twice.as_ref(), once.as_slice());
        }
    }
}
