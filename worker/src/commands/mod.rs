//! The command line: `corral-worker [COMMAND]`, one file per operator
//! command, each holding its arguments, what it runs and the report it
//! prints (tab-separated columns an operator can read or pipe to `cut`).
//!
//! # Layout
//!
//! - [`dead_letters`]: `dead-letters list|replay`, on RabbitMQ or SQS.
//! - [`quarantine`]: `quarantine list|reprocess`.
//! - [`suppressions`]: `suppressions list|lift`.
//! - [`report`]: `report`, the hourly summary over a window.
//! - [`migrate`]: `migrate`, then exit.
//!
//! `run` (the default) is [`crate::Application`].

pub mod dead_letters;
pub mod migrate;
pub mod quarantine;
pub mod report;
pub mod suppressions;

use clap::{Parser, Subcommand};
use corral_runtime::shutdown;
use tokio_util::sync::CancellationToken;

use crate::{Application, config::WorkerConfig};

/// Consumes corral's queue and lands each webhook exactly once in PostgreSQL.
#[derive(Debug, Clone, Parser)]
#[command(name = "corral-worker", version, about, long_about = None)]
pub struct Cli {
    /// What to do; `run` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub config: WorkerConfig,
}

/// corral-worker commands.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Apply migrations, then consume until SIGTERM (the default).
    Run,
    /// Create the database if missing and apply migrations, then exit.
    Migrate,
    /// Inspect and replay the dead-letter queue (`<prefix>.dead-letter`; with
    /// `CORRAL_BUFFER=sqs` the one the SQS queue's redrive policy names).
    #[command(subcommand)]
    DeadLetters(dead_letters::DeadLetterCommand),
    /// Inspect and re-process quarantined webhooks (`quarantined_webhooks`).
    #[command(subcommand)]
    Quarantine(quarantine::QuarantineCommand),
    /// Show outcomes and spend per kind, status and reason over whole hours
    /// of attempt_date (UTC), from the hourly summary (exact sums).
    Report(report::ReportArgs),
    /// List and lift the numbers not to message again (`suppressions`).
    #[command(subcommand)]
    Suppressions(suppressions::SuppressionCommand),
}

/// Runs `command`; the operator commands write their report to stdout.
pub async fn run(command: Command, config: WorkerConfig) -> anyhow::Result<()> {
    let out = &mut std::io::stdout();
    match command {
        Command::Run => {
            let token = CancellationToken::new();
            shutdown::cancel_on_signal(token.clone());
            Application::build(config, token)?.run_until_stopped().await
        }
        Command::Migrate => migrate::run(&config).await,
        Command::DeadLetters(command) => dead_letters::run(command, &config, out).await,
        Command::Quarantine(command) => quarantine::run(command, &config, out).await,
        Command::Suppressions(command) => suppressions::run(command, &config, out).await,
        Command::Report(args) => report::run(args, &config, out).await,
    }
}

/// The first `max` characters of a body, lossily decoded, on one line: what
/// an operator needs to recognise a webhook in a listing.
pub fn preview(body: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(body);
    let mut line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(max)
        .collect();
    if text.chars().count() > max {
        line.push('…');
    }
    line
}
