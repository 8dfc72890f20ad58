//! Commands that are waiting together are applied together (one
//! transaction for many deliveries) without weakening a guarantee: each is
//! applied once, a refused, invalid or repeated one among them gets the
//! answer it would get alone, and the others are not held back by it.

use crate::helpers::{TestWorker, WAIT, eventually, invite_data, invite_envelopes};
use serde_json::Value;
use std::time::Duration;
use user_lifecycle::broker::client::CommandClient;

#[tokio::test]
async fn commands_waiting_together_are_applied_once_each_and_a_refusal_among_them_stands_alone() {
    let (mut w, manager) = TestWorker::with_active_manager(&[]).await;
    // Stop the worker so that everything below is waiting when it starts.
    assert!(w.terminate().await.success());

    let mut envelopes = invite_envelopes(&manager, "acme", "b", 30);
    // The same email as invitee 3: refused, in the middle of the batch.
    let clash = CommandClient::envelope(
        "invite_user",
        invite_data("acme", "b3@load.example"),
        Some(&manager),
    );
    // Invalid data: dead-lettered and answered `invalid`.
    let mut bad = invite_data("acme", "bad@load.example");
    bad["user"]["phone"] = Value::from("not a phone");
    let invalid = CommandClient::envelope("invite_user", bad, Some(&manager));
    // Invitee 5's command delivered twice.
    let repeated = envelopes[5].clone();
    envelopes.insert(10, clash.clone());
    envelopes.insert(15, invalid.clone());
    envelopes.insert(20, repeated.clone());
    let ids = w.publish_all(&envelopes).await;

    w.spawn();
    w.wait_ready().await;
    let mut replies = w.replies_for(&ids, Duration::from_secs(60)).await;
    // The repeated command is answered twice; wait for its second answer.
    let repeated_id = repeated["id"].as_str().unwrap().to_owned();
    if replies.get(&repeated_id).map_or(0, Vec::len) < 2 {
        let more = w
            .replies_for(std::slice::from_ref(&repeated_id), Duration::from_secs(10))
            .await;
        for (id, r) in more {
            replies.entry(id).or_default().extend(r);
        }
    }

    let clash_id = clash["id"].as_str().unwrap();
    let invalid_id = invalid["id"].as_str().unwrap();
    for id in &ids {
        let got = replies
            .get(id)
            .unwrap_or_else(|| panic!("no reply for {id}"));
        let first = &got[0];
        if id == clash_id {
            assert_eq!(first["status"], "rejected", "{first}");
            assert_eq!(first["code"], "email_taken", "{first}");
        } else if id == invalid_id {
            assert_eq!(first["status"], "invalid", "{first}");
            assert!(
                first["message"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("phone"),
                "names the field: {first}"
            );
        } else {
            assert_eq!(first["status"], "applied", "{first}");
        }
    }
    let repeated_replies = &replies[&repeated_id];
    assert_eq!(repeated_replies.len(), 2, "{repeated_replies:?}");
    assert_eq!(
        repeated_replies
            .iter()
            .filter(|r| r["duplicate"] == true)
            .count(),
        1,
        "one of the two deliveries is answered as a duplicate: {repeated_replies:?}"
    );
    assert_eq!(
        repeated_replies[0]["data"]["user_id"], repeated_replies[1]["data"]["user_id"],
        "the duplicate gets the original reply"
    );

    let invited = w
        .count("SELECT count(*) FROM users WHERE email LIKE '%@load.example'")
        .await;
    assert_eq!(
        invited, 30,
        "each distinct invite applied once, the refused one not"
    );
    let audited = w
        .count("SELECT count(*) FROM audit_log WHERE action = 'user.invited'")
        .await;
    assert_eq!(audited, 30);
    let tokens = w
        .count(
            "SELECT count(*) FROM tokens t JOIN users u ON u.id = t.user_id
             WHERE u.email LIKE '%@load.example'",
        )
        .await;
    assert_eq!(tokens, 30, "one activation token per invitee");
    // Rows written in one transaction share its start time: fewer distinct
    // times than invites means commands were applied together.
    let transactions = w
        .count("SELECT count(DISTINCT at) FROM audit_log WHERE action = 'user.invited'")
        .await;
    assert!(
        transactions < 30,
        "30 invites waiting together took {transactions} transactions"
    );

    eventually(
        "activation emails to 30 invitees",
        Duration::from_secs(30),
        || async { (w.smtp.per_recipient("@load.example").len() >= 30).then_some(()) },
    )
    .await;
    // Everything delivered: a second copy of any would be in by now.
    w.outbox_drained(WAIT).await;
    let emails = w.smtp.per_recipient("@load.example");
    assert_eq!(emails.len(), 30, "one invitee each: {emails:?}");
    assert!(
        emails.values().all(|n| *n == 1),
        "no email twice: {emails:?}"
    );
    assert!(
        !emails.contains_key("bad@load.example"),
        "the invalid command sent nothing"
    );
    assert_eq!(w.dead_letters_waiting().await, 1, "the invalid one, once");
    assert_all_acked_once(w).await;
}

#[tokio::test]
async fn batches_in_flight_together_each_ack_only_their_own_deliveries() {
    // Small batches, three transactions at once: a batch acked with one
    // frame must never settle a delivery of a batch still in flight.
    let settings = [("CONSUMER_PREFETCH", "4"), ("CONSUMER_BATCHES", "3")];
    let (mut w, manager) = TestWorker::with_active_manager(&settings).await;
    assert!(w.terminate().await.success());

    let envelopes = invite_envelopes(&manager, "acme", "k", 60);
    let ids = w.publish_all(&envelopes).await;
    w.spawn();
    w.wait_ready().await;
    let replies = w.replies_for(&ids, Duration::from_secs(60)).await;
    for id in &ids {
        let got = replies
            .get(id)
            .unwrap_or_else(|| panic!("no reply for {id}"));
        assert_eq!(got.len(), 1, "answered once: {got:?}");
        assert_eq!(got[0]["status"], "applied", "{}", got[0]);
    }
    let invited = w
        .count("SELECT count(*) FROM users WHERE email LIKE '%@load.example'")
        .await;
    assert_eq!(invited, 60);
    assert_all_acked_once(w).await;
}

/// Stops the worker and checks that it acked each delivery exactly once: an
/// unacked one would be back in the queue once its channel closed, and one
/// acked twice would have cost the consumer its channel.
async fn assert_all_acked_once(mut w: TestWorker) {
    assert!(w.terminate().await.success());
    assert_eq!(
        w.messages_waiting("commands").await,
        0,
        "a delivery was left unacked"
    );
    let log = w.log();
    for trouble in ["lost its channel", "ack failed", "ack not sent"] {
        assert!(!log.contains(trouble), "the worker logged {trouble:?}");
    }
}

#[tokio::test]
async fn a_command_waiting_behind_invites_sees_them_written_and_a_case_variant_is_refused() {
    let (mut w, manager) = TestWorker::with_active_manager(&[]).await;
    assert!(w.terminate().await.success());

    // Invites are written together, but a command of another kind behind
    // them must find them as if each had been applied alone, in order.
    let mut envelopes = invite_envelopes(&manager, "acme", "o", 6);
    let lookup = CommandClient::envelope(
        "check_email",
        serde_json::json!({"email": "o2@load.example"}),
        Some(&manager),
    );
    // The same address in other letters, two invites later: refused.
    let variant = CommandClient::envelope(
        "invite_user",
        invite_data("acme", "O4@LOAD.example"),
        Some(&manager),
    );
    envelopes.insert(3, lookup.clone());
    envelopes.push(variant.clone());
    let ids = w.publish_all(&envelopes).await;

    w.spawn();
    w.wait_ready().await;
    let replies = w.replies_for(&ids, Duration::from_secs(60)).await;
    let first = |envelope: &Value| replies[envelope["id"].as_str().unwrap()][0].clone();

    let looked_up = first(&lookup);
    assert_eq!(looked_up["status"], "applied", "{looked_up}");
    assert_eq!(
        looked_up["data"],
        serde_json::json!({"exists": true, "same_organization": true, "status": "invited"}),
        "the invite before it is visible to it"
    );
    let refused = first(&variant);
    assert_eq!(refused["status"], "rejected", "{refused}");
    assert_eq!(refused["code"], "email_taken", "{refused}");
    for envelope in envelopes
        .iter()
        .filter(|e| e["type"] == "invite_user" && e["id"] != variant["id"])
    {
        assert_eq!(first(envelope)["status"], "applied", "{}", first(envelope));
    }
    let invited = w
        .count("SELECT count(*) FROM users WHERE email LIKE '%@load.example'")
        .await;
    assert_eq!(invited, 6, "each distinct address invited once");
    let tokens = w
        .count(
            "SELECT count(*) FROM tokens t JOIN users u ON u.id = t.user_id
             WHERE u.email LIKE '%@load.example' AND t.purpose = 'activation'",
        )
        .await;
    assert_eq!(tokens, 6, "one activation token per invitee");
    let transactions = w
        .count("SELECT count(DISTINCT at) FROM audit_log WHERE action = 'user.invited'")
        .await;
    assert!(
        transactions < 6,
        "6 invites waiting together took {transactions} transactions"
    );
}

#[tokio::test]
async fn events_and_replies_of_commands_applied_together_leave_in_the_order_the_commands_were_applied()
 {
    let (mut w, manager) = TestWorker::with_active_manager(&[]).await;
    assert!(w.terminate().await.success());

    // 40 invites waiting together: 80 events and replies, more than the
    // relay publishes at once (30).
    let envelopes = invite_envelopes(&manager, "acme", "q", 40);
    let ids = w.publish_all(&envelopes).await;
    w.spawn();
    w.wait_ready().await;

    let replies = w
        .replies_in_arrival_order(&ids, Duration::from_secs(60))
        .await;
    let ours: Vec<&(String, Value)> = replies.iter().filter(|(id, _)| ids.contains(id)).collect();
    let answered: Vec<&str> = ours.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(
        answered, ids,
        "one reply each, in the order of their commands"
    );
    let invitees: Vec<String> = ours
        .iter()
        .map(|(_, reply)| {
            assert_eq!(reply["status"], "applied", "{reply}");
            reply["data"]["user_id"].as_str().unwrap().to_owned()
        })
        .collect();

    let ours_of = |events: &[Value]| -> Vec<String> {
        events
            .iter()
            .filter_map(|e| e["data"]["user_id"].as_str().map(str::to_owned))
            .filter(|u| invitees.contains(u))
            .collect()
    };
    let events = w
        .events_once(
            "user.invited",
            "a user.invited for each invitee",
            Duration::from_secs(30),
            |events| ours_of(events).len() >= invitees.len(),
        )
        .await;
    let announced = ours_of(&events);
    assert_eq!(
        announced, invitees,
        "user.invited events in the order of their commands"
    );
}
