//! What binds an idempotency key to its command.
//!
//! A command id is recorded with a fingerprint of the command it was sent
//! with: its type, its actor and its data. A later delivery with the same
//! id and the same fingerprint is a redelivery, answered with the stored
//! reply; the same id with anything else is another command reusing the
//! key, refused `id_reused` without applying it or showing the stored reply.
//!
//! The data is hashed in a canonical form (object keys sorted at every
//! depth, no whitespace), so the order a sender writes its keys in does not
//! make a redelivery look like another command. (serde_json's map keeps its
//! keys sorted today; the canonical form does not rely on that, so a
//! dependency turning on its `preserve_order` feature changes nothing.)

use serde_json::Value;
use sha2::{Digest, Sha256};
use std::fmt::Write as _;

use super::command::CommandType;
use super::ids::UserId;
use super::reply::{Reason, Rejection};

/// Separates this digest from any other SHA-256 the worker computes, and
/// versions the encoding below.
const DOMAIN: &[u8] = b"user-lifecycle command fingerprint v1\n";

/// SHA-256 over a command's type, actor and canonical data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CommandFingerprint([u8; 32]);

impl CommandFingerprint {
    /// The fingerprint of a command of `kind` sent by `actor` with `data`.
    pub fn of(kind: CommandType, actor: Option<UserId>, data: &Value) -> CommandFingerprint {
        let mut canonical = String::new();
        write_canonical(&mut canonical, data);
        // Neither a type name nor a hyphenated UUID contains a newline, so
        // the three parts cannot run into each other.
        let actor = actor.map(|a| a.to_string()).unwrap_or_default();
        let digest = Sha256::new()
            .chain_update(DOMAIN)
            .chain_update(kind.as_str())
            .chain_update(b"\n")
            .chain_update(actor)
            .chain_update(b"\n")
            .chain_update(canonical)
            .finalize();
        CommandFingerprint(digest.into())
    }

    /// A fingerprint as stored; `None` unless it is 32 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Option<CommandFingerprint> {
        bytes.try_into().ok().map(CommandFingerprint)
    }

    /// The digest, to store.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Whether this command is a redelivery of the one recorded under its
    /// id with `recorded`. A record without a fingerprint (written before
    /// fingerprints were kept) is taken as this command's, as it was then.
    pub fn repeats(&self, recorded: Option<&CommandFingerprint>) -> bool {
        recorded.is_none_or(|r| r == self)
    }
}

/// The refusal of a command whose id was recorded for a different command.
/// It names nothing of that command or its reply.
pub fn id_reused(command_id: &str) -> Rejection {
    Rejection::new(
        Reason::IdReused,
        format!(
            "command id {command_id:?} was used by a different command; \
             send this command with an id of its own"
        ),
    )
}

/// Appends `value` to `out` as JSON with object keys sorted (by their
/// UTF-8 bytes) at every depth and no whitespace.
fn write_canonical(out: &mut String, value: &Value) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(out, key);
                out.push(':');
                write_canonical(out, item);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(out, item);
            }
            out.push(']');
        }
        Value::String(s) => write_string(out, s),
        // `Display` of null, booleans and numbers is their JSON text.
        other => {
            let _ = write!(out, "{other}");
        }
    }
}

