//! Looking users up, editing profiles and access, removing users.

use crate::helpers::{TestWorker, invite_data};
use serde_json::json;

#[tokio::test]
async fn check_email_reveals_only_existence_across_organizations() {
    let mut w = TestWorker::start().await;
    let acme = w.onboard_active_manager("acme", "boss@acme.example").await;
    let other = w
        .onboard_active_manager("other", "boss@other.example")
        .await;
    w.invite(&acme, "acme", "ivo@acme.example").await;

    let same = w
        .send(
            "check_email",
            json!({"email": "IVO@acme.example"}),
            Some(&acme),
        )
        .await;
    assert_eq!(
        same["data"],
        json!({"exists": true, "same_organization": true, "status": "invited"})
    );
    let cross = w
        .send(
            "check_email",
            json!({"email": "ivo@acme.example"}),
            Some(&other),
        )
        .await;
    assert_eq!(
        cross["data"],
        json!({"exists": true, "same_organization": false}),
        "no status across tenants"
    );
    let none = w
        .send(
            "check_email",
            json!({"email": "nobody@acme.example"}),
            Some(&acme),
        )
        .await;
    assert_eq!(
        none["data"],
        json!({"exists": false, "same_organization": false})
    );
    let anonymous = w
        .send("check_email", json!({"email": "ivo@acme.example"}), None)
        .await;
    assert_eq!(anonymous["code"], "not_authorized");
}

#[tokio::test]
async fn a_user_edits_its_own_profile_and_a_manager_edits_its_users() {
    let mut w = TestWorker::start().await;
    let manager = w.onboard_active_manager("acme", "boss@acme.example").await;
    let ivo = w.active_user(&manager, "acme", "ivo@acme.example").await;
    let ann = w.active_user(&manager, "acme", "ann@acme.example").await;

    let own = w
        .send(
            "update_profile",
            json!({"user_id": ivo, "first_name": "  Ivo Jan ", "phone": "020 765 4321"}),
            Some(&ivo),
        )
        .await;
    assert_eq!(own["status"], "applied", "{own}");
    let event = w.event("user.profile_updated", Some(&ivo)).await;
    assert_eq!(event["data"]["profile"]["first_name"], "Ivo Jan");
    assert_eq!(
        event["data"]["profile"]["phone"], "+31207654321",
        "normalised to E.164 with the user's country"
    );

    let other = w
        .send(
            "update_profile",
            json!({"user_id": ann, "first_name": "Mallory"}),
            Some(&ivo),
        )
        .await;
    assert_eq!(
        other["code"], "not_authorized",
        "a user changes only its own profile: {other}"
    );
    let by_manager = w
        .send(
            "update_profile",
            json!({"user_id": ann, "locale": "de", "country": "DE"}),
            Some(&manager),
        )
        .await;
    assert_eq!(by_manager["status"], "applied", "{by_manager}");

    let bad = w
        .send(
            "update_profile",
            json!({"user_id": ivo, "country": "XX"}),
            Some(&ivo),
        )
        .await;
    assert_eq!(bad["status"], "invalid");
    assert!(
        bad["message"].as_str().unwrap().contains("country"),
        "{bad}"
    );
}

#[tokio::test]
async fn removing_a_user_ends_access_but_keeps_the_contact() {
    let mut w = TestWorker::start().await;
    let manager = w.onboard_active_manager("acme", "boss@acme.example").await;
    let ivo = w.active_user(&manager, "acme", "ivo@acme.example").await;

    let removed = w
        .send("remove_user", json!({"user_id": ivo}), Some(&manager))
        .await;
    assert_eq!(removed["status"], "applied", "{removed}");
    assert_eq!(removed["data"]["status"], "removed");
    let event = w.event("user.removed", Some(&ivo)).await;
    assert_eq!(event["data"]["removed_by"], manager.as_str());

    let lookup = w
        .send(
            "check_email",
            json!({"email": "ivo@acme.example"}),
            Some(&manager),
        )
        .await;
    assert_eq!(lookup["data"]["status"], "removed", "the contact is kept");
    let reinvite = w.invite(&manager, "acme", "ivo@acme.example").await;
    assert_eq!(
        reinvite["code"], "email_taken",
        "a removed user's email still exists"
    );
    let acts = w
        .send(
            "check_email",
            json!({"email": "boss@acme.example"}),
            Some(&ivo),
        )
        .await;
    assert_eq!(
        acts["code"], "not_authorized",
        "a removed user no longer acts"
    );
    let reset = w.request_password_reset("ivo@acme.example").await;
    assert_eq!(reset["code"], "removed");
    let twice = w
        .send("remove_user", json!({"user_id": ivo}), Some(&manager))
        .await;
    assert_eq!(twice["code"], "removed");
}

