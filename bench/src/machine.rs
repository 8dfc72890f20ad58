//! How busy the whole machine was during a run, from `/proc/stat`.
//!
//! The broker, the database, the SMTP sink and the worker share the
//! machine's cores; a latency that grows while the worker's own work does
//! not is the machine running out of CPU. The share of CPU time not idle
//! over a run says which it is.

/// The machine's CPU time so far, all cores together, in ticks.
#[derive(Debug, Clone, Copy, Default)]
pub struct MachineCpu {
    busy: u64,
    total: u64,
}

impl MachineCpu {
    /// Reads `/proc/stat` now (zero where it cannot be read).
    pub fn now() -> MachineCpu {
        std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|stat| MachineCpu::parse(&stat))
            .unwrap_or_default()
    }

    /// The `cpu` line of a `/proc/stat` text: user, nice, system, idle,
    /// iowait, irq, softirq, steal, …; idle and iowait are not busy.
    fn parse(stat: &str) -> Option<MachineCpu> {
        let line = stat.lines().find(|l| l.starts_with("cpu "))?;
        let ticks: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .take(8)
            .map(|t| t.parse().ok())
            .collect::<Option<_>>()?;
        let total: u64 = ticks.iter().sum();
        let idle = ticks.get(3)? + ticks.get(4)?;
        Some(MachineCpu {
            busy: total - idle,
            total,
        })
    }

    /// The busy share of the CPU time since `earlier`, in percent.
    pub fn busy_pct_since(&self, earlier: MachineCpu) -> f64 {
        let total = self.total.saturating_sub(earlier.total);
        if total == 0 {
            return 0.0;
        }
        self.busy.saturating_sub(earlier.busy) as f64 / total as f64 * 100.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_is_everything_but_idle_and_iowait_between_two_readings() {
        let before = MachineCpu::parse("cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3\n").unwrap();
        let after = MachineCpu::parse("cpu  160 0 80 880 60 0 0 0 0 0\n").unwrap();
        // 90 busy ticks (60 user + 30 system) of 180.
        assert_eq!(after.busy_pct_since(before), 50.0);
        assert_eq!(before.busy_pct_since(before), 0.0, "no time passed");
        assert!(MachineCpu::parse("intr 1 2 3").is_none());
    }
}
