//! My Organization and delivery accounts: who may act on whom, and the audit trail.

use crate::helpers::{TestWorker, invite_data};
use serde_json::{Value, json};

/// Invites a manager of delivery account `da` and activates it; returns its id.
async fn delivery_account_manager(w: &mut TestWorker, boss: &str, da: &str, email: &str) -> String {
    let mut data = invite_data("acme", email);
    data["delivery_account_id"] = json!(da);
    data["role"] = json!("manager");
    data["delivery_accounts"] = json!([da]);
    let reply = w.send("invite_user", data, Some(boss)).await;
    assert_eq!(reply["status"], "applied", "{reply}");
    let token = w.smtp.mail_to(email).await.token("/activate");
    assert_eq!(w.activate(&token).await["status"], "applied");
    reply["data"]["user_id"].as_str().unwrap().to_owned()
}

fn shop_invite(da: &str, email: &str) -> Value {
    let mut data = invite_data("acme", email);
    data["delivery_account_id"] = json!(da);
    data
}

async fn with_two_shops() -> (TestWorker, String) {
    let mut w = TestWorker::start().await;
    let boss = w.onboard_active_manager("acme", "boss@acme.example").await;
    let sync = w
        .send(
            "sync_accounts",
            json!({"organization_id": "acme", "delivery_accounts": [{"id": "DA-2", "name": "Second shop", "contract_accounts": ["CA-1"]}]}),
            None,
        )
        .await;
    assert_eq!(sync["status"], "applied", "{sync}");
    (w, boss)
}

#[tokio::test]
async fn an_organization_manager_adds_users_to_a_delivery_account() {
    let (mut w, boss) = with_two_shops().await;
    let reply = w
        .send(
            "invite_user",
            shop_invite("DA-1", "shop@acme.example"),
            Some(&boss),
        )
        .await;
    assert_eq!(reply["status"], "applied", "{reply}");
    let event = w
        .event("user.invited", reply["data"]["user_id"].as_str())
        .await;
    assert_eq!(event["data"]["delivery_account_id"], "DA-1");
    assert_eq!(
        event["data"]["delivery_accounts"],
        json!(["DA-1"]),
        "a shop user sees its own shop"
    );

    let unknown = w
        .send(
            "invite_user",
            shop_invite("DA-404", "x@acme.example"),
            Some(&boss),
        )
        .await;
    assert_eq!(unknown["status"], "invalid");
    assert!(
        unknown["message"]
            .as_str()
            .unwrap()
            .contains("delivery_account_id"),
        "{unknown}"
    );

    let mut wider = shop_invite("DA-1", "y@acme.example");
    wider["delivery_accounts"] = json!("all");
    let reply = w.send("invite_user", wider, Some(&boss)).await;
    assert_eq!(reply["status"], "invalid", "{reply}");
    assert!(
        reply["message"]
            .as_str()
            .unwrap()
            .contains("delivery_accounts"),
        "{reply}"
    );
}

#[tokio::test]
async fn a_delivery_account_manager_acts_only_inside_its_own_delivery_account() {
    let (mut w, boss) = with_two_shops().await;
    let shop_manager = delivery_account_manager(&mut w, &boss, "DA-1", "dam@acme.example").await;

    let own = w
        .send(
            "invite_user",
            shop_invite("DA-1", "own@acme.example"),
            Some(&shop_manager),
        )
        .await;
    assert_eq!(own["status"], "applied", "{own}");
    let other_shop = w
        .send(
            "invite_user",
            shop_invite("DA-2", "other@acme.example"),
            Some(&shop_manager),
        )
        .await;
    assert_eq!(other_shop["code"], "not_authorized", "{other_shop}");
    let my_org = w
        .send(
            "invite_user",
            invite_data("acme", "org@acme.example"),
            Some(&shop_manager),
        )
        .await;
    assert_eq!(my_org["code"], "not_authorized", "{my_org}");

    let org_user = w.invite(&boss, "acme", "orguser@acme.example").await;
    let org_user = org_user["data"]["user_id"].as_str().unwrap();
    let remove = w
        .send(
            "remove_user",
            json!({"user_id": org_user}),
            Some(&shop_manager),
        )
        .await;
    assert_eq!(remove["code"], "not_authorized", "{remove}");
    let resend = w.resend_activation(&shop_manager, org_user).await;
    assert_eq!(resend["code"], "not_authorized", "{resend}");
}

