//! The reply every command gets: applied, rejected with a reason, or invalid.
//!
//! Reason codes are part of the wire contract; upstream services branch on
//! them, so they are an enum here and a fixed string on the wire.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::field_error::FieldError;

/// Why a command was not applied. The wire names are the contract's codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The message or its data does not parse.
    Invalid,
    /// The actor may not do this.
    NotAuthorized,
    /// The target does not exist (or is not visible to the actor).
    NotFound,
    /// Another user already has this email address.
    EmailTaken,
    /// The organization was onboarded already.
    OrganizationExists,
    /// The user has activated already.
    AlreadyActive,
    /// The user was removed.
    Removed,
    /// Repeated sooner than the cooldown allows.
    TooSoon,
    /// The user has not activated yet.
    NotActivated,
    /// The token is unknown, revoked or of another purpose.
    TokenInvalid,
    /// The token is past its expiry.
    TokenExpired,
    /// The token was redeemed already.
    TokenUsed,
    /// The change would leave the organization without an active manager.
    LastManager,
    /// The command id was recorded for a different command (type, actor or
    /// data); nothing is applied and nothing of that command is shown.
    IdReused,
    /// Too many emails to this address lately; the reply's data says when
    /// the next is allowed (`retry_after`).
    RateLimited,
}

impl Reason {
    /// The contract's code.
    pub fn code(self) -> &'static str {
        match self {
            Reason::Invalid => "invalid",
            Reason::NotAuthorized => "not_authorized",
            Reason::NotFound => "not_found",
            Reason::EmailTaken => "email_taken",
            Reason::OrganizationExists => "organization_exists",
            Reason::AlreadyActive => "already_active",
            Reason::Removed => "removed",
            Reason::TooSoon => "too_soon",
            Reason::NotActivated => "not_activated",
            Reason::TokenInvalid => "token_invalid",
            Reason::TokenExpired => "token_expired",
            Reason::TokenUsed => "token_used",
            Reason::LastManager => "last_manager",
            Reason::IdReused => "id_reused",
            Reason::RateLimited => "rate_limited",
        }
    }
}

/// A refusal: the reason code plus a message a person can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The contract's reason code.
    pub reason: Reason,
    /// What is wrong and what to do, without secrets.
    pub message: String,
    /// What the reply's `data` carries (e.g. `retry_after`); empty when `None`.
    pub data: Option<Value>,
}

impl Rejection {
    /// A rejection with `reason` and `message`.
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
            data: None,
        }
    }

    /// The same rejection, answered with `data`.
    pub fn with_data(mut self, data: Value) -> Self {
        self.data = Some(data);
        self
    }
}

impl From<FieldError> for Rejection {
    fn from(e: FieldError) -> Self {
        Rejection::new(Reason::Invalid, e.to_string())
    }
}

/// Outcome of a command as the reply's `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplyStatus {
    /// The command took effect.
    Applied,
    /// A valid command that the rules refuse.
    Rejected,
    /// The message or its data does not parse.
    Invalid,
}

impl ReplyStatus {
    /// The wire name, also the `outcome` label of the metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            ReplyStatus::Applied => "applied",
            ReplyStatus::Rejected => "rejected",
            ReplyStatus::Invalid => "invalid",
        }
    }
}

/// The reply document of the contract.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    /// The command's `id` (absent only when the message had none).
    pub command_id: Option<String>,
    /// applied, rejected or invalid.
    pub status: ReplyStatus,
    /// `ok` or a reason code.
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
    /// Command-specific result.
    pub data: Value,
    /// True when this is the stored reply of an earlier delivery.
    pub duplicate: bool,
}

impl Reply {
    /// The command was applied, with `data`.
    pub fn applied(command_id: &str, data: Value) -> Reply {
        Reply {
            command_id: Some(command_id.to_owned()),
            status: ReplyStatus::Applied,
            code: "ok".to_owned(),
            message: "applied".to_owned(),
            data,
            duplicate: false,
        }
    }

    /// The command was refused for `rejection`.
    pub fn refused(command_id: Option<&str>, rejection: &Rejection) -> Reply {
        let status = if rejection.reason == Reason::Invalid {
            ReplyStatus::Invalid
        } else {
            ReplyStatus::Rejected
        };
        Reply {
            command_id: command_id.map(str::to_owned),
            status,
            code: rejection.reason.code().to_owned(),
            message: rejection.message.clone(),
            data: rejection
                .data
                .clone()
                .unwrap_or_else(|| Value::Object(Default::default())),
            duplicate: false,
        }
    }

    /// The same reply, marked as answering a redelivery.
    pub fn as_duplicate(mut self) -> Reply {
        self.duplicate = true;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reason_codes_match_the_contract() {
        for (reason, code) in [
            (Reason::Invalid, "invalid"),
            (Reason::NotAuthorized, "not_authorized"),
            (Reason::NotFound, "not_found"),
            (Reason::EmailTaken, "email_taken"),
            (Reason::OrganizationExists, "organization_exists"),
            (Reason::AlreadyActive, "already_active"),
            (Reason::Removed, "removed"),
            (Reason::TooSoon, "too_soon"),
            (Reason::NotActivated, "not_activated"),
            (Reason::TokenInvalid, "token_invalid"),
            (Reason::TokenExpired, "token_expired"),
            (Reason::TokenUsed, "token_used"),
            (Reason::LastManager, "last_manager"),
            (Reason::IdReused, "id_reused"),
            (Reason::RateLimited, "rate_limited"),
        ] {
            assert_eq!(reason.code(), code);
            assert_eq!(serde_json::to_value(reason).unwrap(), json!(code));
        }
    }

    #[test]
    fn invalid_rejection_gives_invalid_status_naming_the_field() {
        let r: Rejection = FieldError::new("phone", "not a phone number")
            .within("user")
            .into();
        let reply = Reply::refused(Some("c1"), &r);
        assert_eq!(reply.status, ReplyStatus::Invalid);
        assert_eq!(reply.code, "invalid");
        assert!(reply.message.contains("user.phone"));
    }

    #[test]
    fn reply_serializes_with_every_contract_field() {
        let v = serde_json::to_value(Reply::applied("c1", json!({"x": 1}))).unwrap();
        assert_eq!(
            v,
            json!({"command_id": "c1", "status": "applied", "code": "ok",
                   "message": "applied", "data": {"x": 1}, "duplicate": false})
        );
        let d = serde_json::to_value(Reply::applied("c1", json!({})).as_duplicate()).unwrap();
        assert_eq!(d["duplicate"], json!(true));
    }
}
