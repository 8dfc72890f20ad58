//! What the worker takes in and hands on: names that read as they display,
//! no secrets in dead letters or stored copies, and no replies into the
//! worker's own queues (issue 25, cases 6, 7 and 8).

use serde_json::{Value, json};

use crate::common::{TestWorker, WAIT, invite_data, person};

/// A right-to-left override: `Ann\u{202E}gnp.exe` displays as `Annexe.png`.
const LYING_NAME: &str = "Ann\u{202E}gnp.exe";

fn onboarding(org: &str, org_name: &str, manager_email: &str) -> Value {
    json!({
        "organization": {"id": org, "name": org_name},
        "contract_accounts": [{"id": "CA-1", "name": "Main"}],
        "delivery_accounts": [{"id": "DA-1", "name": "Shop", "contract_accounts": ["CA-1"]}],
        "manager": person(manager_email, "Mara", "Manager"),
    })
}

#[tokio::test]
async fn a_name_with_bidi_or_invisible_characters_is_refused_naming_the_field() {
    let (mut w, manager) = TestWorker::with_active_manager(&[]).await;

    let mut data = invite_data("acme", "ann@acme.example");
    data["user"]["first_name"] = json!(LYING_NAME);
    let reply = w.send("invite_user", data, Some(&manager)).await;
    assert_eq!(reply["status"], "invalid", "{reply}");
    let message = reply["message"].as_str().unwrap_or_default();
    assert!(message.contains("user.first_name"), "{reply}");

    for (field, org_name, account_name) in [
        ("organization.name", "Acme\u{2067}B.V.", "Main"),
        ("contract_accounts[0].name", "Acme B.V.", "Main\u{200B}"),
    ] {
        let mut data = onboarding("globex", org_name, "boss@globex.example");
        data["contract_accounts"][0]["name"] = json!(account_name);
        let reply = w.send("onboard_organization", data, None).await;
        assert_eq!(reply["status"], "invalid", "{field}: {reply}");
        let message = reply["message"].as_str().unwrap_or_default();
        assert!(message.contains(field), "{field}: {reply}");
    }

    // The same commands with plain names go through: only the names were wrong.
    let reply = w
        .send(
            "onboard_organization",
            onboarding("globex", "Globex B.V.", "boss@globex.example"),
            None,
        )
        .await;
    assert_eq!(reply["status"], "applied", "{reply}");
    let reply = w
        .send(
            "invite_user",
            invite_data("acme", "ivo@acme.example"),
            Some(&manager),
        )
        .await;
    assert_eq!(reply["status"], "applied", "{reply}");
    w.smtp.mail_to("ivo@acme.example").await;
    w.outbox_drained(WAIT).await;
    assert_eq!(
        w.smtp.count_to("ann@acme.example"),
        0,
        "no email for the refused name"
    );
    assert_eq!(
        w.count("SELECT count(*) FROM users WHERE email = 'ann@acme.example'")
            .await,
        0
    );
}
