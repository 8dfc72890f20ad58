//! Who may act on whom (issue 25, cases 1–3b): nobody gains what it was
//! not given, nobody acts on a stronger user, every organization keeps a
//! My Organization manager, a refused actor learns nothing about its
//! target, and grants follow the account graph.

use serde_json::{Value, json};
use std::time::Duration;

use crate::helpers::{TestWorker, invite_data};
use user_lifecycle::broker::client::CommandClient;

/// Invites `email` with `access` (fields of `invite_user` data that replace
/// the defaults) as `actor` and activates it; returns its id.
async fn active(w: &mut TestWorker, actor: &str, email: &str, access: Value) -> String {
    let mut data = invite_data("acme", email);
    for (k, v) in access.as_object().unwrap() {
        data[k] = v.clone();
    }
    let reply = w.send("invite_user", data, Some(actor)).await;
    assert_eq!(reply["status"], "applied", "{reply}");
    let token = w.smtp.mail_to(email).await.token("/activate");
    let activated = w.activate(&token).await;
    assert_eq!(activated["status"], "applied", "{activated}");
    reply["data"]["user_id"].as_str().unwrap().to_owned()
}

/// A My Organization manager limited to cases.view, CA-1 and DA-1.
async fn limited_manager(w: &mut TestWorker, boss: &str) -> String {
    let access = json!({"role": "manager", "permissions": ["cases.view"],
        "contract_accounts": ["CA-1"], "delivery_accounts": ["DA-1"]});
    active(w, boss, "limited@acme.example", access).await
}

/// A My Organization user holding every permission and every account.
async fn strong_user(w: &mut TestWorker, boss: &str) -> String {
    let everything = json!({"permissions": ["services.view", "services.manage", "cases.view",
        "cases.create", "orders.view", "orders.create", "invoices.view", "documents.view"],
        "contract_accounts": "all", "delivery_accounts": "all"});
    active(w, boss, "strong@acme.example", everything).await
}

fn refused(reply: &Value, code: &str) {
    assert_eq!(reply["code"], code, "{reply}");
    assert_ne!(reply["status"], "applied", "{reply}");
}

#[tokio::test]
async fn a_role_change_never_hands_over_more_than_the_actor_holds() {
    let mut w = TestWorker::start().await;
    let boss = w.onboard_active_manager("acme", "boss@acme.example").await;
    let limited = limited_manager(&mut w, &boss).await;
    let strong = strong_user(&mut w, &boss).await;

    let promote = json!({"user_id": strong, "role": "manager"});
    let reply = w.send("update_access", promote, Some(&limited)).await;
    refused(&reply, "not_authorized");

    let weak = active(
        &mut w,
        &boss,
        "weak@acme.example",
        json!({"permissions": ["cases.view"]}),
    )
    .await;
    let widen = json!({"user_id": weak, "permissions": ["cases.view", "orders.create"]});
    let reply = w.send("update_access", widen, Some(&limited)).await;
    refused(&reply, "not_authorized");

    let own_rights = json!({"user_id": weak, "role": "manager"});
    let reply = w.send("update_access", own_rights, Some(&limited)).await;
    assert_eq!(reply["status"], "applied", "within its own rights: {reply}");
    let history = w.history(&strong);
    assert!(
        history.iter().all(|h| h["action"] != "user.access_updated"),
        "{history:?}"
    );
}

#[tokio::test]
async fn a_manager_acts_only_on_users_within_its_rights() {
    let mut w = TestWorker::start().await;
    let boss = w.onboard_active_manager("acme", "boss@acme.example").await;
    let limited = limited_manager(&mut w, &boss).await;

    for (kind, data) in [
        ("remove_user", json!({"user_id": boss})),
        (
            "update_profile",
            json!({"user_id": boss, "first_name": "Mallory"}),
        ),
        ("update_access", json!({"user_id": boss, "role": "user"})),
    ] {
        let reply = w.send(kind, data, Some(&limited)).await;
        refused(&reply, "not_authorized");
    }
    let mut strong_invite = invite_data("acme", "pending2@acme.example");
    strong_invite["permissions"] = json!(["orders.create"]);
    let strong_pending = w.send("invite_user", strong_invite, Some(&boss)).await;
    let strong_pending = strong_pending["data"]["user_id"].as_str().unwrap();
    let reply = w.resend_activation(&limited, strong_pending).await;
    refused(&reply, "not_authorized");
    let mut weak_invite = invite_data("acme", "pending3@acme.example");
    weak_invite["permissions"] = json!(["cases.view"]);
    let weak_pending = w.send("invite_user", weak_invite, Some(&limited)).await;
    assert_eq!(weak_pending["status"], "applied", "{weak_pending}");
    assert_eq!(
        w.send(
            "remove_user",
            json!({"user_id": weak_pending["data"]["user_id"]}),
            Some(&limited)
        )
        .await["status"],
        "applied",
        "a user within its rights"
    );
    assert!(
        w.history(&boss)
            .iter()
            .all(|h| h["action"] != "user.removed"),
        "the boss is untouched"
    );
}

