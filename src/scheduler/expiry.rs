//! The expiry sweep: invitations nobody activated in time become `expired`.
//!
//! Works in bounded batches, each its own short transaction that skips rows
//! other transactions hold, so commands keep flowing while it runs; the
//! batch size adapts so that a batch holds its locks about 50 ms, and a
//! batch's commit does not wait for the disk (see
//! [`begin_batch`](crate::store::expiry::begin_batch) for why that loses
//! nothing). Each
//! expired invite emits `user.invite_expired` and emails (`invite_expired`)
//! whoever manages the invitee now (see [`crate::domain::expiry_notice`])
//! through the outbox: the managers are read once per batch, and only for
//! the organizations whose inviter no longer manages its invitee.

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::PgPool;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use super::lock::{keys, with_lock};
use crate::domain::event::{Event, EventType};
use crate::domain::expiry_notice::{Recipients, inviter_still_manages, recipients};
use crate::domain::notification::{EmailJob, Template};
use crate::outbox::Wakeup;
use crate::store::StoreError;
use crate::store::expiry::{ExpiredInvite, active_managers, begin_batch, expire_batch};
use crate::store::outbox::{NewOutboxRow, OutboxKind, insert_unclaimed};
use crate::store::payload::Payload;
use crate::store::users::UserRecord;
use crate::telemetry::metrics;

/// What a sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Invitations expired.
    pub expired: u64,
    /// Transactions used.
    pub batches: u32,
    /// The longest single batch transaction (how long it held row locks).
    pub longest_batch: std::time::Duration,
}

fn rows_for(
    invite: &ExpiredInvite,
    managers: &[UserRecord],
    now: chrono::DateTime<Utc>,
) -> Result<Vec<NewOutboxRow>, StoreError> {
    let event = Event::new(
        EventType::UserInviteExpired,
        invite.user_id,
        json!({
            "user_id": invite.user_id,
            "organization_id": invite.organization_id,
            "expired_at": invite.expired_at,
            "invited_by": invite.invited_by,
        }),
    );
    let mut rows = vec![NewOutboxRow {
        kind: OutboxKind::Event,
        payload: Payload::event(event.kind.as_str(), &event.cloudevent(now, None))?,
    }];
    let told: Vec<&UserRecord> = match &invite.invitee {
        None => Vec::new(),
        Some(invitee) => match recipients(invite.inviter.as_ref(), invitee, managers) {
            Recipients::Inviter(inviter) => vec![inviter],
            Recipients::Managers(managers) => managers,
            Recipients::Nobody => Vec::new(),
        },
    };
    if told.is_empty() {
        tracing::info!(
            user_id = %invite.user_id,
            organization_id = %invite.organization_id,
            "no active manager manages the expired invitee; nobody is told"
        );
    }
    for manager in told {
        let job = EmailJob {
            template: Template::InviteExpired,
            locale: manager.locale.clone(),
            to: manager.snapshot.email.as_str().to_owned(),
            to_name: manager.display_name(),
            vars: json!({
                "manager_first_name": manager.first_name,
                "user_first_name": invite.first_name,
                "user_last_name": invite.last_name,
                "user_email": invite.email,
                "organization_name": invite.organization_name,
                "expired_at": crate::handler::email_time(invite.expired_at),
            }),
            token: None,
            user_id: Some(invite.user_id.to_string()),
        };
        rows.push(NewOutboxRow {
            kind: OutboxKind::Email,
            payload: Payload::new(&job)?,
        });
    }
    Ok(rows)
}

/// The organizations whose managers some of `expired` need: those whose
/// inviter no longer manages the invitee (or who have none).
fn organizations_needing_managers(expired: &[ExpiredInvite]) -> Vec<&str> {
    let needed: BTreeSet<&str> = expired
        .iter()
        .filter(|e| {
            e.invitee
                .as_ref()
                .is_some_and(|invitee| !inviter_still_manages(e.inviter.as_ref(), invitee))
        })
        .map(|e| e.organization_id.as_str())
        .collect();
    needed.into_iter().collect()
}

