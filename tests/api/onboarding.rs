//! Onboarding organizations and syncing their accounts (system commands).

use crate::helpers::{TestWorker, invite_data, person};
use serde_json::json;

fn onboard(org: &str, email: &str) -> serde_json::Value {
    json!({
        "organization": {"id": org, "name": "Acme <Holding> & Co"},
        "contract_accounts": [{"id": "CA-1", "name": "Main"}],
        "delivery_accounts": [{"id": "DA-1", "name": "Shop", "contract_accounts": ["CA-1"]}],
        "manager": person(email, "Bea", "Boss"),
    })
}

#[tokio::test]
async fn onboarding_creates_the_organization_and_invites_its_first_manager() {
    let mut w = TestWorker::start().await;
    let reply = w
        .send(
            "onboard_organization",
            onboard("acme", "bea@acme.example"),
            None,
        )
        .await;
    assert_eq!(reply["status"], "applied", "{reply}");
    assert_eq!(reply["data"]["organization_id"], "acme");
    let manager = reply["data"]["manager_id"].as_str().unwrap().to_owned();

    let onboarded = w.event("organization.onboarded", Some("acme")).await;
    assert_eq!(onboarded["data"]["manager_id"], manager.as_str());
    let invited = w.event("user.invited", Some(&manager)).await;
    assert_eq!(invited["data"]["role"], "manager");
    assert_eq!(invited["data"]["contract_accounts"], "all");
    assert_eq!(
        invited["data"]["permissions"].as_array().unwrap().len(),
        8,
        "all permissions"
    );

    let mail = w.smtp.mail_to("bea@acme.example").await;
    assert!(mail.is_multipart_alternative());
    assert!(
        mail.html().contains("Acme &lt;Holding&gt; &amp; Co"),
        "HTML escapes what was typed"
    );
    assert!(!mail.html().contains("<Holding>"));
    let token = mail.token("/activate");
    let activated = w.activate(&token).await;
    assert_eq!(activated["data"]["user_id"], manager.as_str());

    // The activated manager can now invite.
    let invite = w
        .send(
            "invite_user",
            invite_data("acme", "ivo@acme.example"),
            Some(&manager),
        )
        .await;
    assert_eq!(invite["status"], "applied", "{invite}");
}

#[tokio::test]
async fn an_organization_with_an_active_manager_is_onboarded_once() {
    let mut w = TestWorker::start().await;
    assert_eq!(
        w.send(
            "onboard_organization",
            onboard("acme", "a@acme.example"),
            None
        )
        .await["status"],
        "applied"
    );
    // (Without an active manager, onboarding again re-invites one: tests/trust/recovery.rs.)
    let token = w.smtp.mail_to("a@acme.example").await.token("/activate");
    let activated = w.activate(&token).await;
    assert_eq!(activated["status"], "applied", "{activated}");
    let again = w
        .send(
            "onboard_organization",
            onboard("acme", "b@acme.example"),
            None,
        )
        .await;
    assert_eq!(again["code"], "organization_exists", "{again}");
    let taken = w
        .send(
            "onboard_organization",
            onboard("beta", "A@ACME.example"),
            None,
        )
        .await;
    assert_eq!(taken["code"], "email_taken", "{taken}");
    // The refused onboarding left nothing behind: the id is still free.
    let retry = w
        .send(
            "onboard_organization",
            onboard("beta", "c@beta.example"),
            None,
        )
        .await;
    assert_eq!(retry["status"], "applied", "{retry}");
}

#[tokio::test]
async fn system_commands_take_no_actor() {
    let mut w = TestWorker::start().await;
    let manager = w.onboard_active_manager("acme", "boss@acme.example").await;
    let reply = w
        .send(
            "onboard_organization",
            onboard("evil", "e@evil.example"),
            Some(&manager),
        )
        .await;
    assert_eq!(reply["code"], "not_authorized", "{reply}");
    let sync = w
        .send(
            "sync_accounts",
            json!({"organization_id": "acme", "contract_accounts": []}),
            Some(&manager),
        )
        .await;
    assert_eq!(sync["code"], "not_authorized", "{sync}");
}

#[tokio::test]
async fn a_delivery_account_must_link_to_known_contract_accounts() {
    let mut w = TestWorker::start().await;
    let mut data = onboard("acme", "a@acme.example");
    data["delivery_accounts"][0]["contract_accounts"] = json!(["CA-9"]);
    let reply = w.send("onboard_organization", data, None).await;
    assert_eq!(reply["status"], "invalid");
    assert!(
        reply["message"]
            .as_str()
            .unwrap()
            .contains("delivery_accounts[0].contract_accounts[0]"),
        "{reply}"
    );
}

#[tokio::test]
async fn synced_accounts_can_be_granted_afterwards() {
    let mut w = TestWorker::start().await;
    let manager = w.onboard_active_manager("acme", "boss@acme.example").await;
    let mut data = invite_data("acme", "ivo@acme.example");
    data["contract_accounts"] = json!(["CA-NEW"]);
    let before = w.send("invite_user", data.clone(), Some(&manager)).await;
    assert_eq!(
        before["status"], "invalid",
        "unknown before the sync: {before}"
    );

    let sync = w
        .send(
            "sync_accounts",
            json!({"organization_id": "acme",
                   "contract_accounts": [{"id": "CA-NEW", "name": "New contract"}],
                   "delivery_accounts": [{"id": "DA-NEW", "name": "New shop", "contract_accounts": ["CA-NEW", "CA-1"]}]}),
            None,
        )
        .await;
    assert_eq!(sync["status"], "applied", "{sync}");
    w.event("organization.accounts_synced", Some("acme")).await;
    let after = w.send("invite_user", data, Some(&manager)).await;
    assert_eq!(after["status"], "applied", "{after}");

    let unknown = w
        .send(
            "sync_accounts",
            json!({"organization_id": "nobody", "contract_accounts": []}),
            None,
        )
        .await;
    assert_eq!(unknown["code"], "not_found");
}
