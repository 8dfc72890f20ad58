//! What a command leaves behind besides state: audit records, events,
//! emails, a dead letter.
//!
//! Collected in memory while the command runs and written to the outbox in
//! its transaction (the audit trail too, in one statement with its
//! neighbours'). On a rejection only what the rules say a refusal emits
//! (e.g. `user.password_reset_blocked`) is kept.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::domain::command::CommandType;
use crate::domain::event::{Event, EventType};
use crate::domain::notification::EmailJob;
use crate::domain::redact::redact_body;
use crate::domain::trace::TraceParent;
use crate::handler::{FunnelStep, ReplyAddress};
use crate::store::StoreError;
use crate::store::audit::{AuditEntry, AuditRow};
use crate::store::outbox::{NewOutboxRow, OutboxKind};
use crate::store::payload::{DeadLetterRow, Payload};

/// Events, emails and dead letters a command produces.
#[derive(Debug, Default)]
pub struct Effects {
    events: Vec<Event>,
    emails: Vec<EmailJob>,
    on_rejection: Vec<Event>,
    funnel: Vec<FunnelStep>,
    audit: Vec<AuditRow>,
    dead_letter: Option<DeadLetterRow>,
}

impl Effects {
    /// Publishes `kind` about `subject` once the command commits.
    pub fn event(&mut self, kind: EventType, subject: impl ToString, data: Value) {
        self.events.push(Event::new(kind, subject, data));
    }

    /// Publishes `kind` even though the command is rejected.
    pub fn event_on_rejection(&mut self, kind: EventType, subject: impl ToString, data: Value) {
        self.on_rejection.push(Event::new(kind, subject, data));
    }

    /// Records an invite-funnel step for the metrics.
    pub fn funnel(&mut self, step: FunnelStep) {
        self.funnel.push(step);
    }

    /// The funnel steps recorded (none after a rejection).
    pub fn funnel_steps(&self) -> Vec<FunnelStep> {
        self.funnel.clone()
    }

    /// Appends `entry` to the audit trail with the command's other rows.
    pub fn audit(&mut self, entry: AuditEntry<'_>) {
        self.audit.push(entry.into());
    }

    /// The audit rows to write (taken out).
    pub fn take_audit(&mut self) -> Vec<AuditRow> {
        std::mem::take(&mut self.audit)
    }

    /// Sends `job` once the command commits.
    pub fn email(&mut self, job: EmailJob) {
        self.emails.push(job);
    }

    /// Copies the invalid message to the dead-letter exchange with `error`,
    /// keeping where its reply went so a replay after a fix is answered.
    /// The copy is stored with its secrets redacted.
    pub fn dead_letter(
        &mut self,
        kind: CommandType,
        error: &str,
        raw: &[u8],
        reply: Option<&ReplyAddress>,
    ) {
        self.dead_letter = Some(DeadLetterRow {
            reason: "invalid_data".to_owned(),
            error: format!("{}: {error}", kind.as_str()),
            body_base64: STANDARD.encode(redact_body(raw)),
            reply_to: reply.map(|r| r.reply_to.clone()),
            correlation_id: reply.map(|r| r.correlation_id.clone()),
        });
    }

    /// Keeps only what a rejection emits.
    pub fn discard_for_rejection(&mut self) {
        self.events = std::mem::take(&mut self.on_rejection);
        self.emails.clear();
        self.funnel.clear();
        self.audit.clear();
    }

    /// The outbox rows, events stamped with `now`.
    pub fn into_rows(
        self,
        now: DateTime<Utc>,
        trace: Option<&TraceParent>,
    ) -> Result<Vec<NewOutboxRow>, StoreError> {
        let mut rows = Vec::with_capacity(self.events.len() + self.emails.len() + 2);
        for e in &self.events {
            rows.push(NewOutboxRow {
                kind: OutboxKind::Event,
                payload: Payload::event(e.kind.as_str(), &e.cloudevent(now, trace))?,
            });
        }
        for job in &self.emails {
            rows.push(NewOutboxRow {
                kind: OutboxKind::Email,
                payload: Payload::new(job)?,
            });
        }
        if let Some(dead) = &self.dead_letter {
            rows.push(NewOutboxRow {
                kind: OutboxKind::DeadLetter,
                payload: Payload::new(dead)?,
            });
        }
        Ok(rows)
    }
}
