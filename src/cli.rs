//! The command line: `run` (the worker) and the ops tools.
//!
//! Every tool reads the same environment variables as `run`, with the same
//! defaults, so an operator on a worker's host runs them with no flags.

#![cfg(feature = "worker")]

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{ArgGroup, Args, Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;

pub use crate::config::{AmqpArgs, DatabaseArgs};
use crate::config::{LogFormat, Settings};
use crate::domain::locale::Locale;
use crate::domain::notification::Template;
use crate::ops::preview_email::{PreviewFormat, parse_template};

/// user-lifecycle: owns the lifecycle of the portal's users.
#[derive(Debug, Parser)]
#[command(name = "user-lifecycle", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the worker.
    Run(Box<Settings>),
    /// Create the database if missing and apply migrations, then exit.
    Migrate {
        /// Where the database is.
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Print a user's audit trail (who changed what, when), one JSON object per line.
    History {
        /// The user's id.
        user_id: String,
        /// Where the database is.
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Publish one command and print its reply (try the worker by hand).
    Send {
        /// The command type, e.g. `onboard_organization`.
        #[arg(value_name = "TYPE")]
        kind: String,
        /// The command's `data` as JSON.
        #[arg(value_name = "DATA")]
        data: String,
        /// The acting user's id.
        #[arg(long)]
        actor: Option<String>,
        /// Where the broker is.
        #[command(flatten)]
        amqp: AmqpArgs,
        /// How long to wait for the reply.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// List or replay the messages in the dead-letter queue (`P.commands.dead`).
    #[command(subcommand)]
    DeadLetters(DeadLettersCommand),
    /// Render an email template with sample data, to stdout.
    PreviewEmail(PreviewEmailArgs),
    /// Run the expiry sweep once, now, under the scheduler's lock.
    ///
    /// Expires every invitation past its activation TTL, in batches, and
    /// writes the `user.invite_expired` events and the emails to the
    /// inviting managers to the outbox, for a running worker to deliver.
    /// Exits with status 75 (try again later) if another worker is running
    /// the sweep right now.
    ExpireNow(ExpireNowArgs),
}

/// `dead-letters` subcommands.
#[derive(Debug, Subcommand)]
pub enum DeadLettersCommand {
    /// Show the dead letters, head of the queue first, and leave them all in place.
    ///
    /// Per message: its position, `x-error-reason`, the command id and type
    /// (when the body is an envelope), the size in bytes, and `x-error`.
    /// Bodies may hold personal data and are shown only with `--show-body`.
    List(ListArgs),
    /// Move dead letters back to `P.commands`, for the worker to apply again.
    ///
    /// Each message keeps its body and properties (`reply_to`, `correlation_id`,
    /// …), loses its `x-error` headers and gains `x-replayed-from-dead-letter:
    /// true`; the dead letter is removed only once the broker confirmed the
    /// copy. Unselected messages stay, in order. Safe to repeat: commands are
    /// idempotent by `id`.
    Replay(ReplayArgs),
}

/// `dead-letters list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Show at most N messages (from the head of the queue).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub limit: Option<u32>,
    /// One JSON object per message and line.
    #[arg(long)]
    pub json: bool,
    /// Also show the first 200 bytes of each body (may hold personal data).
    #[arg(long)]
    pub show_body: bool,
    /// Where the broker is.
    #[command(flatten)]
    pub amqp: AmqpArgs,
}

/// `dead-letters replay`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("selection").required(true).args(["all", "ids"])))]
pub struct ReplayArgs {
    /// Replay every message in the queue.
    #[arg(long)]
    pub all: bool,
    /// Replay the messages with these command ids (the envelope's `id`).
    #[arg(long = "id", value_name = "COMMAND_ID", num_args = 1..)]
    pub ids: Vec<String>,
    /// Show what would be replayed, change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Where the broker is.
    #[command(flatten)]
    pub amqp: AmqpArgs,
}

/// `preview-email`.
#[derive(Debug, Args)]
pub struct PreviewEmailArgs {
    /// Which email.
    #[arg(
        value_name = "TEMPLATE",
        value_parser = PossibleValuesParser::new(Template::ALL.map(Template::as_str))
            .try_map(|s| parse_template(&s))
    )]
    pub template: Template,
    /// The recipient's locale (`nl`, `nl-BE`, …); falls back like a real email.
    #[arg(long, default_value = "en", value_parser = parse_locale)]
    pub locale: Locale,
    /// Which part to print.
    #[arg(long, value_enum, default_value = "all")]
    pub format: PreviewFormat,
    /// Directory of the email templates.
    #[arg(long, env = "TEMPLATES_DIR", default_value = "./templates")]
    pub templates_dir: PathBuf,
    /// Base of the links in emails.
    #[arg(long, env = "PORTAL_URL", default_value = "http://localhost:8080", value_parser = parse_portal_url)]
    pub portal_url: String,
}

