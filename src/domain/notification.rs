//! The emails of the contract: which template, to whom, with what.
//!
//! An `EmailJob` is written to the outbox in the command's transaction and
//! rendered at delivery. Its `token` is the only place a clear token lives,
//! and the outbox drops it once the email is delivered (or given up).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The contract's email templates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Template {
    /// Invitation and resend; link `PORTAL_URL/activate?token=T`.
    Activation,
    /// Password reset; link `PORTAL_URL/reset-password?token=T`.
    PasswordReset,
    /// To the manager whose invitation expired.
    InviteExpired,
}

impl Template {
    /// Every template, for start-up checks.
    pub const ALL: [Template; 3] = [
        Template::Activation,
        Template::PasswordReset,
        Template::InviteExpired,
    ];

    /// The template's file name stem.
    pub fn as_str(self) -> &'static str {
        match self {
            Template::Activation => "activation",
            Template::PasswordReset => "password_reset",
            Template::InviteExpired => "invite_expired",
        }
    }

    /// The portal path the token link points to, for templates that carry one.
    pub fn link_path(self) -> Option<&'static str> {
        match self {
            Template::Activation => Some("/activate"),
            Template::PasswordReset => Some("/reset-password"),
            Template::InviteExpired => None,
        }
    }
}

/// One email to send.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmailJob {
    /// Which template.
    pub template: Template,
    /// Recipient's locale (falls back to `en`).
    pub locale: String,
    /// Recipient address.
    pub to: String,
    /// Recipient display name.
    pub to_name: String,
    /// The template's variables (what users typed is escaped at render).
    pub vars: Value,
    /// The clear token for the link; removed from the outbox after delivery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The user the email is about (for logs; never the address).
    pub user_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn job_round_trips_through_its_outbox_payload() {
        let job = EmailJob {
            template: Template::PasswordReset,
            locale: "nl".into(),
            to: "a@example.com".into(),
            to_name: "Ann".into(),
            vars: json!({"first_name": "Ann"}),
            token: Some("t".into()),
            user_id: Some("u".into()),
        };
        let back: EmailJob = serde_json::from_value(serde_json::to_value(&job).unwrap()).unwrap();
        assert_eq!(back, job);
        let mut stripped = serde_json::to_value(&job).unwrap();
        stripped.as_object_mut().unwrap().remove("token");
        let back: EmailJob = serde_json::from_value(stripped).unwrap();
        assert_eq!(back.token, None);
    }
}