#[tokio::test]
async fn a_manager_limited_to_some_delivery_accounts_manages_only_those() {
    let (mut w, boss) = with_two_shops().await;
    let mut data = invite_data("acme", "lim@acme.example");
    data["role"] = json!("manager");
    data["delivery_accounts"] = json!(["DA-2"]);
    let limited = w.send("invite_user", data, Some(&boss)).await;
    let limited = limited["data"]["user_id"].as_str().unwrap().to_owned();
    let token = w.smtp.mail_to("lim@acme.example").await.token("/activate");
    w.activate(&token).await;

    let held = w
        .send(
            "invite_user",
            shop_invite("DA-2", "a@acme.example"),
            Some(&limited),
        )
        .await;
    assert_eq!(held["status"], "applied", "{held}");
    let not_held = w
        .send(
            "invite_user",
            shop_invite("DA-1", "b@acme.example"),
            Some(&limited),
        )
        .await;
    assert_eq!(not_held["code"], "not_authorized", "{not_held}");
}

#[tokio::test]
async fn access_changes_are_checked_and_audited_with_before_and_after() {
    let mut w = TestWorker::start().await;
    let boss = w.onboard_active_manager("acme", "boss@acme.example").await;
    let ivo = w.active_user(&boss, "acme", "ivo@acme.example").await;

    let change = json!({"user_id": ivo, "permissions": ["orders.view"], "contract_accounts": ["CA-1", "CA-2"]});
    let reply = w.send("update_access", change, Some(&boss)).await;
    assert_eq!(reply["status"], "applied", "{reply}");
    let event = w.event("user.access_updated", Some(&ivo)).await;
    assert_eq!(
        event["data"]["after"]["permissions"],
        json!(["orders.view"])
    );
    assert_eq!(
        event["data"]["before"]["permissions"],
        json!(["services.view", "cases.view"])
    );

    let unknown = w
        .send(
            "update_access",
            json!({"user_id": ivo, "contract_accounts": ["CA-9"]}),
            Some(&boss),
        )
        .await;
    assert_eq!(unknown["status"], "invalid");
    assert!(
        unknown["message"].as_str().unwrap().contains("CA-9"),
        "{unknown}"
    );
    let by_user = w
        .send(
            "update_access",
            json!({"user_id": boss, "role": "user"}),
            Some(&ivo),
        )
        .await;
    assert_eq!(by_user["code"], "not_authorized");

    w.send(
        "update_profile",
        json!({"user_id": ivo, "last_name": "Jansen"}),
        Some(&ivo),
    )
    .await;
    w.event("user.profile_updated", Some(&ivo)).await;

    let trail = w.history(&ivo);
    let actions: Vec<&str> = trail
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "user.invited",
            "user.activated",
            "user.access_updated",
            "user.profile_updated"
        ],
        "every accepted change, in order; refused ones leave no record"
    );
    let access = &trail[2];
    assert_eq!(access["actor_id"], boss.as_str());
    assert_eq!(
        access["before"]["permissions"],
        json!(["services.view", "cases.view"])
    );
    assert_eq!(access["after"]["permissions"], json!(["orders.view"]));
    assert_eq!(
        access["after"]["contract_accounts"],
        json!(["CA-1", "CA-2"])
    );
    assert_eq!(trail[3]["actor_id"], ivo.as_str());
    assert_eq!(trail[3]["after"]["last_name"], "Jansen");
}