/// `expire-now`.
#[derive(Debug, Args)]
pub struct ExpireNowArgs {
    /// Invitations expired per transaction.
    #[arg(
        long,
        value_name = "N",
        env = "EXPIRY_BATCH_SIZE",
        default_value_t = 500,
        value_parser = clap::value_parser!(i64).range(1..)
    )]
    pub batch: i64,
    /// Where the database is.
    #[command(flatten)]
    pub database: DatabaseArgs,
}

fn parse_locale(s: &str) -> Result<Locale, String> {
    Locale::parse(s).map_err(|e| e.to_string())
}

fn parse_portal_url(s: &str) -> Result<String, String> {
    let url = url::Url::parse(s).map_err(|e| format!("not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("must be an http:// or https:// URL".into());
    }
    Ok(s.trim_end_matches('/').to_owned())
}

impl Command {
    /// The log format this command wants.
    pub fn log_format(&self) -> LogFormat {
        match self {
            Command::Run(s) => s.log_format,
            _ => LogFormat::Pretty,
        }
    }
}

/// The error and its causes on one line, outermost first. The worker's
/// own errors print only themselves; some libraries' errors (sqlx's I/O
/// error) also print their source, which is then not repeated.
pub fn describe_error(e: &anyhow::Error) -> String {
    let mut line = String::new();
    let mut parent = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !parent.ends_with(&text) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&text);
        }
        parent = text;
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn replay_needs_all_or_ids() {
        assert!(Cli::try_parse_from(["ul", "dead-letters", "replay"]).is_err());
        let cli = Cli::try_parse_from(["ul", "dead-letters", "replay", "--id", "a", "b"]).unwrap();
        let Command::DeadLetters(DeadLettersCommand::Replay(args)) = cli.command else {
            panic!("parsed as {cli:?}");
        };
        assert_eq!(args.ids, ["a", "b"]);
        assert!(!args.all && !args.dry_run);
        assert!(
            Cli::try_parse_from(["ul", "dead-letters", "replay", "--all", "--id", "a"]).is_err()
        );
    }

    #[test]
    fn preview_email_knows_the_templates() {
        let cli =
            Cli::try_parse_from(["ul", "preview-email", "invite_expired", "--locale", "nl_be"])
                .unwrap();
        let Command::PreviewEmail(args) = cli.command else {
            panic!("parsed as {cli:?}");
        };
        assert_eq!(args.template, Template::InviteExpired);
        assert_eq!(args.locale.as_str(), "nl-BE");
        assert_eq!(args.format, PreviewFormat::All);
        let err = Cli::try_parse_from(["ul", "preview-email", "welcome"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("activation") && err.contains("invite_expired"),
            "{err}"
        );
    }

    #[test]
    fn expire_now_refuses_an_empty_batch() {
        assert!(Cli::try_parse_from(["ul", "expire-now", "--batch", "0"]).is_err());
    }

    #[test]
    fn a_cause_its_parent_printed_is_not_repeated() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let e = anyhow::Error::new(crate::store::StoreError::from(sqlx::Error::Io(io)))
            .context("connecting to PostgreSQL (DATABASE_URL)");
        assert_eq!(
            describe_error(&e),
            "connecting to PostgreSQL (DATABASE_URL): error communicating with database: refused"
        );
    }

    #[test]
    fn every_cause_that_prints_only_itself_is_shown() {
        let e = anyhow::anyhow!("inner").context("middle").context("outer");
        assert_eq!(describe_error(&e), "outer: middle: inner");
    }
}
