//! The benchmark's figures: one table for people, one JSON object for tools.

use serde::Serialize;

use crate::db_reads::ReadsPerCommand;
use crate::expiry::ExpiryFigures;
use crate::invites::{InviteFigures, Percentiles};
use crate::workloads::{MIX_CPU_VS_SINGLE, MIX_REPLY_P99_MS, Workload};

/// The machine's raw limits.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Raw {
    /// Persistent messages consumed and acked per second (quorum queue, no work).
    pub consume_ack_per_s: f64,
    /// Single-row insert transactions per second on the worker's connection count.
    pub insert_tx_per_s: f64,
    /// Commands per second a command's AMQP traffic alone allows (publish,
    /// consume, reply and event published with confirms, ack; no work).
    pub command_messaging_per_s: f64,
    /// Publish to reply of that traffic alone at the latency run's rate:
    /// the floor under the worker's latency on this machine, this run.
    pub command_messaging_reply_ms: Option<Percentiles>,
}

/// The worker process itself.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Worker {
    /// Start to `/readyz` 200 on a migrated database.
    pub start_to_ready_ms: f64,
    /// Resident memory when idle, ready.
    pub idle_rss_mib: f64,
    /// Resident memory when idle again after the invite runs: what a worker
    /// that has handled a burst keeps (allocator arenas, the phone-number
    /// metadata loaded on first use).
    pub idle_after_runs_rss_mib: f64,
    /// Rows PostgreSQL read for the worker over every run (and the
    /// workloads' setup), per command sent (`None` if its backends had not
    /// gone 5 s after it stopped).
    pub db_reads_per_command: Option<ReadsPerCommand>,
}

/// One workload's throughput run (and for `single` and `mix` its run at
/// the offered rate), with its ratios to `single`'s in the same run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WorkloadFigures {
    /// The throughput run's figures (as `invite`'s).
    #[serde(flatten)]
    pub run: InviteFigures,
    /// Organizations the commands went to.
    pub organizations: usize,
    /// Replies the workload expects other than `applied` (its refusals).
    pub expected_not_applied: usize,
    /// Replies marked as a duplicate.
    pub duplicate_replies: usize,
    /// Emails the run waited for (one per applied invite).
    pub emails: usize,
    /// The run offered at `--rate` (`single` and `mix`).
    pub latency: Option<InviteFigures>,
    /// Commands/s end to end ÷ `single`'s; null when `single` did not run.
    pub vs_single: Option<f64>,
    /// Worker CPU s per 1,000 commands ÷ `single`'s; null when `single` did not run.
    pub cpu_vs_single: Option<f64>,
}

/// The workloads that ran, by name.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Workloads {
    /// One manager's invites (the same run as `invite` and `latency`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub single: Option<WorkloadFigures>,
    /// Invites interleaved over many organizations' managers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub managers: Option<WorkloadFigures>,
    /// Four command types over the organizations, a set share refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mix: Option<WorkloadFigures>,
    /// An earlier run published again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duplicates: Option<WorkloadFigures>,
}

impl Workloads {
    /// The slot of `workload`.
    pub fn slot(&mut self, workload: Workload) -> &mut Option<WorkloadFigures> {
        match workload {
            Workload::Single => &mut self.single,
            Workload::Managers => &mut self.managers,
            Workload::Mix => &mut self.mix,
            Workload::Duplicates => &mut self.duplicates,
        }
    }

    /// Those other than `single` that ran, in their order.
    fn others(&self) -> impl Iterator<Item = (Workload, &WorkloadFigures)> {
        [
            (Workload::Managers, &self.managers),
            (Workload::Mix, &self.mix),
            (Workload::Duplicates, &self.duplicates),
        ]
        .into_iter()
        .filter_map(|(w, f)| f.as_ref().map(|f| (w, f)))
    }

    /// Sets every workload's ratios to `single`'s (none without `single`).
    pub fn compare_with_single(&mut self) {
        let single = self
            .single
            .as_ref()
            .map(|s| (s.run.commands_per_s, s.run.cpu_s_per_1000));
        for workload in Workload::ALL {
            if let Some(figures) = self.slot(workload) {
                let per = |value: f64, of: f64| (of > 0.0).then(|| value / of);
                figures.vs_single =
                    single.and_then(|(rate, _)| per(figures.run.commands_per_s, rate));
                figures.cpu_vs_single =
                    single.and_then(|(_, cpu)| per(figures.run.cpu_s_per_1000, cpu));
            }
        }
    }
}

