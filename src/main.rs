//! Entry point: parse the command line, set up logging, run the subcommand.
//!
//! The ops tools' results go to stdout, one record per line where that
//! makes sense; notes, logs and errors go to stderr.

use anyhow::Context;
use clap::Parser;
use std::collections::BTreeSet;
use std::process::ExitCode;

use user_lifecycle::app::Application;
use user_lifecycle::broker::client::CommandClient;
use user_lifecycle::cli::{
    Cli, Command, DeadLettersCommand, ExpireNowArgs, ListArgs, PreviewEmailArgs, ReplayArgs,
    describe_error,
};
use user_lifecycle::config::Settings;
use user_lifecycle::ops::replay_dead_letters::Selection;
use user_lifecycle::ops::{
    OpsError, expire_now, history, list_dead_letters, preview_email, replay_dead_letters,
};
use user_lifecycle::{store, telemetry};

mod allocator;

/// Exit status when the expiry sweep is running elsewhere (`EX_TEMPFAIL`).
const EXIT_TRY_AGAIN: u8 = 75;

fn main() -> ExitCode {
    allocator::configure();
    let cli = Cli::parse();
    // The ops tools report for themselves; their logs only when asked for.
    let is_worker = matches!(cli.command, Command::Run(_));
    if is_worker || std::env::var_os("RUST_LOG").is_some() {
        telemetry::logs::init(cli.command.log_format());
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let message = describe_error(&e);
            if is_worker {
                tracing::error!("{message}");
            }
            eprintln!("error: {message}");
            match e.downcast_ref::<OpsError>() {
                Some(OpsError::ExpiryLocked) => ExitCode::from(EXIT_TRY_AGAIN),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

async fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run(settings) => run(*settings).await,
        Command::Migrate { database } => {
            store::migrate(&database.database_url)
                .await
                .context("migrating (DATABASE_URL)")?;
            println!("database migrated");
            Ok(())
        }
        Command::History { user_id, database } => {
            let user_id =
                uuid::Uuid::parse_str(&user_id).context("USER_ID must be a user id (a UUID)")?;
            let records = history::history(&database.database_url, user_id)
                .await
                .context("reading the audit trail (DATABASE_URL)")?;
            if records.is_empty() {
                anyhow::bail!("no audit records for user {user_id}");
            }
            for record in records {
                println!("{record}");
            }
            Ok(())
        }
        Command::Send {
            kind,
            data,
            actor,
            amqp,
            timeout,
        } => {
            let data: serde_json::Value = serde_json::from_str(&data)
                .context("DATA must be a JSON object, e.g. '{\"email\": \"ann@example.com\"}'")?;
            let mut client = CommandClient::connect(&amqp.amqp_url, &amqp.amqp_prefix)
                .await
                .context("connecting to RabbitMQ (AMQP_URL)")?;
            let envelope = CommandClient::envelope(&kind, data, actor.as_deref());
            let reply = client.send(&envelope, timeout).await?;
            println!("{}", serde_json::to_string_pretty(&reply)?);
            Ok(())
        }
        Command::DeadLetters(DeadLettersCommand::List(args)) => list(args).await,
        Command::DeadLetters(DeadLettersCommand::Replay(args)) => replay(args).await,
        Command::PreviewEmail(args) => preview(args),
        Command::ExpireNow(args) => expire(args).await,
    }
}

/// Builds the worker, tells `METRICS_ADDR_FILE` where it serves
/// `/metrics`, and runs it until SIGTERM or Ctrl-C.
async fn run(settings: Settings) -> anyhow::Result<()> {
    let addr_file = settings.metrics_addr_file.clone();
    let app = Application::build(settings).await?;
    if let Some(path) = addr_file {
        write_addr_file(&path, app.metrics_addr())
            .with_context(|| format!("writing {} (METRICS_ADDR_FILE)", path.display()))?;
    }
    app.run_until_stopped().await
}

/// Writes `addr` to `path` whole: to a sibling file first, then renamed, so
/// a reader never sees half of it.
fn write_addr_file(path: &std::path::Path, addr: std::net::SocketAddr) -> std::io::Result<()> {
    let partial = path.with_extension("partial");
    std::fs::write(&partial, addr.to_string())?;
    std::fs::rename(&partial, path)
}

async fn list(args: ListArgs) -> anyhow::Result<()> {
    let limit = args.limit.map(|n| n as usize);
    let listing =
        list_dead_letters::list(&args.amqp.amqp_url, &args.amqp.amqp_prefix, limit).await?;
    for held in &listing.letters {
        if args.json {
            println!("{}", list_dead_letters::json(held, args.show_body));
        } else {
            println!("{}", list_dead_letters::text(held, args.show_body));
        }
    }
    eprintln!(
        "{} of {} dead letter(s) in {} shown; all left in place",
        listing.letters.len(),
        listing.waiting,
        listing.queue
    );
    Ok(())
}

async fn replay(args: ReplayArgs) -> anyhow::Result<()> {
    let selection = if args.all {
        Selection::All
    } else {
        Selection::Ids(args.ids.into_iter().collect::<BTreeSet<_>>())
    };
    let verb = if args.dry_run {
        "would replay"
    } else {
        "replayed"
    };
    let report = replay_dead_letters::replay(
        &args.amqp.amqp_url,
        &args.amqp.amqp_prefix,
        &selection,
        args.dry_run,
        |letter| {
            println!(
                "{verb} #{} id={} type={} reason={}",
                letter.position,
                letter.id.as_deref().unwrap_or("-"),
                letter.kind.as_deref().unwrap_or("-"),
                letter.reason.as_deref().unwrap_or("-"),
            );
        },
    )
    .await?;
    if report.dry_run {
        println!(
            "would replay {} dead letter(s) to {} (dry run: nothing changed)",
            report.replayed, report.commands
        );
    } else {
        println!(
            "replayed {} dead letter(s) to {}; {} left in {}",
            report.replayed, report.commands, report.left, report.queue
        );
    }
    if !report.missing.is_empty() {
        anyhow::bail!(
            "no dead letter in {} has id {}",
            report.queue,
            report.missing.join(", ")
        );
    }
    Ok(())
}

fn preview(args: PreviewEmailArgs) -> anyhow::Result<()> {
    let preview = preview_email::preview(
        &args.templates_dir,
        &args.portal_url,
        args.template,
        &args.locale,
    )
    .with_context(|| {
        format!(
            "rendering from {} (TEMPLATES_DIR)",
            args.templates_dir.display()
        )
    })?;
    if let Some(note) = &preview.fallback {
        eprintln!("note: {note}");
    }
    print!("{}", preview_email::format(&preview.rendered, args.format));
    Ok(())
}

async fn expire(args: ExpireNowArgs) -> anyhow::Result<()> {
    let report = expire_now::expire_now(&args.database.database_url, args.batch).await?;
    println!(
        "expired {} invitation(s) in {} batch(es)",
        report.expired, report.batches
    );
    if report.expired > 0 {
        eprintln!(
            "their user.invite_expired events and emails are in the outbox; a running worker delivers them"
        );
    }
    Ok(())
}
