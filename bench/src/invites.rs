//! The figures of an end-to-end run (N commands published to the running
//! worker, timed until every reply and every email has arrived; see
//! `runner`), named for the `invite_user` runs they were first made for.

use serde::Serialize;

/// p50, p95 and p99 of a latency, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
}

impl Percentiles {
    /// Nearest-rank percentiles of `samples` (milliseconds).
    pub fn of(mut samples: Vec<f64>) -> Percentiles {
        if samples.is_empty() {
            return Percentiles::default();
        }
        samples.sort_by(f64::total_cmp);
        let at = |q: f64| {
            samples[((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len()) - 1]
        };
        Percentiles {
            p50: at(0.50),
            p95: at(0.95),
            p99: at(0.99),
        }
    }
}

/// What one run measured (of `invite_user` commands, or of a workload's).
#[derive(Debug, Clone, Default, Serialize)]
pub struct InviteFigures {
    /// Commands published.
    pub commands: usize,
    /// Rate offered (commands/s), or null for as fast as possible.
    pub offered_per_s: Option<f64>,
    /// Commands done end to end per second: first publish to the last reply
    /// or email, whichever came later.
    pub commands_per_s: f64,
    /// Commands answered per second, first publish to last reply.
    pub replies_per_s: f64,
    /// Emails delivered per second, first publish to last email (0 in a
    /// run that sends none).
    pub emails_per_s: f64,
    /// Publish → reply.
    pub reply_ms: Percentiles,
    /// Publish → email at the SMTP server.
    pub email_ms: Percentiles,
    /// The worker's peak resident memory during the run.
    pub peak_rss_mib: f64,
    /// The worker's CPU seconds per 1,000 commands.
    pub cpu_s_per_1000: f64,
    /// How busy the whole machine's CPU was during the run, in percent.
    pub machine_busy_pct: f64,
    /// The share of the worker's batches written as one statement that
    /// commits on its own (`handler::one_statement`), in percent.
    pub one_statement_pct: f64,
    /// Replies other than `applied` (should be 0 for invites; a workload
    /// with refusals expects its own count).
    pub not_applied: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let p = Percentiles::of((1..=100).map(f64::from).collect());
        assert_eq!((p.p50, p.p95, p.p99), (50.0, 95.0, 99.0));
        assert_eq!(Percentiles::of(vec![]).p99, 0.0);
        assert_eq!(Percentiles::of(vec![7.0]).p50, 7.0);
    }
}