/// Everything one run measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Raw limits.
    pub raw: Raw,
    /// The worker process.
    pub worker: Worker,
    /// `invite_user` as fast as the worker goes.
    pub invite: InviteFigures,
    /// `invite_user` at an offered rate.
    pub latency: Option<InviteFigures>,
    /// The expiry sweep.
    pub expiry: Option<ExpiryFigures>,
    /// Each workload's throughput run (`single` is `invite` and `latency` again).
    pub workloads: Workloads,
}

fn ratio(value: f64, limit: f64) -> String {
    if limit > 0.0 {
        format!("{:.1}%", value / limit * 100.0)
    } else {
        "-".into()
    }
}

/// A figure in whole units.
fn whole(value: f64) -> String {
    format!("{value:.0}")
}

/// A figure to a tenth.
fn tenths(value: f64) -> String {
    format!("{value:.1}")
}

/// A latency's percentiles as `p50 / p95 / p99`.
fn p50_p95_p99(ms: &Percentiles) -> String {
    format!("{:.1} / {:.1} / {:.1}", ms.p50, ms.p95, ms.p99)
}

/// The table as it is built: one row a figure, laid out once all are in
/// so that the figure column is as wide as its longest name.
#[derive(Default)]
struct Table {
    /// Figure, value, target, and the value as a share of a raw rate.
    rows: Vec<[String; 4]>,
}

impl Table {
    /// A row that is not compared with a raw rate.
    fn row(&mut self, figure: impl Into<String>, value: String, target: &str) {
        self.push(figure, value, target, String::new());
    }

    /// A rate in whole units per second, with its share of the raw rate `limit`.
    fn rate(&mut self, figure: impl Into<String>, per_s: f64, target: &str, limit: f64) {
        self.push(figure, whole(per_s), target, ratio(per_s, limit));
    }

    fn push(&mut self, figure: impl Into<String>, value: String, target: &str, vs_raw: String) {
        self.rows
            .push([figure.into(), value, target.to_owned(), vs_raw]);
    }

    fn render(self) -> String {
        let width = self.rows.iter().map(|r| r[0].len()).max().unwrap_or(0);
        let mut out = format!(
            "{:width$}  {:>24}  {:>24}  {:>8}\n",
            "figure", "value", "target", "vs raw"
        );
        for [figure, value, target, vs] in self.rows {
            out.push_str(&format!(
                "{figure:width$}  {value:>24}  {target:>24}  {vs:>8}\n"
            ));
        }
        out
    }
}

impl Report {
    /// The report as one human-readable table.
    pub fn table(&self) -> String {
        let mut table = Table::default();
        self.raw_and_worker_rows(&mut table);
        self.invite_rows(&mut table);
        if let Some(latency) = &self.latency {
            self.latency_rows(&mut table, latency);
        }
        for (workload, figures) in self.workloads.others() {
            self.workload_rows(&mut table, workload, figures);
        }
        if let Some(expiry) = &self.expiry {
            expiry_rows(&mut table, expiry);
        }
        table.render()
    }

    /// The machine's raw limits and the worker process at rest.
    fn raw_and_worker_rows(&self, table: &mut Table) {
        let (raw, worker) = (&self.raw, &self.worker);
        table.row("raw consume+ack (msg/s)", whole(raw.consume_ack_per_s), "");
        table.row(
            "raw insert transactions (tx/s)",
            whole(raw.insert_tx_per_s),
            "",
        );
        table.row(
            "raw command messaging, no work (cmd/s)",
            whole(raw.command_messaging_per_s),
            "",
        );
        table.row(
            "worker start to ready (ms)",
            whole(worker.start_to_ready_ms),
            "< 1000",
        );
        table.row("worker idle RSS (MiB)", tenths(worker.idle_rss_mib), "< 24");
        table.row(
            "  idle again after the invite runs",
            tenths(worker.idle_after_runs_rss_mib),
            "",
        );
        if let Some(reads) = worker.db_reads_per_command {
            table.row(
                "PostgreSQL rows read per command (of them by scans)",
                format!("{:.1} ({:.1})", reads.rows, reads.scanned_rows),
                "",
            );
        }
    }

