//! A batch that mixes applied, refused, invalid, duplicate and failing
//! commands, in every order, gives each command the answer it gets alone and
//! leaves exactly the applied and refused ones' effects: the handler's batch
//! (`Handler::handle_batch`) called directly on a worker's database.

use crate::helpers::batch::{Batch, handler};
use crate::helpers::{TestWorker, invite_data, user_id};
use serde_json::{Value, json};
use user_lifecycle::broker::client::CommandClient;
use user_lifecycle::handler::{HandleError, Handled};

/// What a command of the batch is, and so what it must get.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    /// A new invitation: applied, one invited user.
    Invite,
    /// A profile change of an existing user: applied.
    Update,
    /// A password reset for an unknown address: refused `not_found`.
    Refused,
    /// An invitation with a malformed email: answered `invalid`.
    Invalid,
    /// A command recorded before: the stored reply, nothing applied.
    Duplicate,
    /// A profile change the database refuses (a trigger raises): an error,
    /// nothing of it written, nothing recorded.
    Failing,
}

const KINDS: [Kind; 6] = [
    Kind::Invite,
    Kind::Update,
    Kind::Refused,
    Kind::Invalid,
    Kind::Duplicate,
    Kind::Failing,
];

/// Every permutation of `items`.
fn permutations<T: Copy>(items: &[T]) -> Vec<Vec<T>> {
    if items.len() <= 1 {
        return vec![items.to_vec()];
    }
    let mut all = Vec::new();
    for (i, first) in items.iter().enumerate() {
        let mut rest = items.to_vec();
        rest.remove(i);
        for mut tail in permutations(&rest) {
            tail.insert(0, *first);
            all.push(tail);
        }
    }
    all
}

struct Scenario {
    manager: String,
    updated: String,
    failing: String,
    recorded: Value,
    recorded_reply: Value,
}

impl Scenario {
    /// The envelope of a `kind` command for the `round`-th order.
    fn envelope(&self, kind: Kind, round: usize) -> Value {
        let actor = Some(self.manager.as_str());
        match kind {
            Kind::Invite => CommandClient::envelope(
                "invite_user",
                invite_data("acme", &format!("mixed{round}@acme.example")),
                actor,
            ),
            Kind::Update => CommandClient::envelope(
                "update_profile",
                json!({"user_id": self.updated, "last_name": format!("Round {round}")}),
                actor,
            ),
            Kind::Refused => CommandClient::envelope(
                "request_password_reset",
                json!({"email": format!("nobody{round}@acme.example")}),
                None,
            ),
            Kind::Invalid => CommandClient::envelope(
                "invite_user",
                invite_data("acme", &format!("not an email {round}")),
                actor,
            ),
            Kind::Duplicate => self.recorded.clone(),
            Kind::Failing => CommandClient::envelope(
                "update_profile",
                json!({"user_id": self.failing, "last_name": "Fail"}),
                actor,
            ),
        }
    }
}

fn reply_json(handled: &Handled) -> Value {
    let reply = match handled {
        Handled::Processed { reply, .. } | Handled::Duplicate(reply) | Handled::IdReused(reply) => {
            reply
        }
    };
    serde_json::to_value(reply).unwrap()
}

/// Checks that `result` is what a `kind` command gets.
fn check(kind: Kind, result: &Result<Handled, HandleError>, s: &Scenario, order: &[Kind]) {
    let ctx = format!("{kind:?} in {order:?}: {result:?}");
    match (kind, result) {
        (Kind::Invite | Kind::Update, Ok(h @ Handled::Processed { .. })) => {
            assert_eq!(reply_json(h)["status"], "applied", "{ctx}")
        }
        (Kind::Refused, Ok(h @ Handled::Processed { .. })) => {
            let reply = reply_json(h);
            assert_eq!(reply["status"], "rejected", "{ctx}");
            assert_eq!(reply["code"], "not_found", "{ctx}");
        }
        (Kind::Invalid, Ok(h @ Handled::Processed { .. })) => {
            assert_eq!(reply_json(h)["status"], "invalid", "{ctx}")
        }
        (Kind::Duplicate, Ok(Handled::Duplicate(reply))) => {
            assert_eq!(
                serde_json::to_value(reply).unwrap(),
                s.recorded_reply,
                "{ctx}"
            )
        }
        (Kind::Failing, Err(_)) => {}
        _ => panic!("unexpected result for {ctx}"),
    }
}

#[tokio::test]
async fn every_order_of_applied_refused_invalid_duplicate_and_failing_commands_in_one_batch() {
    let (mut w, manager) = TestWorker::with_active_manager(&[]).await;
    let updated = user_id(&w.invite(&manager, "acme", "updated@acme.example").await);
    let failing = user_id(&w.invite(&manager, "acme", "failing@acme.example").await);
    let recorded = CommandClient::envelope(
        "check_email",
        json!({"email": "updated@acme.example"}),
        Some(&manager),
    );
    let recorded_reply = w.send_envelope(&recorded).await;
    assert_eq!(recorded_reply["status"], "applied", "{recorded_reply}");
    let pool = w.pool(4).await;
    // The database refuses one user's new last name, as it would refuse
    // any statement that fails halfway through a batch.
    sqlx::raw_sql(
        "CREATE FUNCTION refuse_fail() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF NEW.last_name = 'Fail' THEN RAISE EXCEPTION 'refused by the test'; END IF;
             RETURN NEW;
         END $$;
         CREATE TRIGGER refuse_fail BEFORE UPDATE ON users
             FOR EACH ROW EXECUTE FUNCTION refuse_fail();",
    )
    .execute(&pool)
    .await
    .unwrap();
    let scenario = Scenario {
        manager,
        updated,
        failing,
        recorded_reply: stored_reply(&pool, &recorded).await,
        recorded,
    };
    let handler = handler(&pool);
    for (round, order) in permutations(&KINDS).into_iter().enumerate() {
        let bodies: Vec<Value> = order.iter().map(|k| scenario.envelope(*k, round)).collect();
        let results = Batch::of(&bodies).handle(&handler).await;
        for (kind, result) in order.iter().zip(&results) {
            check(*kind, result, &scenario, &order);
        }
        check_state(&pool, &scenario, &bodies, &order, round).await;
    }
}

