//! The events the worker publishes on `P.events`, and their envelope.
//!
//! Events are CloudEvents with `source = user-lifecycle` and the user (or
//! organization) id as `subject`. No event carries a token.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::Value;
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

/// An event as published (CloudEvents 1.0, structured JSON).
#[derive(Debug, Clone, Serialize)]
pub struct CloudEvent<'a> {
    specversion: &'static str,
    // Unique per event; the relay publishes it as the AMQP message id.
    id: String,
    source: &'static str,
    #[serde(rename = "type")]
    kind: &'static str,
    subject: &'a str,
    time: String,
    datacontenttype: &'static str,
    data: &'a Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    traceparent: Option<&'a str>,
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

    /// The event as published: a CloudEvents 1.0 envelope around its data,
    /// with a fresh id, stamped `time`, carrying `trace` if given.
    pub fn cloudevent<'a>(
        &'a self,
        time: DateTime<Utc>,
        trace: Option<&'a TraceParent>,
    ) -> CloudEvent<'a> {
        CloudEvent {
            specversion: "1.0",
            id: Uuid::new_v4().to_string(),
            source: "user-lifecycle",
            kind: self.kind.as_str(),
            subject: &self.subject,
            time: time.to_rfc3339_opts(SecondsFormat::Millis, true),
            datacontenttype: "application/json",
            data: &self.data,
            traceparent: trace.map(TraceParent::as_str),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cloudevent_has_the_contract_attributes() {
        let e = Event::new(EventType::UserInvited, "u-1", json!({"a": 1}));
        let v = serde_json::to_value(e.cloudevent(Utc::now(), None)).unwrap();
        assert_eq!(v["specversion"], "1.0");
        assert_eq!(v["source"], "user-lifecycle");
        assert_eq!(v["type"], "user.invited");
        assert_eq!(v["subject"], "u-1");
        assert_eq!(v["data"]["a"], 1);
        assert_eq!(v["datacontenttype"], "application/json");
        assert!(
            v.get("traceparent").is_none(),
            "no trace, no attribute: {v}"
        );
        let trace =
            TraceParent::parse("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01").unwrap();
        let traced = serde_json::to_value(e.cloudevent(Utc::now(), Some(&trace))).unwrap();
        assert_eq!(traced["traceparent"], trace.as_str());
        assert_ne!(traced["id"], v["id"], "each publication its own id");
    }
}
