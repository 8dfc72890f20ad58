//! An idempotency key is bound to its command (issue 25, case 4): the same
//! id with the same type, actor and data is a redelivery, answered with the
//! stored reply; the same id with anything else is refused `id_reused`,
//! applies nothing and shows nothing of the command recorded under it. The
//! batch path answers exactly as the single path does.

use serde_json::{Value, json};
use std::time::Duration;
use user_lifecycle::broker::client::CommandClient;
use uuid::Uuid;

use crate::helpers::{TestWorker, invite_data};

const TRANSACTION_BATCHES: &str = "user_lifecycle_command_batches_total{written=\"transaction\"}";

/// `envelope` sent again under the id of `earlier`.
fn under_id_of(earlier: &Value, mut envelope: Value) -> Value {
    envelope["id"] = earlier["id"].clone();
    envelope
}

/// Asserts `reply` refuses a reused id and carries nothing of `stored`
/// (the reply recorded under that id): no data, none of its values.
fn assert_refused_id_reused(reply: &Value, stored: &Value) {
    assert_eq!(reply["status"], "rejected", "{reply}");
    assert_eq!(reply["code"], "id_reused", "{reply}");
    assert_eq!(reply["duplicate"], false, "{reply}");
    assert_eq!(reply["data"], json!({}), "no stored data: {reply}");
    let text = reply.to_string();
    for value in stored["data"]
        .as_object()
        .into_iter()
        .flat_map(|m| m.values())
    {
        if let Some(s) = value.as_str() {
            assert!(!text.contains(s), "the reply shows {s:?}: {reply}");
        }
    }
}

/// The number of `user.removed` records in `user`'s audit trail.
fn removals(w: &TestWorker, user: &str) -> usize {
    w.history(user)
        .iter()
        .filter(|r| r["action"] == "user.removed")
        .count()
}

/// A fresh `remove_user` of `user` by `manager` is applied: the user was
/// still there to remove.
async fn still_removable(w: &mut TestWorker, manager: &str, user: &str) {
    let removed = w
        .send("remove_user", json!({"user_id": user}), Some(manager))
        .await;
    assert_eq!(removed["status"], "applied", "{removed}");
    assert_eq!(removed["data"]["status"], "removed", "{removed}");
}

#[tokio::test]
async fn a_remove_user_under_the_id_of_an_earlier_check_email_is_refused_id_reused_and_removes_no_one()
 {
    let (mut w, manager) = TestWorker::with_active_manager(&[]).await;
    let user = w.active_user(&manager, "acme", "ulla@acme.example").await;

    let check = CommandClient::envelope(
        "check_email",
        json!({"email": "ulla@acme.example"}),
        Some(&manager),
    );
    let checked = w.send_envelope(&check).await;
    assert_eq!(checked["status"], "applied", "{checked}");
    assert_eq!(checked["data"]["exists"], true, "{checked}");

    let remove = under_id_of(
        &check,
        CommandClient::envelope("remove_user", json!({"user_id": user}), Some(&manager)),
    );
    let refused = w.send_envelope(&remove).await;
    assert_refused_id_reused(&refused, &checked);
    assert!(
        refused.get("data").and_then(|d| d.get("exists")).is_none(),
        "nothing of the check_email's answer: {refused}"
    );
    assert_eq!(removals(&w, &user), 0, "the remove_user applied nothing");

    still_removable(&mut w, &manager, &user).await;
    assert_eq!(removals(&w, &user), 1);
}

#[tokio::test]
async fn an_activate_user_id_reused_with_another_actor_or_data_is_refused_and_shows_no_user() {
    let (mut w, manager) = TestWorker::with_active_manager(&[]).await;
    let invited = w.invite(&manager, "acme", "ada@acme.example").await;
    assert_eq!(invited["status"], "applied", "{invited}");
    let token = w.smtp.mail_to("ada@acme.example").await.token("/activate");

    let activate = CommandClient::envelope("activate_user", json!({"token": token}), None);
    let activated = w.send_envelope(&activate).await;
    assert_eq!(activated["status"], "applied", "{activated}");
    assert_eq!(
        activated["data"]["email"], "ada@acme.example",
        "{activated}"
    );

    // The same data by an actor.
    let by_actor = under_id_of(
        &activate,
        CommandClient::envelope("activate_user", json!({"token": token}), Some(&manager)),
    );
    let refused = w.send_envelope(&by_actor).await;
    assert_refused_id_reused(&refused, &activated);

    // Other data, no actor, as the original.
    let other_token = under_id_of(
        &activate,
        CommandClient::envelope(
            "activate_user",
            json!({"token": "an-attacker-s-guess"}),
            None,
        ),
    );
    let refused = w.send_envelope(&other_token).await;
    assert_refused_id_reused(&refused, &activated);

    // Both answered without replying anything new or applying anything:
    // the user activated once.
    let activations = w
        .history(activated["data"]["user_id"].as_str().unwrap())
        .iter()
        .filter(|r| r["action"] == "user.activated")
        .count();
    assert_eq!(activations, 1);
}

