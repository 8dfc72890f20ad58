//! A property over generated command sequences: handling a sequence as one
//! batch gives every command the answer it gets when the same sequence is
//! handled one command at a time, and leaves the same users behind. Both
//! run on copies of one database (PostgreSQL's `TEMPLATE`), so they start
//! from the same state, tokens included.

use crate::helpers::batch::{Batch, handler};
use crate::helpers::{PG_BASE, TestWorker, invite_data, user_id};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Value, json};
use sqlx::{Executor, PgPool};
use user_lifecycle::broker::client::CommandClient;
use user_lifecycle::domain::envelope;
use user_lifecycle::handler::{Handled, Handler};

/// The people of the generated commands: who acts, on whom, which address.
struct Cast {
    /// Active manager of `acme`.
    boss: String,
    /// Active user of `acme`.
    alice: String,
    /// Invited user of `acme`, with the token of its activation email.
    ivy: String,
    ivy_token: String,
    /// Active manager of `beta`.
    bob: String,
}

/// The addresses of the commands that name one: a new one (the case's
/// own, so that a later command may find it invited), then the cast's.
fn email(value: usize, case: usize) -> String {
    match value {
        0 => format!("new{case}@acme.example"),
        1 => "alice@acme.example".to_owned(),
        2 => "ivy@acme.example".to_owned(),
        3 => "boss@beta.example".to_owned(),
        _ => "Nobody@ACME.example".to_owned(),
    }
}

/// One generated command: its kind and the indices it picks its actor,
/// target and values with.
#[derive(Debug, Clone, Copy)]
struct Step {
    kind: u8,
    actor: usize,
    target: usize,
    value: usize,
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    // The invited user acts, and is activated, more often than chance
    // would have it: what a batch must see change between two commands.
    let actor = prop::sample::select(vec![0usize, 1, 2, 2, 3, 4]);
    let kind = prop::sample::select(vec![0u8, 0, 1, 2, 2, 3, 4, 4, 5, 6, 7, 8, 9]);
    let value = prop::sample::select(vec![0usize, 0, 1, 2, 3, 4]);
    let step = (kind, actor, 0usize..4, value).prop_map(|(kind, actor, target, value)| Step {
        kind,
        actor,
        target,
        value,
    });
    proptest::collection::vec(step, 2..9)
}

impl Cast {
    fn actor(&self, i: usize) -> Option<&str> {
        [
            Some(self.boss.as_str()),
            Some(&self.alice),
            Some(&self.ivy),
            Some(&self.bob),
            None,
        ][i]
    }

    fn target(&self, i: usize) -> &str {
        [&self.boss, &self.alice, &self.ivy, &self.bob][i]
    }

    /// The envelopes of `steps`; kind 9 repeats an earlier envelope.
    fn envelopes(&self, steps: &[Step], case: usize) -> Vec<Value> {
        let mut out: Vec<Value> = Vec::with_capacity(steps.len());
        for s in steps {
            let actor = self.actor(s.actor);
            let target = self.target(s.target);
            let email = email(s.value, case);
            let email = email.as_str();
            let envelope = match s.kind {
                0 => CommandClient::envelope("check_email", json!({"email": email}), actor),
                1 => {
                    let last_name = ["Ash", "Birch"][s.value % 2];
                    let data = json!({"user_id": target, "last_name": last_name});
                    CommandClient::envelope("update_profile", data, actor)
                }
                // By the manager: a refused invite teaches nothing the others don't.
                2 => CommandClient::envelope(
                    "invite_user",
                    invite_data("acme", email),
                    Some(&self.boss),
                ),
                3 => {
                    CommandClient::envelope("request_password_reset", json!({"email": email}), None)
                }
                4 => {
                    let token = if s.value < 3 {
                        self.ivy_token.as_str()
                    } else {
                        "bogus-token"
                    };
                    CommandClient::envelope("activate_user", json!({"token": token}), None)
                }
                5 => {
                    let role = ["user", "manager"][s.value % 2];
                    let data = json!({"user_id": target, "role": role});
                    CommandClient::envelope("update_access", data, actor)
                }
                6 => CommandClient::envelope("remove_user", json!({"user_id": target}), actor),
                7 => {
                    CommandClient::envelope("resend_activation", json!({"user_id": target}), actor)
                }
                8 => CommandClient::envelope(
                    "update_profile",
                    json!({"user_id": target, "phone": "not a phone"}),
                    actor,
                ),
                _ => match out.get(s.value % out.len().max(1)) {
                    Some(earlier) => earlier.clone(),
                    None => CommandClient::envelope("check_email", json!({"email": email}), actor),
                },
            };
            out.push(envelope);
        }
        out
    }
}