/// How long a sweep transaction aims to hold its row locks.
const BATCH_TARGET: Duration = Duration::from_millis(50);

/// The next batch size: halved after a batch that held its locks longer
/// than `BATCH_TARGET`, grown by half after one that took under half of
/// it, always between 1 and `max`. A loaded machine gets shorter batches,
/// so commands waiting on those rows never wait long.
pub fn next_batch_size(current: i64, max: i64, held: Duration) -> i64 {
    let next = if held > BATCH_TARGET {
        current / 2
    } else if held < BATCH_TARGET / 2 {
        current + current / 2 + 1
    } else {
        current
    };
    next.clamp(1, max.max(1))
}

/// Expires every due invitation, at most `batch` at a time (no lock taken here).
pub async fn sweep(pool: &PgPool, batch: i64, relay: &Wakeup) -> Result<SweepReport, StoreError> {
    let mut report = SweepReport::default();
    let mut limit = batch.max(1);
    // Each batch starts where the last ended (ties included). A row skipped
    // because a command held it is behind that point: the next sweep has it.
    let mut from = DateTime::<Utc>::UNIX_EPOCH;
    loop {
        let now = Utc::now();
        let mut tx = begin_batch(pool).await?;
        let started = std::time::Instant::now();
        let expired = expire_batch(&mut tx, now, from, limit).await?;
        let managers = active_managers(&mut tx, &organizations_needing_managers(&expired)).await?;
        let mut rows = Vec::with_capacity(expired.len() * 2);
        for invite in &expired {
            let managers = managers
                .get(&invite.organization_id)
                .map_or(&[][..], Vec::as_slice);
            rows.extend(rows_for(invite, managers, now)?);
        }
        insert_unclaimed(&mut tx, &rows).await?;
        tx.commit().await?;
        let held = started.elapsed();
        report.longest_batch = report.longest_batch.max(held);
        metrics::expiry_batch(held);
        report.batches += 1;
        report.expired += expired.len() as u64;
        metrics::invites_expired(expired.len() as u64);
        metrics::invites("expired", expired.len() as u64);
        if !expired.is_empty() {
            relay.wake();
        }
        if let Some(last) = expired.iter().map(|e| e.expired_at).max() {
            from = last;
        }
        if (expired.len() as i64) < limit {
            return Ok(report);
        }
        limit = next_batch_size(limit, batch, held);
    }
}

/// One scheduled run: the sweep under the advisory lock, with metrics.
pub async fn run(pool: &PgPool, batch: i64, relay: &Arc<Wakeup>) -> Option<SweepReport> {
    let started = std::time::Instant::now();
    let outcome = with_lock(pool, keys::EXPIRY, || sweep(pool, batch, relay)).await;
    metrics::scheduler_duration("expiry", started.elapsed());
    match outcome {
        Ok(Some(report)) => {
            if report.expired > 0 {
                tracing::info!(
                    expired = report.expired,
                    batches = report.batches,
                    "expiry sweep done"
                );
            }
            metrics::scheduler_run("expiry", "ok");
            Some(report)
        }
        Ok(None) => {
            tracing::debug!("expiry sweep running elsewhere; skipped");
            metrics::scheduler_run("expiry", "skipped");
            None
        }
        Err(e) => {
            tracing::error!(error = %e, "expiry sweep failed");
            metrics::scheduler_run("expiry", "error");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slow_batch_halves_the_next_and_a_quick_one_grows_it_up_to_the_setting() {
        let ms = Duration::from_millis;
        assert_eq!(next_batch_size(500, 500, ms(300)), 250);
        assert_eq!(next_batch_size(1, 500, ms(300)), 1, "never below one");
        assert_eq!(next_batch_size(100, 500, ms(10)), 151);
        assert_eq!(
            next_batch_size(400, 500, ms(10)),
            500,
            "never above the setting"
        );
        assert_eq!(
            next_batch_size(300, 500, ms(40)),
            300,
            "on target: unchanged"
        );
    }
}