#[tokio::test]
async fn the_same_command_under_its_id_again_is_a_duplicate_with_the_stored_reply_whatever_its_key_order()
 {
    let (mut w, manager) = TestWorker::with_active_manager(&[]).await;
    let invited = w.invite(&manager, "acme", "dora@acme.example").await;
    let user = invited["data"]["user_id"].as_str().unwrap().to_owned();
    let token = w.smtp.mail_to("dora@acme.example").await.token("/activate");

    let activate = CommandClient::envelope("activate_user", json!({"token": token}), None);
    let first = w.send_envelope(&activate).await;
    assert_eq!(first["status"], "applied", "{first}");
    let again = w.send_envelope(&activate).await;
    assert_eq!(again["duplicate"], true, "{again}");
    assert_eq!(again["data"], first["data"], "the stored reply");
    assert_eq!(again["status"], "applied", "{again}");

    // The same command with its data's keys in another order (the test
    // client would sort them; this body is written by hand).
    let id = Uuid::new_v4().to_string();
    let body = |data: &str| {
        format!(
            r#"{{"specversion":"1.0","id":"{id}","source":"portal","type":"update_profile",
                "actor":"{manager}","data":{data}}}"#
        )
    };
    let changed = w
        .send_raw(body(&format!(r#"{{"user_id":"{user}","first_name":"Dora"}}"#)).as_bytes())
        .await;
    assert_eq!(changed["status"], "applied", "{changed}");
    assert_eq!(changed["duplicate"], false, "{changed}");
    let repeated = w
        .send_raw(body(&format!(r#"{{"first_name":"Dora","user_id":"{user}"}}"#)).as_bytes())
        .await;
    assert_eq!(repeated["duplicate"], true, "{repeated}");
    assert_eq!(repeated["data"], changed["data"], "{repeated}");
}

#[tokio::test]
async fn in_a_batch_a_reused_id_is_refused_as_alone_and_a_redelivery_is_still_a_duplicate() {
    let (mut w, manager) = TestWorker::with_active_manager(&[]).await;
    let user = w.active_user(&manager, "acme", "bea@acme.example").await;
    let check = CommandClient::envelope(
        "check_email",
        json!({"email": "bea@acme.example"}),
        Some(&manager),
    );
    let checked = w.send_envelope(&check).await;
    assert_eq!(checked["status"], "applied", "{checked}");
    let first_invite = CommandClient::envelope(
        "invite_user",
        invite_data("acme", "first@acme.example"),
        Some(&manager),
    );
    let first_invited = w.send_envelope(&first_invite).await;
    assert_eq!(first_invited["status"], "applied", "{first_invited}");

    // Stop the worker so that everything below is waiting when it starts.
    assert!(w.terminate().await.success());
    let invite = |email: &str| {
        CommandClient::envelope("invite_user", invite_data("acme", email), Some(&manager))
    };
    let remove = under_id_of(
        &check,
        CommandClient::envelope("remove_user", json!({"user_id": user}), Some(&manager)),
    );
    // Invites around them, so that they are in the middle of batches.
    let mut envelopes: Vec<Value> = (0..16)
        .map(|i| invite(&format!("b{i}@acme.example")))
        .collect();
    // An invite under an earlier invite's id, among invites (which may be
    // written as one statement).
    let reinvite = under_id_of(&first_invite, invite("second@acme.example"));
    let (reusing, redelivered, reinviting) = (6, 12, 16);
    envelopes.insert(reusing, remove);
    envelopes.insert(redelivered, check.clone());
    envelopes.insert(reinviting, reinvite);
    // Two of them share an id: each is published with a correlation id of
    // its own, so that their replies can be told apart.
    let correlations: Vec<String> = (0..envelopes.len())
        .map(|i| format!("batch-{i}-{}", Uuid::new_v4()))
        .collect();
    for (envelope, correlation) in envelopes.iter().zip(&correlations) {
        w.client
            .publish_raw(
                envelope["type"].as_str().unwrap(),
                &serde_json::to_vec(envelope).unwrap(),
                correlation,
            )
            .await
            .expect("published");
    }
    w.spawn();
    w.wait_ready().await;
    let replies = w.replies_for(&correlations, Duration::from_secs(60)).await;
    let reply = |i: usize| {
        replies
            .get(&correlations[i])
            .and_then(|r| r.first())
            .unwrap_or_else(|| panic!("no reply to command {i}"))
            .clone()
    };

    let special = [reusing, redelivered, reinviting];
    for i in (0..envelopes.len()).filter(|i| !special.contains(i)) {
        let r = reply(i);
        assert_eq!(r["status"], "applied", "{r}");
        assert_eq!(r["duplicate"], false, "{r}");
    }
    assert_refused_id_reused(&reply(reusing), &checked);
    let again = reply(redelivered);
    assert_eq!(again["duplicate"], true, "{again}");
    assert_eq!(again["data"], checked["data"], "{again}");
    assert_refused_id_reused(&reply(reinviting), &first_invited);
    assert_eq!(
        w.count("SELECT count(*) FROM users WHERE email = 'second@acme.example'")
            .await,
        0,
        "the invite under a reused id invited no one"
    );
    // Counted since the worker started again: some of them went together.
    assert!(
        w.metric(TRANSACTION_BATCHES).await.unwrap_or(0.0) >= 1.0,
        "the commands were applied in batches"
    );

    assert_eq!(removals(&w, &user), 0, "the remove_user applied nothing");
    still_removable(&mut w, &manager, &user).await;
}