/// Appends `s` as a JSON string (serde_json's escaping, which is fixed).
fn write_string(out: &mut String, s: &str) {
    let _ = write!(out, "{}", Value::String(s.to_owned()));
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    const ACTOR: &str = "0b0e6d5c-2f7a-4c1e-9a57-8a0d4c1b2e3f";
    const OTHER: &str = "7d9f3a10-5b2c-4e8d-a1f0-6c3b9e2d4a51";

    fn actor(s: &str) -> Option<UserId> {
        Some(UserId::parse(s, "actor").expect("a user id"))
    }

    fn access() -> Value {
        json!({"user_id": OTHER, "role": "user",
               "permissions": ["cases.view"], "contract_accounts": ["CA-1"]})
    }

    fn fp(kind: CommandType, who: Option<&str>, data: &Value) -> CommandFingerprint {
        CommandFingerprint::of(kind, who.and_then(actor), data)
    }

    #[test]
    fn key_order_does_not_change_it_at_any_depth() {
        let a: Value = serde_json::from_str(
            r#"{"organization_id":"acme","user":{"email":"a@x.example","first_name":"A"},"role":"user"}"#,
        )
        .unwrap();
        let b: Value = serde_json::from_str(
            r#"{ "role": "user", "user": {"first_name": "A", "email": "a@x.example"}, "organization_id": "acme" }"#,
        )
        .unwrap();
        assert_eq!(
            fp(CommandType::InviteUser, Some(ACTOR), &a),
            fp(CommandType::InviteUser, Some(ACTOR), &b)
        );
    }

    #[test]
    fn the_type_changes_it() {
        let data = json!({"user_id": OTHER});
        assert_ne!(
            fp(CommandType::RemoveUser, Some(ACTOR), &data),
            fp(CommandType::ResendActivation, Some(ACTOR), &data)
        );
    }

    #[test]
    fn the_actor_changes_it_and_so_does_having_none() {
        let data = access();
        let by_actor = fp(CommandType::UpdateAccess, Some(ACTOR), &data);
        assert_ne!(by_actor, fp(CommandType::UpdateAccess, Some(OTHER), &data));
        assert_ne!(by_actor, fp(CommandType::UpdateAccess, None, &data));
    }

    #[test]
    fn the_actor_counts_as_the_user_it_names_however_it_is_spelled() {
        let data = access();
        assert_eq!(
            fp(CommandType::UpdateAccess, Some(ACTOR), &data),
            fp(
                CommandType::UpdateAccess,
                Some(&ACTOR.to_uppercase()),
                &data
            )
        );
    }

    #[test]
    fn any_data_value_changes_it() {
        let base = fp(CommandType::UpdateAccess, Some(ACTOR), &access());
        for (pointer, other) in [
            ("/user_id", json!(ACTOR)),
            ("/role", json!("manager")),
            ("/permissions/0", json!("cases.create")),
            ("/contract_accounts", json!("all")),
            ("/role", json!(null)),
        ] {
            let mut data = access();
            *data.pointer_mut(pointer).unwrap() = other;
            assert_ne!(
                base,
                fp(CommandType::UpdateAccess, Some(ACTOR), &data),
                "{pointer}"
            );
        }
        let mut fewer = access();
        fewer.as_object_mut().unwrap().remove("role");
        assert_ne!(base, fp(CommandType::UpdateAccess, Some(ACTOR), &fewer));
        let mut more = access();
        more["locale"] = json!("en");
        assert_ne!(base, fp(CommandType::UpdateAccess, Some(ACTOR), &more));
    }

    #[test]
    fn values_that_print_alike_differ() {
        let kind = CommandType::CheckEmail;
        let pairs = [
            (json!({"email": "1"}), json!({"email": 1})),
            (json!({"email": null}), json!({"email": "null"})),
            (json!({"email": ["a", "b"]}), json!({"email": ["a,b"]})),
            (json!({"a": {"b": 1}}), json!({"a.b": 1})),
            (json!({"a": "x\",\"b\":\"y"}), json!({"a": "x", "b": "y"})),
        ];
        for (a, b) in pairs {
            assert_ne!(fp(kind, None, &a), fp(kind, None, &b), "{a} vs {b}");
        }
    }

    #[test]
    fn a_record_without_a_fingerprint_is_a_redelivery_and_one_with_another_is_not() {
        let this = fp(
            CommandType::CheckEmail,
            None,
            &json!({"email": "a@x.example"}),
        );
        let other = fp(
            CommandType::RemoveUser,
            Some(ACTOR),
            &json!({"user_id": OTHER}),
        );
        assert!(this.repeats(Some(&this)));
        assert!(this.repeats(None));
        assert!(!this.repeats(Some(&other)));
    }

    #[test]
    fn it_round_trips_as_stored_bytes() {
        let this = fp(
            CommandType::CheckEmail,
            None,
            &json!({"email": "a@x.example"}),
        );
        assert_eq!(CommandFingerprint::from_bytes(this.as_bytes()), Some(this));
        assert_eq!(CommandFingerprint::from_bytes(&[0; 31]), None);
    }

    #[test]
    fn the_refusal_is_id_reused_and_names_only_the_id() {
        let r = id_reused("c-1");
        assert_eq!(r.reason, Reason::IdReused);
        assert!(r.message.contains("\"c-1\""), "{}", r.message);
    }

    /// JSON values with objects nested a few levels deep.
    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            "[ -~é€\"\\\\]{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec(("[a-z_]{1,6}", inner), 0..5)
                    .prop_map(|entries| Value::Object(entries.into_iter().collect())),
            ]
        })
    }

    /// `value` with every object's keys inserted in reverse order.
    fn reversed(value: &Value) -> Value {
        match value {
            Value::Object(map) => {
                let mut out = serde_json::Map::new();
                for (k, v) in map.iter().rev() {
                    out.insert(k.clone(), reversed(v));
                }
                Value::Object(out)
            }
            Value::Array(items) => Value::Array(items.iter().map(reversed).collect()),
            other => other.clone(),
        }
    }

    proptest! {
        #[test]
        fn the_canonical_form_is_json_of_the_same_value(data in json_value()) {
            let mut canonical = String::new();
            write_canonical(&mut canonical, &data);
            let back: Value = serde_json::from_str(&canonical).unwrap();
            prop_assert_eq!(back, data);
        }

        #[test]
        fn the_order_keys_arrive_in_never_changes_it(data in json_value()) {
            // Re-parsed from text written in reverse key order, so the map
            // sees its keys arrive the other way round.
            let text = serde_json::to_string(&reversed(&data)).unwrap();
            let again: Value = serde_json::from_str(&text).unwrap();
            prop_assert_eq!(
                fp(CommandType::SyncAccounts, None, &data),
                fp(CommandType::SyncAccounts, None, &again)
            );
        }

        #[test]
        fn different_data_gives_a_different_fingerprint(a in json_value(), b in json_value()) {
            prop_assume!(a != b);
            prop_assert_ne!(
                fp(CommandType::SyncAccounts, None, &a),
                fp(CommandType::SyncAccounts, None, &b)
            );
        }
    }
}
