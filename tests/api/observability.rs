//! What ops see: the invite funnel and latency metrics, process metrics,
//! JSON logs that carry the command's ids, and trace context passed on.

use crate::helpers::TestWorker;
use lapin::types::{AMQPValue, FieldTable, LongString};
use serde_json::json;
use user_lifecycle::broker::client::CommandClient;

#[tokio::test]
async fn the_invite_funnel_and_email_latency_are_measured() {
    let mut w = TestWorker::start().await;
    let manager = w.onboard_active_manager("acme", "boss@acme.example").await;
    let ann = w.active_user(&manager, "acme", "ann@acme.example").await;
    let bob = w.invite(&manager, "acme", "bob@acme.example").await;
    let bob = bob["data"]["user_id"].as_str().unwrap().to_owned();
    assert_eq!(
        w.send("remove_user", json!({"user_id": bob}), Some(&manager))
            .await["status"],
        "applied"
    );
    assert!(!ann.is_empty());

    w.metric_becomes("user_lifecycle_invites_total{outcome=\"invited\"}", 3.0)
        .await;
    w.metric_becomes("user_lifecycle_invites_total{outcome=\"activated\"}", 2.0)
        .await;
    w.metric_becomes("user_lifecycle_invites_total{outcome=\"removed\"}", 1.0)
        .await;
    w.metric_becomes("user_lifecycle_invite_time_to_activate_seconds_count", 2.0)
        .await;
    let sends = w.metric_reaches("user_lifecycle_email_send_duration_seconds_count{template=\"activation\",outcome=\"sent\"}",
        3.0,
    )
    .await;
    assert_eq!(sends, 3.0, "three activation emails timed");
    let (_, text) = w.http_get("/metrics").await.unwrap();
    for name in [
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_threads",
    ] {
        let value = text
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("{name} missing"));
        assert!(value > 0.0, "{name} = {value}");
    }
    assert!(
        text.contains("\nprocess_cpu_seconds_total "),
        "CPU time exported"
    );
    for described in [
        "# TYPE user_lifecycle_invites_total counter",
        "# TYPE user_lifecycle_email_send_duration_seconds histogram",
    ] {
        assert!(text.contains(described), "{described}");
    }
}

#[tokio::test]
async fn trace_context_is_passed_on_and_logs_carry_the_command_ids() {
    let mut w = TestWorker::start().await;
    let manager = w.onboard_active_manager("acme", "boss@acme.example").await;
    let trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let envelope = CommandClient::envelope(
        "invite_user",
        crate::helpers::invite_data("acme", "ivo@acme.example"),
        Some(&manager),
    );
    let id = envelope["id"].as_str().unwrap().to_owned();
    let mut headers = FieldTable::default();
    headers.insert(
        "traceparent".into(),
        AMQPValue::LongString(LongString::from(trace)),
    );
    w.client
        .publish_with_headers(
            "invite_user",
            &serde_json::to_vec(&envelope).unwrap(),
            &id,
            headers,
        )
        .await
        .unwrap();
    let (_, reply) = w.client.next_reply(crate::helpers::WAIT).await.unwrap();
    let user = reply["data"]["user_id"].as_str().unwrap().to_owned();
    let event = w.event("user.invited", Some(&user)).await;
    assert_eq!(
        event["traceparent"], trace,
        "the event carries the command's trace context"
    );

    // Every log line of the command's handling names it, its type, actor, user and trace.
    // The worker logs "command handled" after it has handed the reply and
    // event on, so the test may see them before that line is written.
    let of_command = |l: &serde_json::Value| l["span"]["command_id"] == id.as_str();
    let lines: Vec<serde_json::Value> = w
        .log_lines_once("\"command handled\" for the command", |l| {
            of_command(l) && l["message"] == "command handled"
        })
        .await
        .into_iter()
        .filter(of_command)
        .collect();
    assert!(!lines.is_empty(), "JSON log lines for the command");
    for line in &lines {
        let span = &line["span"];
        assert_eq!(span["type"], "invite_user");
        assert_eq!(span["actor"], manager.as_str());
        assert_eq!(span["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    }
    assert!(
        lines.iter().any(|l| l["span"]["user_id"] == user.as_str()),
        "the user id is logged: {lines:?}"
    );
    let token = w.smtp.mail_to("ivo@acme.example").await.token("/activate");
    assert!(!w.log().contains(&token), "no token in the logs");
}
