//! The events the worker publishes on `P.events`, and their envelope.
//!
//! Events are CloudEvents with `source = user-lifecycle` and the user (or
//! organization) id as `subject`. No event carries a token.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

use super::trace::TraceParent;

/// The contract's event types; the routing key is the type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// An organization and its first manager were created.
    OrganizationOnboarded,
    /// An organization's accounts were upserted.
    AccountsSynced,
    /// A user was invited.
    UserInvited,
    /// The activation email was sent again with a new token.
    UserActivationResent,
    /// A user activated its account.
    UserActivated,
    /// An invitation expired unactivated.
    UserInviteExpired,
    /// A password reset email was sent.
    UserPasswordResetRequested,
    /// A password reset was refused because the user is not active.
    UserPasswordResetBlocked,
    /// Names, phone, country or locale changed.
    UserProfileUpdated,
    /// Role, permissions or account access changed.
    UserAccessUpdated,
    /// A user's portal access ended.
    UserRemoved,
}

impl EventType {
    /// The wire name (and routing key).
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::OrganizationOnboarded => "organization.onboarded",
            EventType::AccountsSynced => "organization.accounts_synced",
            EventType::UserInvited => "user.invited",
            EventType::UserActivationResent => "user.activation_resent",
            EventType::UserActivated => "user.activated",
            EventType::UserInviteExpired => "user.invite_expired",
            EventType::UserPasswordResetRequested => "user.password_reset_requested",
            EventType::UserPasswordResetBlocked => "user.password_reset_blocked",
            EventType::UserProfileUpdated => "user.profile_updated",
            EventType::UserAccessUpdated => "user.access_updated",
            EventType::UserRemoved => "user.removed",
        }
    }
}

/// An event about to be stored in the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// What happened.
    pub kind: EventType,
    /// The user id (or organization id) it is about.
    pub subject: String,
    /// Event-specific data; never a token.
    pub data: Value,
}

impl Event {
    /// An event of `kind` about `subject`.
    pub fn new(kind: EventType, subject: impl ToString, data: Value) -> Event {
        Event {
            kind,
            subject: subject.to_string(),
            data,
        }
    }

    /// The CloudEvents document, with a fresh id, as published.
    pub fn to_cloudevent(&self, time: DateTime<Utc>, trace: Option<&TraceParent>) -> Value {
        let mut event = json!({
            "specversion": "1.0",
            "id": Uuid::new_v4().to_string(),
            "source": "user-lifecycle",
            "type": self.kind.as_str(),
            "subject": self.subject,
            "time": time.to_rfc3339_opts(SecondsFormat::Millis, true),
            "datacontenttype": "application/json",
            "data": self.data,
        });
        if let (Some(trace), Value::Object(map)) = (trace, &mut event) {
            map.insert(
                "traceparent".into(),
                Value::String(trace.as_str().to_owned()),
            );
        }
        event
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cloudevent_has_the_contract_attributes() {
        let e = Event::new(EventType::UserInvited, "u-1", json!({"a": 1}));
        let v = e.to_cloudevent(Utc::now(), None);
        assert_eq!(v["specversion"], "1.0");
        assert_eq!(v["source"], "user-lifecycle");
        assert_eq!(v["type"], "user.invited");
        assert_eq!(v["subject"], "u-1");
        assert_eq!(v["data"]["a"], 1);
    }
}
