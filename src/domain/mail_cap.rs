//! The daily cap on the emails anyone can make the worker send to one user.
//!
//! `request_password_reset` is public and `resend_activation` is a
//! manager's; each is held back only by `RESEND_COOLDOWN`, so either could
//! mail one address once a minute, forever. Every token issued to a user
//! (its invitation, each resend, each reset) is one such email: at most
//! `cap` of them in any 24 hours, the next refused `rate_limited` with the
//! time it will be allowed.

use chrono::{DateTime, Duration, Utc};
use serde_json::json;

use super::reply::{Reason, Rejection};

/// The span the cap counts over.
pub fn window() -> Duration {
    Duration::hours(24)
}

/// May one more email go to a user who was sent one at each of `issued`
/// (any order; older ones are ignored)? Allowed while fewer than `cap`
/// were issued after `now - window()`; otherwise `Err` holds the first
/// instant at which one more is allowed: when enough of them have left
/// the window. A `cap` of 0 allows none (for ever: `DateTime::MAX_UTC`).
pub fn next_allowed(
    issued: &[DateTime<Utc>],
    now: DateTime<Utc>,
    cap: u32,
) -> Result<(), DateTime<Utc>> {
    let since = now - window();
    let mut recent: Vec<DateTime<Utc>> = issued.iter().copied().filter(|t| *t > since).collect();
    let cap = cap as usize;
    if recent.len() < cap {
        return Ok(());
    }
    if cap == 0 {
        return Err(DateTime::<Utc>::MAX_UTC);
    }
    recent.sort_unstable();
    // Once the (len - cap + 1) oldest have left, cap - 1 remain.
    Err(recent[recent.len() - cap] + window())
}

/// [`next_allowed`] as the command's answer: `rate_limited`, with
/// `retry_after` (RFC 3339, UTC) in the reply's data.
pub fn check_mail_cap(
    issued: &[DateTime<Utc>],
    now: DateTime<Utc>,
    cap: u32,
) -> Result<(), Rejection> {
    next_allowed(issued, now, cap).map_err(|retry_after| {
        let at = retry_after.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        Rejection::new(
            Reason::RateLimited,
            format!(
                "this address was sent {cap} activation or password reset emails in the last 24 hours; try again after {at}"
            ),
        )
        .with_data(json!({ "retry_after": at }))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t0() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-03-01T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn the_cap_counts_the_last_24_hours_only() {
        let now = t0();
        let h = Duration::hours;
        assert_eq!(next_allowed(&[], now, 2), Ok(()));
        assert_eq!(next_allowed(&[now - h(1)], now, 2), Ok(()));
        assert_eq!(
            next_allowed(&[now - h(1), now - h(3)], now, 2),
            Err(now - h(3) + h(24)),
            "the older of the two leaves first"
        );
        assert_eq!(
            next_allowed(&[now - h(25), now - h(24), now - h(1)], now, 2),
            Ok(()),
            "exactly 24 hours ago is outside the window"
        );
        assert_eq!(next_allowed(&[], now, 0), Err(DateTime::<Utc>::MAX_UTC));
    }

    #[test]
    fn a_refusal_is_rate_limited_with_retry_after_in_its_data() {
        let now = t0();
        let r = check_mail_cap(&[now - Duration::hours(2)], now, 1).unwrap_err();
        assert_eq!(r.reason, Reason::RateLimited);
        assert_eq!(r.data, Some(json!({"retry_after": "2026-03-02T10:00:00Z"})));
        assert!(r.message.contains("2026-03-02T10:00:00Z"), "{}", r.message);
    }

    fn history() -> impl Strategy<Value = (Vec<i64>, i64, u32)> {
        // Issue times as seconds around "now", within three days before it.
        (
            proptest::collection::vec(-3 * 86_400i64..=0, 0..30),
            0i64..86_400,
            1u32..8,
        )
    }

    proptest! {
        #[test]
        fn retry_after_is_the_first_instant_that_is_allowed((offsets, _, cap) in history()) {
            let now = t0();
            let issued: Vec<_> = offsets.iter().map(|s| now + Duration::seconds(*s)).collect();
            if let Err(at) = next_allowed(&issued, now, cap) {
                prop_assert!(at > now && at <= now + window());
                prop_assert_eq!(next_allowed(&issued, at, cap), Ok(()));
                prop_assert!(next_allowed(&issued, at - Duration::milliseconds(1), cap).is_err());
            }
        }

        #[test]
        fn no_24_hours_ever_hold_more_than_cap_emails((attempts, step, cap) in history()) {
            // Requests at random instants, each sent only when allowed.
            let start = t0();
            let mut at: Vec<_> = attempts.iter().map(|s| start - Duration::seconds(*s)).collect();
            at.sort();
            at.push(*at.last().unwrap_or(&start) + Duration::seconds(step));
            let mut sent: Vec<DateTime<Utc>> = Vec::new();
            for now in at {
                if next_allowed(&sent, now, cap).is_ok() {
                    sent.push(now);
                }
            }
            for first in &sent {
                let within = sent.iter().filter(|t| **t >= *first && **t < *first + window()).count();
                prop_assert!(within <= cap as usize, "{} emails in 24 h from {}", within, first);
            }
        }
    }
}