    /// The throughput run, its rates also as shares of the raw ones.
    fn invite_rows(&self, table: &mut Table) {
        let (i, raw) = (&self.invite, &self.raw);
        table.rate(
            format!("invite_user end to end ({} commands/s)", i.commands),
            i.commands_per_s,
            ">= 3000, >= 15% of raw",
            raw.consume_ack_per_s,
        );
        // The share alone: the rate is on the row above.
        let of_messaging = ratio(i.commands_per_s, raw.command_messaging_per_s);
        table.push("  of the messaging alone", String::new(), "", of_messaging);
        table.rate("  replies/s", i.replies_per_s, "", raw.consume_ack_per_s);
        table.rate("  emails/s", i.emails_per_s, "", raw.consume_ack_per_s);
        table.row("  reply p50/p95/p99 (ms)", p50_p95_p99(&i.reply_ms), "");
        table.row("  email p50/p95/p99 (ms)", p50_p95_p99(&i.email_ms), "");
        table.row("  worker peak RSS (MiB)", tenths(i.peak_rss_mib), "< 64");
        table.row(
            "  worker CPU s per 1,000 commands",
            format!("{:.2}", i.cpu_s_per_1000),
            "",
        );
        machine_rows(table, i);
        table.row("  replies not applied", i.not_applied.to_string(), "0");
    }

    /// The latency run, with the messaging alone at the same rate under it.
    fn latency_rows(&self, table: &mut Table, l: &InviteFigures) {
        let offered = l.offered_per_s.unwrap_or(0.0);
        table.row(
            format!("at {offered:.0}/s offered: reply p50/p95/p99 (ms)"),
            p50_p95_p99(&l.reply_ms),
            "p99 < 25",
        );
        if let Some(floor) = &self.raw.command_messaging_reply_ms {
            table.row(
                "  the messaging alone: reply p50/p95/p99 (ms)",
                p50_p95_p99(floor),
                "",
            );
        }
        table.row(
            "  email p50/p95/p99 (ms)",
            p50_p95_p99(&l.email_ms),
            "p99 < 100",
        );
        machine_rows(table, l);
    }
}

impl Report {
    /// A workload other than `single`: its figures as `invite`'s, its
    /// ratio to `single` and its targets.
    fn workload_rows(&self, table: &mut Table, workload: Workload, w: &WorkloadFigures) {
        let (r, raw) = (&w.run, &self.raw);
        let name = workload.name();
        table.rate(
            format!("{name} end to end ({} commands/s)", r.commands),
            r.commands_per_s,
            "",
            raw.consume_ack_per_s,
        );
        let target = workload
            .target_vs_single()
            .map(|t| format!(">= {:.0}% of single", t * 100.0))
            .unwrap_or_default();
        table.row("  vs single", share(w.vs_single), &target);
        table.rate("  replies/s", r.replies_per_s, "", raw.consume_ack_per_s);
        if w.emails > 0 {
            table.rate("  emails/s", r.emails_per_s, "", raw.consume_ack_per_s);
        }
        table.row("  reply p50/p95/p99 (ms)", p50_p95_p99(&r.reply_ms), "");
        if w.emails > 0 {
            table.row("  email p50/p95/p99 (ms)", p50_p95_p99(&r.email_ms), "");
        }
        table.row("  worker peak RSS (MiB)", tenths(r.peak_rss_mib), "< 64");
        table.row(
            "  worker CPU s per 1,000 commands",
            format!("{:.2}", r.cpu_s_per_1000),
            "",
        );
        if workload == Workload::Mix {
            table.row(
                "  worker CPU per 1,000 vs single",
                times(w.cpu_vs_single),
                &format!("<= {MIX_CPU_VS_SINGLE:.1}x"),
            );
        }
        machine_rows(table, r);
        table.row(
            "  replies not applied",
            r.not_applied.to_string(),
            &w.expected_not_applied.to_string(),
        );
        if workload == Workload::Duplicates {
            table.row(
                "  replies marked duplicate",
                w.duplicate_replies.to_string(),
                &r.commands.to_string(),
            );
        }
        if let Some(l) = &w.latency {
            let offered = l.offered_per_s.unwrap_or(0.0);
            let p99 = if workload == Workload::Mix {
                format!("p99 < {MIX_REPLY_P99_MS:.0}")
            } else {
                String::new()
            };
            table.row(
                format!("  at {offered:.0}/s offered: reply p50/p95/p99 (ms)"),
                p50_p95_p99(&l.reply_ms),
                &p99,
            );
            table.row(
                "    email p50/p95/p99 (ms)",
                p50_p95_p99(&l.email_ms),
                "p99 < 100",
            );
            table.row(
                "    worker CPU s per 1,000 commands",
                format!("{:.2}", l.cpu_s_per_1000),
                "",
            );
            table.row("    machine CPU busy (%)", whole(l.machine_busy_pct), "");
        }
    }
}