#[tokio::test]
async fn a_removed_invitee_can_no_longer_activate() {
    let mut w = TestWorker::start().await;
    let manager = w.onboard_active_manager("acme", "boss@acme.example").await;
    let invited = w.invite(&manager, "acme", "ivo@acme.example").await;
    let ivo = invited["data"]["user_id"].as_str().unwrap().to_owned();
    let token = w.smtp.mail_to("ivo@acme.example").await.token("/activate");
    assert_eq!(
        w.send("remove_user", json!({"user_id": ivo}), Some(&manager))
            .await["status"],
        "applied"
    );
    let reply = w.activate(&token).await;
    assert_eq!(
        reply["code"], "token_invalid",
        "removal revokes tokens: {reply}"
    );
}

#[tokio::test]
async fn nobody_removes_themself_and_only_managers_remove() {
    let mut w = TestWorker::start().await;
    let manager = w.onboard_active_manager("acme", "boss@acme.example").await;
    let ivo = w.active_user(&manager, "acme", "ivo@acme.example").await;
    let other = w
        .onboard_active_manager("other", "boss@other.example")
        .await;

    let myself = w
        .send("remove_user", json!({"user_id": manager}), Some(&manager))
        .await;
    assert_eq!(myself["code"], "not_authorized", "{myself}");
    let by_user = w
        .send("remove_user", json!({"user_id": manager}), Some(&ivo))
        .await;
    assert_eq!(by_user["code"], "not_authorized", "{by_user}");
    let cross = w
        .send("remove_user", json!({"user_id": ivo}), Some(&other))
        .await;
    assert_eq!(cross["code"], "not_found", "{cross}");
}

#[tokio::test]
async fn the_last_active_manager_cannot_be_demoted() {
    let mut w = TestWorker::start().await;
    let boss = w.onboard_active_manager("acme", "boss@acme.example").await;
    let mut data = invite_data("acme", "second@acme.example");
    data["role"] = json!("manager");
    let second = w.send("invite_user", data, Some(&boss)).await;
    let second_id = second["data"]["user_id"].as_str().unwrap().to_owned();
    let token = w
        .smtp
        .mail_to("second@acme.example")
        .await
        .token("/activate");
    w.activate(&token).await;

    let demote = w
        .send(
            "update_access",
            json!({"user_id": boss, "role": "user"}),
            Some(&boss),
        )
        .await;
    assert_eq!(
        demote["status"], "applied",
        "two managers: one may step down: {demote}"
    );
    w.event("user.access_updated", Some(&boss)).await;
    let last = w
        .send(
            "update_access",
            json!({"user_id": second_id, "role": "user"}),
            Some(&second_id),
        )
        .await;
    assert_eq!(last["code"], "last_manager", "{last}");
}

#[tokio::test]
async fn nobody_grants_what_it_does_not_hold() {
    let mut w = TestWorker::start().await;
    let boss = w.onboard_active_manager("acme", "boss@acme.example").await;
    let mut data = invite_data("acme", "lim@acme.example");
    data["role"] = json!("manager");
    data["permissions"] = json!(["cases.view"]);
    data["contract_accounts"] = json!(["CA-1"]);
    let limited = w.send("invite_user", data, Some(&boss)).await;
    let limited_id = limited["data"]["user_id"].as_str().unwrap().to_owned();
    let token = w.smtp.mail_to("lim@acme.example").await.token("/activate");
    w.activate(&token).await;

    let mut more = invite_data("acme", "x@acme.example");
    more["permissions"] = json!(["cases.view", "orders.create"]);
    more["contract_accounts"] = json!(["CA-1"]);
    let reply = w.send("invite_user", more, Some(&limited_id)).await;
    assert_eq!(reply["code"], "not_authorized");
    assert!(
        reply["message"].as_str().unwrap().contains("orders.create"),
        "{reply}"
    );

    let mut all = invite_data("acme", "y@acme.example");
    all["permissions"] = json!(["cases.view"]);
    all["contract_accounts"] = json!("all");
    let reply = w.send("invite_user", all, Some(&limited_id)).await;
    assert_eq!(
        reply["code"], "not_authorized",
        "\"all\" is more than a list: {reply}"
    );

    let mut within = invite_data("acme", "z@acme.example");
    within["permissions"] = json!(["cases.view"]);
    within["contract_accounts"] = json!(["CA-1"]);
    let reply = w.send("invite_user", within, Some(&limited_id)).await;
    assert_eq!(reply["status"], "applied", "{reply}");
}
