//! Entry point: parse the command line, set up logging, run the subcommand.

use anyhow::Context;
use clap::Parser;
use std::process::ExitCode;

use user_lifecycle::broker::client::CommandClient;
use user_lifecycle::cli::{Cli, Command};
use user_lifecycle::{app, store, telemetry};

fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::logs::init(cli.command.log_format());
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
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run(settings) => app::run(*settings).await,
        Command::Migrate { database_url } => {
            store::migrate(&database_url)
                .await
                .context("migrating (DATABASE_URL)")?;
            println!("database migrated");
            Ok(())
        }
        Command::History {
            user_id,
            database_url,
        } => {
            let user_id =
                uuid::Uuid::parse_str(&user_id).context("USER_ID must be a user id (a UUID)")?;
            let pool = store::connect(&database_url, 1)
                .await
                .context("connecting to PostgreSQL (DATABASE_URL)")?;
            let records = store::audit::history(&pool, user_id).await?;
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
            amqp_url,
            amqp_prefix,
            timeout,
        } => {
            let data: serde_json::Value = serde_json::from_str(&data)
                .context("DATA must be a JSON object, e.g. '{\"email\": \"ann@example.com\"}'")?;
            let mut client = CommandClient::connect(&amqp_url, &amqp_prefix)
                .await
                .context("connecting to RabbitMQ (AMQP_URL)")?;
            let envelope = CommandClient::envelope(&kind, data, actor.as_deref());
            let reply = client.send(&envelope, timeout).await?;
            println!("{}", serde_json::to_string_pretty(&reply)?);
            Ok(())
        }
    }
}