/// A ratio as a percentage, or `-` without one.
fn share(ratio: Option<f64>) -> String {
    ratio.map_or_else(|| "-".into(), |r| format!("{:.1}%", r * 100.0))
}

/// A ratio as a multiple, or `-` without one.
fn times(ratio: Option<f64>) -> String {
    ratio.map_or_else(|| "-".into(), |r| format!("{r:.2}x"))
}

/// How busy the machine was during an invite run, and how the worker wrote.
fn machine_rows(table: &mut Table, run: &InviteFigures) {
    table.row("  machine CPU busy (%)", whole(run.machine_busy_pct), "");
    table.row(
        "  batches written as one statement (%)",
        whole(run.one_statement_pct),
        "",
    );
}

/// The expiry sweep, next to the bare `UPDATE` and the invites beside it.
fn expiry_rows(table: &mut Table, e: &ExpiryFigures) {
    table.rate(
        format!("expiry sweep ({} rows, rows/s)", e.rows),
        e.rows_per_s,
        ">= 25% of bare UPDATE",
        e.raw_update_rows_per_s,
    );
    table.row(
        "  bare batched UPDATE (rows/s)",
        whole(e.raw_update_rows_per_s),
        "",
    );
    table.row("  longest batch (ms)", tenths(e.max_batch_ms), "< 250");
    let during = &e.concurrent_invite_ms;
    table.row(
        format!(
            "  invite_user during the sweep ({}) p50/p99/max (ms)",
            e.concurrent_invites
        ),
        format!(
            "{:.1} / {:.1} / {:.1}",
            during.p50, during.p99, e.concurrent_invite_max_ms
        ),
        "",
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(p50: f64, p95: f64, p99: f64) -> Percentiles {
        Percentiles { p50, p95, p99 }
    }

    fn report() -> Report {
        Report {
            raw: Raw {
                consume_ack_per_s: 10_000.0,
                insert_tx_per_s: 5_000.0,
                command_messaging_per_s: 6_000.0,
                command_messaging_reply_ms: Some(ms(3.0, 7.5, 12.3)),
            },
            invite: InviteFigures {
                commands: 20_000,
                commands_per_s: 1_500.0,
                ..Default::default()
            },
            latency: Some(InviteFigures {
                offered_per_s: Some(1_000.0),
                machine_busy_pct: 87.4,
                one_statement_pct: 93.6,
                ..Default::default()
            }),
            expiry: Some(ExpiryFigures::default()),
            worker: Worker {
                db_reads_per_command: Some(ReadsPerCommand {
                    rows: 14.3,
                    scanned_rows: 0.5,
                }),
                ..Default::default()
            },
            workloads: Workloads::default(),
        }
    }

    /// Every figure set, each to a value of its own, so that a row that
    /// moves, drops out or changes its format changes the text.
    fn full_report() -> Report {
        Report {
            raw: Raw {
                consume_ack_per_s: 12_345.6,
                insert_tx_per_s: 4_321.4,
                command_messaging_per_s: 6_789.5,
                command_messaging_reply_ms: Some(ms(1.25, 3.75, 9.05)),
            },
            worker: Worker {
                start_to_ready_ms: 123.4,
                idle_rss_mib: 11.26,
                idle_after_runs_rss_mib: 19.94,
                db_reads_per_command: Some(ReadsPerCommand {
                    rows: 14.36,
                    scanned_rows: 0.44,
                }),
            },
            invite: InviteFigures {
                commands: 20_000,
                offered_per_s: None,
                commands_per_s: 2_345.5,
                replies_per_s: 2_456.7,
                emails_per_s: 2_367.8,
                reply_ms: ms(12.34, 45.67, 89.01),
                email_ms: ms(23.45, 56.78, 90.12),
                peak_rss_mib: 42.55,
                cpu_s_per_1000: 0.4567,
                machine_busy_pct: 97.5,
                one_statement_pct: 88.4,
                not_applied: 3,
            },
            latency: Some(InviteFigures {
                commands: 5_000,
                offered_per_s: Some(1_000.0),
                commands_per_s: 999.1,
                replies_per_s: 999.2,
                emails_per_s: 999.3,
                reply_ms: ms(4.44, 8.88, 17.76),
                email_ms: ms(14.44, 28.88, 57.76),
                peak_rss_mib: 30.1,
                cpu_s_per_1000: 0.3,
                machine_busy_pct: 41.6,
                one_statement_pct: 72.5,
                not_applied: 0,
            }),
            expiry: Some(ExpiryFigures {
                rows: 1_000_000,
                rows_per_s: 54_321.5,
                raw_update_rows_per_s: 123_456.5,
                max_batch_ms: 77.77,
                batches: 2_000,
                concurrent_invite_ms: ms(5.55, 6.66, 7.77),
                concurrent_invite_max_ms: 99.99,
                concurrent_invites: 321,
            }),
            workloads: Workloads::default(),
        }
    }

    /// A short run's report: no latency run or sweep, no rows-read figure,
    /// no raw rates to compare against, and throughput figures of its own.
    fn sparse_report() -> Report {
        let mut report = full_report();
        report.raw.consume_ack_per_s = 0.0;
        report.raw.command_messaging_per_s = 0.0;
        report.raw.command_messaging_reply_ms = None;
        report.worker.db_reads_per_command = None;
        report.invite = InviteFigures {
            commands: 50,
            commands_per_s: 612.5,
            replies_per_s: 640.4,
            emails_per_s: 618.6,
            reply_ms: ms(6.05, 16.5, 31.25),
            email_ms: ms(9.95, 21.15, 38.85),
            peak_rss_mib: 17.25,
            cpu_s_per_1000: 1.125,
            machine_busy_pct: 63.5,
            one_statement_pct: 100.0,
            ..InviteFigures::default()
        };
        report.latency = None;
        report.expiry = None;
        report
    }

    /// `full_report().table()`, to the byte.
    const FULL_TABLE: &str = concat!(
        "figure                                                                    value                    target    vs raw\n",
        "raw consume+ack (msg/s)                                                   12346                                    \n",
        "raw insert transactions (tx/s)                                             4321                                    \n",
        "raw command messaging, no work (cmd/s)                                     6790                                    \n",
        "worker start to ready (ms)                                                  123                    < 1000          \n",
        "worker idle RSS (MiB)                                                      11.3                      < 24          \n",
        "  idle again after the invite runs                                         19.9                                    \n",
        "PostgreSQL rows read per command (of them by scans)                  14.4 (0.4)                                    \n",
        "invite_user end to end (20000 commands/s)                                  2346    >= 3000, >= 15% of raw     19.0%\n",
        "  of the messaging alone                                                                                      34.5%\n",
        "  replies/s                                                                2457                               19.9%\n",
        "  emails/s                                                                 2368                               19.2%\n",
        "  reply p50/p95/p99 (ms)                                     12.3 / 45.7 / 89.0                                    \n",
        "  email p50/p95/p99 (ms)                                     23.4 / 56.8 / 90.1                                    \n",
        "  worker peak RSS (MiB)                                                    42.5                      < 64          \n",
        "  worker CPU s per 1,000 commands                                          0.46                                    \n",
        "  machine CPU busy (%)                                                       98                                    \n",
        "  batches written as one statement (%)                                       88                                    \n",
        "  replies not applied                                                         3                         0          \n",
        "at 1000/s offered: reply p50/p95/p99 (ms)                      4.4 / 8.9 / 17.8                  p99 < 25          \n",
        "  the messaging alone: reply p50/p95/p99 (ms)                   1.2 / 3.8 / 9.1                                    \n",
        "  email p50/p95/p99 (ms)                                     14.4 / 28.9 / 57.8                 p99 < 100          \n",
        "  machine CPU busy (%)                                                       42                                    \n",
        "  batches written as one statement (%)                                       72                                    \n",
        "expiry sweep (1000000 rows, rows/s)                                       54322     >= 25% of bare UPDATE     44.0%\n",
        "  bare batched UPDATE (rows/s)                                           123456                                    \n",
        "  longest batch (ms)                                                       77.8                     < 250          \n",
        "  invite_user during the sweep (321) p50/p99/max (ms)         5.5 / 7.8 / 100.0                                    \n",
    );

    /// `sparse_report().table()`, to the byte.
    const SPARSE_TABLE: &str = concat!(
        "figure                                                     value                    target    vs raw\n",
        "raw consume+ack (msg/s)                                        0                                    \n",
        "raw insert transactions (tx/s)                              4321                                    \n",
        "raw command messaging, no work (cmd/s)                         0                                    \n",
        "worker start to ready (ms)                                   123                    < 1000          \n",
        "worker idle RSS (MiB)                                       11.3                      < 24          \n",
        "  idle again after the invite runs                          19.9                                    \n",
        "invite_user end to end (50 commands/s)                       612    >= 3000, >= 15% of raw         -\n",
        "  of the messaging alone                                                                           -\n",
        "  replies/s                                                  640                                   -\n",
        "  emails/s                                                   619                                   -\n",
        "  reply p50/p95/p99 (ms)                       6.0 / 16.5 / 31.2                                    \n",
        "  email p50/p95/p99 (ms)                       9.9 / 21.1 / 38.9                                    \n",
        "  worker peak RSS (MiB)                                     17.2                      < 64          \n",
        "  worker CPU s per 1,000 commands                           1.12                                    \n",
        "  machine CPU busy (%)                                        64                                    \n",
        "  batches written as one statement (%)                       100                                    \n",
        "  replies not applied                                          0                         0          \n",
    );

    /// A workload's figures, each to a value of its own.
    fn workload(seed: f64, emails: usize, latency: Option<InviteFigures>) -> WorkloadFigures {
        WorkloadFigures {
            run: InviteFigures {
                commands: 20_000,
                offered_per_s: None,
                commands_per_s: 2_000.0 + seed,
                replies_per_s: 2_100.0 + seed,
                emails_per_s: if emails > 0 { 2_050.0 + seed } else { 0.0 },
                reply_ms: ms(10.0 + seed, 40.0 + seed, 80.0 + seed),
                email_ms: ms(20.0 + seed, 50.0 + seed, 90.0 + seed),
                peak_rss_mib: 40.0 + seed,
                cpu_s_per_1000: 0.5 + seed / 100.0,
                machine_busy_pct: 90.0 + seed,
                one_statement_pct: 50.0 + seed,
                not_applied: 0,
            },
            organizations: 200,
            emails,
            latency,
            ..WorkloadFigures::default()
        }
    }

    /// `full_report()` with every workload run.
    fn workloads_report() -> Report {
        let mut report = full_report();
        let single = WorkloadFigures {
            run: report.invite.clone(),
            organizations: 1,
            emails: 20_000,
            latency: report.latency.clone(),
            ..WorkloadFigures::default()
        };
        let mut mix = workload(
            2.25,
            10_000,
            Some(InviteFigures {
                commands: 5_000,
                offered_per_s: Some(1_000.0),
                reply_ms: ms(5.55, 12.25, 31.5),
                email_ms: ms(15.5, 30.25, 61.75),
                cpu_s_per_1000: 0.61,
                machine_busy_pct: 77.7,
                ..InviteFigures::default()
            }),
        );
        mix.run.not_applied = 3_000;
        mix.expected_not_applied = 3_000;
        let mut duplicates = workload(3.5, 0, None);
        duplicates.run.commands_per_s = 4_000.0;
        duplicates.run.not_applied = 3_000;
        duplicates.expected_not_applied = 3_000;
        duplicates.duplicate_replies = 19_999;
        report.workloads = Workloads {
            single: Some(single),
            managers: Some(workload(1.5, 20_000, None)),
            mix: Some(mix),
            duplicates: Some(duplicates),
        };
        report.workloads.compare_with_single();
        report
    }

    /// The rows `workloads_report()` adds to `FULL_TABLE`, before the sweep's.
    const WORKLOAD_ROWS: &str = concat!(
        "managers end to end (20000 commands/s)                                     2002                               16.2%\n",
        "  vs single                                                               85.3%          >= 90% of single          \n",
        "  replies/s                                                                2102                               17.0%\n",
        "  emails/s                                                                 2052                               16.6%\n",
        "  reply p50/p95/p99 (ms)                                     11.5 / 41.5 / 81.5                                    \n",
        "  email p50/p95/p99 (ms)                                     21.5 / 51.5 / 91.5                                    \n",
        "  worker peak RSS (MiB)                                                    41.5                      < 64          \n",
        "  worker CPU s per 1,000 commands                                          0.52                                    \n",
        "  machine CPU busy (%)                                                       92                                    \n",
        "  batches written as one statement (%)                                       52                                    \n",
        "  replies not applied                                                         0                         0          \n",
        "mix end to end (20000 commands/s)                                          2002                               16.2%\n",
        "  vs single                                                               85.4%          >= 80% of single          \n",
        "  replies/s                                                                2102                               17.0%\n",
        "  emails/s                                                                 2052                               16.6%\n",
        "  reply p50/p95/p99 (ms)                                     12.2 / 42.2 / 82.2                                    \n",
        "  email p50/p95/p99 (ms)                                     22.2 / 52.2 / 92.2                                    \n",
        "  worker peak RSS (MiB)                                                    42.2                      < 64          \n",
        "  worker CPU s per 1,000 commands                                          0.52                                    \n",
        "  worker CPU per 1,000 vs single                                          1.14x                   <= 1.2x          \n",
        "  machine CPU busy (%)                                                       92                                    \n",
        "  batches written as one statement (%)                                       52                                    \n",
        "  replies not applied                                                      3000                      3000          \n",
        "  at 1000/s offered: reply p50/p95/p99 (ms)                   5.5 / 12.2 / 31.5                  p99 < 25          \n",
        "    email p50/p95/p99 (ms)                                   15.5 / 30.2 / 61.8                 p99 < 100          \n",
        "    worker CPU s per 1,000 commands                                        0.61                                    \n",
        "    machine CPU busy (%)                                                     78                                    \n",
        "duplicates end to end (20000 commands/s)                                   4000                               32.4%\n",
        "  vs single                                                              170.5%         >= 150% of single          \n",
        "  replies/s                                                                2104                               17.0%\n",
        "  reply p50/p95/p99 (ms)                                     13.5 / 43.5 / 83.5                                    \n",
        "  worker peak RSS (MiB)                                                    43.5                      < 64          \n",
        "  worker CPU s per 1,000 commands                                          0.54                                    \n",
        "  machine CPU busy (%)                                                       94                                    \n",
        "  batches written as one statement (%)                                       54                                    \n",
        "  replies not applied                                                      3000                      3000          \n",
        "  replies marked duplicate                                                19999                     20000          \n",
    );

    /// `FULL_TABLE` with `rows` before the sweep's rows.
    fn full_table_with(rows: &str) -> String {
        let at = FULL_TABLE.find("expiry sweep (").unwrap();
        format!("{}{rows}{}", &FULL_TABLE[..at], &FULL_TABLE[at..])
    }

    #[test]
    fn each_workload_has_a_section_with_its_ratio_to_single_before_the_sweep() {
        assert_eq!(workloads_report().table(), full_table_with(WORKLOAD_ROWS));
    }

    #[test]
    fn with_single_alone_the_table_is_the_one_it_always_was() {
        let mut report = workloads_report();
        report.workloads.managers = None;
        report.workloads.mix = None;
        report.workloads.duplicates = None;
        assert_eq!(report.table(), FULL_TABLE);
    }

    #[test]
    fn without_single_the_ratios_are_left_out() {
        let mut report = workloads_report();
        report.workloads.single = None;
        report.workloads.compare_with_single();
        let table = report.table();
        let ratios: Vec<&str> = table
            .lines()
            .filter(|l| l.starts_with("  vs single") || l.starts_with("  worker CPU per 1,000 vs"))
            .collect();
        assert_eq!(ratios.len(), 4, "{table}");
        for line in ratios {
            // Figure, value, target: the columns are two spaces apart or more.
            let value = line
                .split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .nth(1);
            assert_eq!(value, Some("-"), "{line}");
        }
        let json = serde_json::to_value(&report).unwrap();
        assert!(json.pointer("/workloads/single").is_none());
        assert!(json.pointer("/workloads/mix/vs_single").unwrap().is_null());
    }

    #[test]
    fn the_json_has_each_workload_by_name_with_the_figures_of_invite_and_its_ratios() {
        let json = serde_json::to_value(workloads_report()).unwrap();
        let number = |path: &str| {
            json.pointer(path)
                .and_then(serde_json::Value::as_f64)
                .unwrap_or_else(|| panic!("{path} in {json}"))
        };
        for name in ["single", "managers", "mix", "duplicates"] {
            for key in [
                "commands",
                "commands_per_s",
                "replies_per_s",
                "emails_per_s",
                "reply_ms/p50",
                "reply_ms/p95",
                "reply_ms/p99",
                "email_ms/p99",
                "peak_rss_mib",
                "cpu_s_per_1000",
                "machine_busy_pct",
                "one_statement_pct",
                "not_applied",
                "organizations",
                "expected_not_applied",
                "duplicate_replies",
                "emails",
                "vs_single",
                "cpu_vs_single",
            ] {
                number(&format!("/workloads/{name}/{key}"));
            }
        }
        assert_eq!(number("/workloads/single/vs_single"), 1.0);
        assert_eq!(number("/workloads/duplicates/vs_single"), 4_000.0 / 2_345.5);
        assert_eq!(number("/workloads/mix/latency/reply_ms/p99"), 31.5);
        assert_eq!(number("/workloads/single/latency/reply_ms/p99"), 17.76);
        assert!(
            json.pointer("/workloads/managers/latency")
                .unwrap()
                .is_null()
        );
        // `invite` and `latency` keep their keys: the workloads' are beside them.
        assert_eq!(number("/invite/commands_per_s"), 2_345.5);
        assert!(json.pointer("/invite/vs_single").is_none());
    }

    #[test]
    fn the_table_is_the_same_text_to_the_byte() {
        assert_eq!(full_report().table(), FULL_TABLE);
        assert_eq!(sparse_report().table(), SPARSE_TABLE);
    }

    #[test]
    fn without_the_messaging_floor_the_latency_run_keeps_its_other_rows() {
        let mut report = full_report();
        report.raw.command_messaging_reply_ms = None;
        let expected: String = FULL_TABLE
            .lines()
            .filter(|l| !l.starts_with("  the messaging alone: reply"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(report.table(), expected);
    }

    #[test]
    fn the_json_carries_every_figure_the_issue_names_for_comparing_commits() {
        let json = serde_json::to_value(report()).unwrap();
        for path in [
            "/raw/consume_ack_per_s",
            "/raw/insert_tx_per_s",
            "/raw/command_messaging_per_s",
            "/invite/commands_per_s",
            "/invite/emails_per_s",
            "/invite/reply_ms/p50",
            "/invite/reply_ms/p95",
            "/invite/reply_ms/p99",
            "/invite/email_ms/p99",
            "/invite/peak_rss_mib",
            "/expiry/rows_per_s",
            "/expiry/raw_update_rows_per_s",
            "/expiry/max_batch_ms",
            "/raw/command_messaging_reply_ms/p99",
            "/latency/machine_busy_pct",
            "/invite/one_statement_pct",
            "/latency/one_statement_pct",
            "/worker/idle_rss_mib",
            "/worker/idle_after_runs_rss_mib",
            "/worker/db_reads_per_command/rows",
            "/worker/db_reads_per_command/scanned_rows",
        ] {
            assert!(json.pointer(path).is_some_and(|v| v.is_number()), "{path}");
        }
    }

    #[test]
    fn the_table_gives_end_to_end_as_a_share_of_the_raw_rate_and_of_the_messaging_alone() {
        let table = report().table();
        let line = |figure: &str| {
            table
                .lines()
                .find(|l| l.starts_with(figure))
                .unwrap_or_else(|| panic!("no row {figure:?} in\n{table}"))
                .to_owned()
        };
        assert!(line("raw command messaging, no work").contains("6000"));
        assert!(
            line("  the messaging alone: reply").contains("3.0 / 7.5 / 12.3"),
            "the latency floor sits under the worker's latency row"
        );
        assert!(line("invite_user end to end").ends_with("15.0%"));
        let both_runs = |figure: &str| -> Vec<String> {
            let rows: Vec<String> = table
                .lines()
                .filter(|l| l.starts_with(figure))
                .map(str::to_owned)
                .collect();
            assert_eq!(rows.len(), 2, "one {figure:?} for each run in\n{table}");
            rows
        };
        let busy = both_runs("  machine CPU busy");
        assert!(
            busy[1].contains(" 87 "),
            "the latency run's share: {}",
            busy[1]
        );
        assert!(line("  of the messaging alone").ends_with("25.0%"));
        assert!(
            line("PostgreSQL rows read per command").contains("14.3 (0.5)"),
            "rows read in all, and by scans"
        );
        let one_statement = both_runs("  batches written as one statement");
        assert!(
            one_statement[1].contains(" 94 "),
            "the latency run's share: {}",
            one_statement[1]
        );
    }
}