/// A reply's status, code and data, with new ids and times masked: what a
/// command's answer is, whichever copy gave it.
fn answer(handled: &Handled) -> (String, String, Value) {
    let reply = match handled {
        Handled::Processed { reply, .. } | Handled::Duplicate(reply) | Handled::IdReused(reply) => {
            reply
        }
    };
    (
        reply.status.as_str().to_owned(),
        reply.code.clone(),
        masked(&reply.data),
    )
}

/// `value` with every id and timestamp replaced by a placeholder.
fn masked(value: &Value) -> Value {
    match value {
        Value::String(s) if uuid::Uuid::parse_str(s).is_ok() => json!("<id>"),
        Value::String(s) if chrono::DateTime::parse_from_rfc3339(s).is_ok() => json!("<time>"),
        Value::Array(items) => Value::Array(items.iter().map(masked).collect()),
        Value::Object(map) => map.iter().map(|(k, v)| (k.clone(), masked(v))).collect(),
        other => other.clone(),
    }
}

/// The users as they are, by email: status, role, names, access.
async fn users(pool: &PgPool) -> Vec<(String, String, String, String, String)> {
    sqlx::query_as(
        "SELECT email, status, role, last_name,
                permissions::text || coalesce(contract_accounts::text, '*')
         FROM users ORDER BY email",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

/// A new database copied from `template`, and a pool on it.
async fn copy_of(admin: &PgPool, template: &str) -> (String, PgPool) {
    let name = format!(
        "ul_test_copy_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    admin
        .execute(sqlx::AssertSqlSafe(format!(
            "CREATE DATABASE \"{name}\" TEMPLATE \"{template}\""
        )))
        .await
        .unwrap();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(&format!("{PG_BASE}/{name}"))
        .await
        .unwrap();
    (name, pool)
}

async fn drop_copy(admin: &PgPool, name: &str, pool: PgPool) {
    pool.close().await;
    admin
        .execute(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE \"{name}\" WITH (FORCE)"
        )))
        .await
        .unwrap();
}

/// Runs `bodies` alone, one after another, on one copy and as one batch
/// on the other; the answers and the users left must be the same.
async fn same_as_alone(
    admin: &PgPool,
    template: &str,
    bodies: &[Value],
) -> Result<(), TestCaseError> {
    let (alone_db, alone_pool) = copy_of(admin, template).await;
    let (batch_db, batch_pool) = copy_of(admin, template).await;
    let alone_handler: Handler = handler(&alone_pool);
    let mut alone = Vec::with_capacity(bodies.len());
    for body in bodies {
        let raw = serde_json::to_vec(body).unwrap();
        let parsed = envelope::parse(&raw).expect("a valid envelope");
        let handled = alone_handler.handle(&parsed, None, &raw).await;
        alone.push(answer(&handled.expect("handled alone")));
    }
    let batched: Vec<(String, String, Value)> = Batch::of(bodies)
        .handle(&handler(&batch_pool))
        .await
        .iter()
        .map(|r| answer(r.as_ref().expect("handled in the batch")))
        .collect();
    let (alone_users, batch_users) = (users(&alone_pool).await, users(&batch_pool).await);
    drop_copy(admin, &alone_db, alone_pool).await;
    drop_copy(admin, &batch_db, batch_pool).await;
    prop_assert_eq!(&batched, &alone, "answers of {:#?}", bodies);
    prop_assert_eq!(&batch_users, &alone_users, "users after {:#?}", bodies);
    Ok(())
}

#[test]
fn a_batch_answers_and_leaves_what_its_commands_one_at_a_time_do() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (w, cast) = rt.block_on(async {
        let (mut w, boss) = TestWorker::with_active_manager(&[]).await;
        let alice = w.active_user(&boss, "acme", "alice@acme.example").await;
        let ivy = user_id(&w.invite(&boss, "acme", "ivy@acme.example").await);
        let ivy_token = w.smtp.mail_to("ivy@acme.example").await.token("/activate");
        let bob = w.onboard_active_manager("beta", "boss@beta.example").await;
        w.outbox_drained(crate::helpers::WAIT).await;
        w.terminate().await;
        let cast = Cast {
            boss,
            alice,
            ivy,
            ivy_token,
            bob,
        };
        (w, cast)
    });
    let admin = rt.block_on(async {
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect(&format!("{PG_BASE}/postgres"))
            .await
            .unwrap()
    });
    let mut runner = TestRunner::new(Config {
        cases: 40,
        failure_persistence: None,
        ..Config::default()
    });
    // Each case invites addresses of its own: a case numbers them.
    let round = std::sync::atomic::AtomicUsize::new(0);
    let result = runner.run(&steps(), |steps| {
        let case = round.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let bodies = cast.envelopes(&steps, case);
        rt.block_on(same_as_alone(&admin, &w.database, &bodies))
    });
    // The worker's database goes with `w`, once nothing copies it.
    rt.block_on(admin.close());
    drop(w);
    if let Err(e) = result {
        panic!("{e}");
    }
}