#[tokio::test]
async fn an_organization_always_keeps_a_my_organization_manager() {
    let mut w = TestWorker::start().await;
    let boss = w.onboard_active_manager("acme", "boss@acme.example").await;
    let shop_manager = active(
        &mut w,
        &boss,
        "shopboss@acme.example",
        json!({"delivery_account_id": "DA-1", "role": "manager", "contract_accounts": ["CA-1"],
               "delivery_accounts": ["DA-1"]}),
    )
    .await;
    assert!(!shop_manager.is_empty());
    let demote_self = json!({"user_id": boss, "role": "user"});
    let reply = w.send("update_access", demote_self, Some(&boss)).await;
    refused(&reply, "last_manager");

    // Two My Organization managers demote themselves at once: one stays.
    let everything = json!({"role": "manager", "permissions": ["services.view", "services.manage",
        "cases.view", "cases.create", "orders.view", "orders.create", "invoices.view",
        "documents.view"], "contract_accounts": "all", "delivery_accounts": "all"});
    let second = active(&mut w, &boss, "second@acme.example", everything).await;
    let envelopes = [
        CommandClient::envelope(
            "update_access",
            json!({"user_id": boss, "role": "user"}),
            Some(&boss),
        ),
        CommandClient::envelope(
            "update_access",
            json!({"user_id": second, "role": "user"}),
            Some(&second),
        ),
    ];
    let ids = w.publish_all(&envelopes).await;
    let replies = w.replies_for(&ids, Duration::from_secs(30)).await;
    let codes: Vec<&str> = ids
        .iter()
        .map(|id| replies[id][0]["code"].as_str().unwrap())
        .collect();
    let applied = codes.iter().filter(|c| **c == "ok").count();
    assert_eq!(applied, 1, "exactly one demotion applies: {codes:?}");
    assert!(
        codes.contains(&"last_manager"),
        "the other is refused: {codes:?}"
    );
}

#[tokio::test]
async fn a_refused_actor_learns_nothing_about_its_target() {
    let mut w = TestWorker::start().await;
    let boss = w.onboard_active_manager("acme", "boss@acme.example").await;
    let plain = active(&mut w, &boss, "plain@acme.example", json!({})).await;
    let shop_user = active(
        &mut w,
        &boss,
        "shop@acme.example",
        json!({"delivery_account_id": "DA-1", "contract_accounts": ["CA-1"]}),
    )
    .await;
    let widen = json!({"user_id": shop_user, "delivery_accounts": "all"});
    let reply = w.send("update_access", widen, Some(&plain)).await;
    refused(&reply, "not_authorized");
    assert!(!reply.to_string().contains("DA-1"), "{reply}");

    let gone = active(&mut w, &boss, "gone@acme.example", json!({})).await;
    let here = active(&mut w, &boss, "here@acme.example", json!({})).await;
    let removed = w
        .send("remove_user", json!({"user_id": gone}), Some(&boss))
        .await;
    assert_eq!(removed["status"], "applied", "{removed}");
    let on_removed = w
        .send("remove_user", json!({"user_id": gone}), Some(&plain))
        .await;
    let on_present = w
        .send("remove_user", json!({"user_id": here}), Some(&plain))
        .await;
    refused(&on_removed, "not_authorized");
    assert_eq!(
        (&on_removed["code"], &on_removed["message"]),
        (&on_present["code"], &on_present["message"]),
        "a removed colleague looks like any other"
    );
}

#[tokio::test]
async fn grants_stay_within_the_account_graph() {
    let mut w = TestWorker::start().await;
    let boss = w.onboard_active_manager("acme", "boss@acme.example").await;
    // DA-1 is linked to CA-1 only (see `onboard_active_manager`).
    let mut invite = invite_data("acme", "shop@acme.example");
    invite["delivery_account_id"] = json!("DA-1");
    invite["contract_accounts"] = json!(["CA-2"]);
    let reply = w.send("invite_user", invite, Some(&boss)).await;
    assert_eq!(reply["status"], "invalid", "{reply}");
    assert!(
        reply["message"]
            .as_str()
            .unwrap()
            .contains("contract_accounts"),
        "{reply}"
    );

    let shop_user = active(
        &mut w,
        &boss,
        "shop2@acme.example",
        json!({"delivery_account_id": "DA-1", "contract_accounts": ["CA-1"]}),
    )
    .await;
    let change = json!({"user_id": shop_user, "contract_accounts": ["CA-1", "CA-2"]});
    let reply = w.send("update_access", change, Some(&boss)).await;
    assert_eq!(reply["status"], "invalid", "{reply}");
    assert!(
        reply["message"].as_str().unwrap().contains("CA-2"),
        "{reply}"
    );
}
