//! `bench`: the user-lifecycle worker measured end to end next to the raw
//! limits of the same machine, in the same run.
//!
//! It is a benchmark, not a test: it asserts nothing, it reports. It runs
//! the worker's own binary (`--worker-bin`, by default `user-lifecycle`
//! next to this one: build it first) as a child process; see
//! `docs/performance.md`.

use anyhow::Context;
use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;

use user_lifecycle::cli::{AmqpArgs, DatabaseArgs};
use user_lifecycle::config::LogFormat;
use workloads::Workload;

mod db_reads;
mod expiry;
mod invites;
mod machine;
mod organizations;
mod process;
mod raw;
mod report;
mod run;
mod runner;
mod workloads;

/// As the worker's binary: the in-process runs (the sweep, the invites
/// beside it, the SMTP sink) allocate as the worker does.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Benchmark the worker end to end next to the machine's raw limits.
///
/// Uses its own database (`<name>_bench`, recreated) and AMQP prefix on
/// the configured servers, runs the worker binary as a child process
/// against an SMTP sink in this process, prints one table (or JSON), and
/// removes what it created.
#[derive(Debug, Parser)]
#[command(name = "bench", version, about)]
struct BenchArgs {
    /// Commands in each workload's throughput run (and messages and
    /// transactions in the raw-limit runs).
    #[arg(long, default_value_t = 20_000)]
    commands: usize,
    /// The workloads of the throughput runs (comma-separated or repeated),
    /// run in the order single, managers, mix, duplicates [default: all
    /// four]; the ratios to `single` need `single` in the same run.
    #[arg(
        long = "workload",
        value_enum,
        value_delimiter = ',',
        value_name = "WORKLOAD"
    )]
    workloads: Vec<Workload>,
    /// Organizations onboarded (each with its manager and 5 invited users)
    /// for the `managers` and `mix` workloads.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    organizations: u32,
    /// The share of the `mix` workload's commands refused, in percent
    /// (`request_password_reset` for unknown addresses); the rest are
    /// invites, email checks and profile updates as 50 : 20 : 15.
    #[arg(long, value_name = "PCT", default_value_t = 15, value_parser = clap::value_parser!(u8).range(0..=100))]
    refusals: u8,
    /// Expired invitations for the sweep run (0 skips it).
    #[arg(long, default_value_t = 1_000_000)]
    expire: usize,
    /// Commands in the latency run, offered at `--rate` (0 skips it).
    #[arg(long, default_value_t = 5_000)]
    latency_commands: usize,
    /// Offered rate of the latency run, commands per second.
    #[arg(long, default_value_t = 1_000.0)]
    rate: f64,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
    /// Directory of the email templates.
    #[arg(long, env = "TEMPLATES_DIR", default_value = "./templates")]
    templates_dir: PathBuf,
    /// A worker setting for the run, `KEY=VALUE` (repeatable), e.g. `CONSUMER_PREFETCH=64`.
    #[arg(long = "worker-env", value_name = "KEY=VALUE")]
    worker_env: Vec<String>,
    /// The worker binary to run [default: `user-lifecycle` in this
    /// binary's directory, where `cargo build` puts it].
    #[arg(long, value_name = "PATH")]
    worker_bin: Option<PathBuf>,
    /// Where the database server is (the benchmark uses `<name>_bench` on it).
    #[command(flatten)]
    database: DatabaseArgs,
    /// Where the broker is.
    #[command(flatten)]
    amqp: AmqpArgs,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = BenchArgs::parse();
    if std::env::var_os("RUST_LOG").is_some() {
        user_lifecycle::telemetry::logs::init(LogFormat::Pretty);
    }
    match bench(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", user_lifecycle::cli::describe_error(&e));
            ExitCode::FAILURE
        }
    }
}

async fn bench(args: BenchArgs) -> anyhow::Result<()> {
    let worker_env = args
        .worker_env
        .iter()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .with_context(|| format!("--worker-env {kv:?} must be KEY=VALUE"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let worker_bin = match args.worker_bin {
        Some(path) => path,
        None => std::env::current_exe()
            .context("finding this binary's directory, for the worker binary (--worker-bin)")?
            .with_file_name(format!("user-lifecycle{}", std::env::consts::EXE_SUFFIX)),
    };
    let options = run::BenchOptions {
        commands: args.commands,
        expire: args.expire,
        latency_commands: args.latency_commands,
        latency_rate: args.rate,
        database_url: args.database.database_url,
        amqp_url: args.amqp.amqp_url,
        templates_dir: args.templates_dir,
        worker_env,
        worker_bin,
        workloads: Workload::selection(&args.workloads),
        organizations: args.organizations as usize,
        refusals_pct: args.refusals,
    };
    let report = run::run(&options).await.context("benchmark")?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.table());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        BenchArgs::command().debug_assert();
    }

    #[test]
    fn workloads_are_named_comma_separated_or_repeated_and_all_run_by_default() {
        use Workload::*;
        let parse = |args: &[&str]| {
            let args = BenchArgs::try_parse_from([&["bench"], args].concat()).unwrap();
            (
                Workload::selection(&args.workloads),
                args.organizations,
                args.refusals,
            )
        };
        assert_eq!(
            parse(&[]),
            (vec![Single, Managers, Mix, Duplicates], 200, 15)
        );
        assert_eq!(
            parse(&["--workload", "mix,single", "--workload", "duplicates"]).0,
            vec![Single, Mix, Duplicates]
        );
        assert_eq!(
            parse(&[
                "--workload",
                "managers",
                "--organizations",
                "3",
                "--refusals",
                "40"
            ]),
            (vec![Managers], 3, 40)
        );
        for bad in [
            &["--workload", "everything"][..],
            &["--refusals", "101"],
            &["--organizations", "0"],
        ] {
            assert!(
                BenchArgs::try_parse_from([&["bench"], bad].concat()).is_err(),
                "{bad:?}"
            );
        }
    }
}
