//! How long an outbox row waits before its next attempt.

use std::time::Duration;

/// Delay before retry number `attempts` (1-based): base doubling, capped at 1 h.
pub fn retry_delay(base: Duration, attempts: i32) -> Duration {
    let factor = 1u32 << attempts.clamp(1, 20).saturating_sub(1);
    base.saturating_mul(factor).min(Duration::from_secs(3600))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delay_doubles_and_is_capped() {
        let base = Duration::from_secs(2);
        assert_eq!(retry_delay(base, 1), Duration::from_secs(2));
        assert_eq!(retry_delay(base, 2), Duration::from_secs(4));
        assert_eq!(retry_delay(base, 5), Duration::from_secs(32));
        assert_eq!(retry_delay(base, 40), Duration::from_secs(3600));
    }
}
