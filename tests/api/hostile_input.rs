//! A corpus of hostile messages: each ends in the dead-letter queue with a
//! reason, is answered `invalid`, and the worker stays alive and consuming.

use crate::helpers::{TestWorker, bytes, invite_data};
use serde_json::{Value, json};
use user_lifecycle::broker::client::CommandClient;

struct Hostile {
    what: &'static str,
    body: Vec<u8>,
    reason: &'static str,
    /// What `x-error` and the reply's message must mention.
    mentions: &'static str,
}

fn envelope(kind: &str, data: Value) -> Value {
    CommandClient::envelope(kind, data, Some("0f9e2f9a-8d4c-4b0a-9c7e-1f2a3b4c5d6e"))
}

fn corpus() -> Vec<Hostile> {
    let case = |what, body, reason, mentions| Hostile {
        what,
        body,
        reason,
        mentions,
    };
    let nested_array = format!("{}{}", "[".repeat(30_000), "]".repeat(30_000)).into_bytes();
    let mut nested_data = String::from(
        "{\"specversion\":\"1.0\",\"id\":\"n\",\"source\":\"s\",\"type\":\"check_email\",\"data\":",
    );
    nested_data.push_str(&"{\"a\":".repeat(500));
    nested_data.push('1');
    nested_data.push_str(&"}".repeat(501));
    let mut invalid_utf8 =
        br#"{"specversion":"1.0","id":"u","source":"s","type":"check_email","data":{"email":""#
            .to_vec();
    invalid_utf8.extend_from_slice(b"\xff\xfe\xc3@example.com\"}}");
    let mut user_as_string = invite_data("acme", "x@example.com");
    user_as_string["user"] = json!("x");
    let mut permissions_as_string = invite_data("acme", "x@example.com");
    permissions_as_string["permissions"] = json!("cases.view");
    let mut header_injection = invite_data("acme", "x@example.com");
    header_injection["user"]["email"] = json!("a@example.com\r\nBcc: everyone@example.com");
    let mut nul_name = invite_data("acme", "x@example.com");
    nul_name["user"]["first_name"] = json!("Ann\u{0}");
    let mut huge_name = invite_data("acme", "x@example.com");
    huge_name["user"]["last_name"] = json!("L".repeat(5_000));
    vec![
        case("1 MiB of spaces", vec![b' '; 1 << 20], "too_large", "65536"),
        case("64 KiB + 1 of JSON", bytes(&envelope("check_email", json!({"email": "a@b.co", "pad": "x".repeat(65_536)}))), "too_large", "65536"),
        case("an empty body", Vec::new(), "not_json", "not JSON"),
        case("30,000 nested arrays", nested_array, "not_json", "not JSON"),
        case("500 nested objects in data", nested_data.into_bytes(), "not_json", "recursion"),
        case("invalid UTF-8 in a string", invalid_utf8, "not_json", "not JSON"),
        case("duplicate keys", br#"{"specversion":"1.0","id":"a","id":"b","source":"s","type":"check_email","data":{}}"#.to_vec(), "not_json", "duplicate key"),
        case("duplicate keys inside data", br#"{"specversion":"1.0","id":"d","source":"s","type":"check_email","data":{"email":"a@b.co","email":"c@d.co"}}"#.to_vec(), "not_json", "duplicate key"),
        case("a number too large", br#"{"specversion":"1.0","id":"big","source":"s","type":"check_email","data":{"n":1e400}}"#.to_vec(), "not_json", "not JSON"),
        case("JSON null", b"null".to_vec(), "not_envelope", "CloudEvents"),
        case("id as a number", br#"{"specversion":"1.0","id":5,"source":"s","type":"check_email","data":{}}"#.to_vec(), "not_envelope", "id"),
        case("type as a list", br#"{"specversion":"1.0","id":"t","source":"s","type":["invite_user"],"data":{}}"#.to_vec(), "not_envelope", "type"),
        case("actor as a number", br#"{"specversion":"1.0","id":"a7","source":"s","type":"check_email","actor":7,"data":{}}"#.to_vec(), "not_envelope", "actor"),
        case("a control character in the id", bytes(&json!({"specversion": "1.0", "id": "a\u{7}b", "source": "s", "type": "check_email", "data": {}})), "not_envelope", "id"),
        case("data missing", bytes(&json!({"specversion": "1.0", "id": "m", "source": "s", "type": "check_email"})), "invalid_data", "data"),
        case("user as a string", bytes(&envelope("invite_user", user_as_string)), "invalid_data", "user"),
        case("permissions as a string", bytes(&envelope("invite_user", permissions_as_string)), "invalid_data", "permissions"),
        case("a header injection in the email", bytes(&envelope("invite_user", header_injection)), "invalid_data", "user.email"),
        case("a NUL in a name", bytes(&envelope("invite_user", nul_name)), "invalid_data", "user.first_name"),
        case("a 5,000-character name", bytes(&envelope("invite_user", huge_name)), "invalid_data", "user.last_name"),
        case("email missing", bytes(&envelope("check_email", json!({}))), "invalid_data", "email"),
    ]
}

#[tokio::test]
async fn every_hostile_message_is_dead_lettered_with_a_reason_and_the_worker_keeps_going() {
    let mut w = TestWorker::start().await;
    let corpus = corpus();
    for h in &corpus {
        let reply = w.send_raw(&h.body).await;
        assert_eq!(reply["status"], "invalid", "{}: {reply}", h.what);
        assert_eq!(reply["code"], "invalid", "{}", h.what);
        let message = reply["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(h.mentions),
            "{}: the reply says {message:?}",
            h.what
        );
        let dead = w.dead_letter().await;
        assert_eq!(dead.reason, h.reason, "{}: {}", h.what, dead.error);
        assert!(
            dead.error.contains(h.mentions),
            "{}: x-error says {:?}",
            h.what,
            dead.error
        );
        assert_eq!(dead.body, h.body, "{}: the original body is kept", h.what);
    }
    let (status, _) = w.http_get("/healthz").await.expect("alive");
    assert_eq!(status, 200);
    let onboard = w.onboard_active_manager("acme", "boss@acme.example").await;
    assert!(
        !onboard.is_empty(),
        "valid commands still flow after {} hostile ones",
        corpus.len()
    );
}