/// The reply recorded for `envelope`'s id, as the duplicate gets it.
async fn stored_reply(pool: &sqlx::PgPool, envelope: &Value) -> Value {
    sqlx::query_scalar("SELECT reply FROM processed_commands WHERE command_id = $1")
        .bind(envelope["id"].as_str().unwrap())
        .fetch_one(pool)
        .await
        .unwrap()
}

/// What the round left: the invitee once, the new last name, the failing
/// user untouched, a record for every command but the failing one.
async fn check_state(
    pool: &sqlx::PgPool,
    s: &Scenario,
    bodies: &[Value],
    order: &[Kind],
    round: usize,
) {
    let invited: i64 =
        sqlx::query_scalar("SELECT count(*) FROM users WHERE email = $1 AND status = 'invited'")
            .bind(format!("mixed{round}@acme.example"))
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(invited, 1, "the invitee of {order:?}");
    let last_names: Vec<(String, String)> =
        sqlx::query_as("SELECT id::text, last_name FROM users WHERE id::text = ANY($1)")
            .bind(vec![s.updated.clone(), s.failing.clone()])
            .fetch_all(pool)
            .await
            .unwrap();
    for (id, last_name) in last_names {
        if id == s.updated {
            assert_eq!(last_name, format!("Round {round}"), "{order:?}");
        } else {
            assert_ne!(last_name, "Fail", "the failing change of {order:?}");
        }
    }
    for (kind, body) in order.iter().zip(bodies) {
        let recorded: Option<String> = sqlx::query_scalar(
            "SELECT reply->>'status' FROM processed_commands WHERE command_id = $1",
        )
        .bind(body["id"].as_str().unwrap())
        .fetch_optional(pool)
        .await
        .unwrap();
        let want = match kind {
            Kind::Invite | Kind::Update | Kind::Duplicate => Some("applied"),
            Kind::Refused => Some("rejected"),
            Kind::Invalid => Some("invalid"),
            Kind::Failing => None,
        };
        assert_eq!(
            recorded.as_deref(),
            want,
            "the record of {kind:?} in {order:?}"
        );
    }
    // One dead-letter copy per invalid command so far, none for the others.
    let dead: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE kind = 'dead_letter'")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(dead, round as i64 + 1, "dead-letter copies after {order:?}");
}

#[tokio::test]
async fn a_user_activated_earlier_in_a_batch_acts_later_in_it_as_it_would_alone() {
    let (mut w, manager) = TestWorker::with_active_manager(&[]).await;
    let user = user_id(&w.invite(&manager, "acme", "new@acme.example").await);
    let token = w.smtp.mail_to("new@acme.example").await.token("/activate");
    let handler = handler(&w.pool(2).await);
    let check = || {
        CommandClient::envelope(
            "check_email",
            json!({"email": "boss@acme.example"}),
            Some(&user),
        )
    };
    let results = Batch::of(&[
        check(),
        CommandClient::envelope("activate_user", json!({"token": token}), None),
        check(),
    ])
    .handle(&handler)
    .await;
    let statuses: Vec<(String, String)> = results
        .iter()
        .map(|r| {
            let reply = reply_json(r.as_ref().expect("handled"));
            (reply["status"].to_string(), reply["code"].to_string())
        })
        .collect();
    assert_eq!(
        statuses,
        [
            ("\"rejected\"".into(), "\"not_authorized\"".into()),
            ("\"applied\"".into(), "\"ok\"".into()),
            ("\"applied\"".into(), "\"ok\"".into()),
        ],
        "an invited user may not act; once activated it may"
    );
}

#[tokio::test]
async fn a_user_changed_earlier_in_a_batch_is_seen_changed_later_in_it() {
    let (mut w, manager) = TestWorker::with_active_manager(&[]).await;
    let user = user_id(&w.invite(&manager, "acme", "ivy@acme.example").await);
    let token = w.smtp.mail_to("ivy@acme.example").await.token("/activate");
    let handler = handler(&w.pool(2).await);
    let rename = || {
        CommandClient::envelope(
            "update_profile",
            json!({"user_id": user, "last_name": "Ash"}),
            Some(&manager),
        )
    };
    let look_up = || {
        CommandClient::envelope(
            "check_email",
            json!({"email": "ivy@acme.example"}),
            Some(&manager),
        )
    };
    let results = Batch::of(&[
        rename(),
        rename(),
        look_up(),
        CommandClient::envelope("activate_user", json!({"token": token}), None),
        look_up(),
    ])
    .handle(&handler)
    .await;
    let data: Vec<Value> = results
        .iter()
        .map(|r| reply_json(r.as_ref().expect("handled"))["data"].clone())
        .collect();
    assert_eq!(data[0]["changed"], json!(["last_name"]), "{data:?}");
    assert_eq!(data[1]["changed"], json!([]), "renamed already: {data:?}");
    assert_eq!(data[2]["status"], "invited", "{data:?}");
    assert_eq!(
        data[4]["status"], "active",
        "activated in between: {data:?}"
    );
}
