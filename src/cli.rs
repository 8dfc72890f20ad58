//! The command line: `run` (the worker) and the ops tools.

use clap::{Parser, Subcommand};
use std::time::Duration;

use crate::config::{LogFormat, Settings};

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
        /// PostgreSQL URL.
        #[arg(
            long,
            env = "DATABASE_URL",
            default_value = "postgres://postgres@127.0.0.1:5432/user_lifecycle",
            hide_env_values = true
        )]
        database_url: String,
    },
    /// Print a user's audit trail (who changed what, when), one JSON object per line.
    History {
        /// The user's id.
        user_id: String,
        /// PostgreSQL URL.
        #[arg(
            long,
            env = "DATABASE_URL",
            default_value = "postgres://postgres@127.0.0.1:5432/user_lifecycle",
            hide_env_values = true
        )]
        database_url: String,
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
        /// RabbitMQ URL.
        #[arg(
            long,
            env = "AMQP_URL",
            default_value = "amqp://guest:guest@127.0.0.1:5672/%2f",
            hide_env_values = true
        )]
        amqp_url: String,
        /// Prefix of every exchange and queue name.
        #[arg(long, env = "AMQP_PREFIX", default_value = "user_lifecycle")]
        amqp_prefix: String,
        /// How long to wait for the reply.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
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
