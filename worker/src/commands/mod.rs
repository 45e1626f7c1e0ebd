//! The command line: `corral-worker [COMMAND]`, one file per operator
//! command, each holding its arguments, what it runs and the report it
//! prints (tab-separated columns an operator can read or pipe to `cut`, or
//! with `--json` one document). [`output`] holds the conventions they share:
//! report on stdout, logs and errors on stderr, exit codes 0 done, 1 failed,
//! 2 usage, 3 nothing matched.
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
pub mod output;
pub mod quarantine;
pub mod report;
pub mod suppressions;

use clap::{Parser, Subcommand};
use corral_runtime::shutdown;
use tokio_util::sync::CancellationToken;

use crate::{Application, config::WorkerConfig};
pub use output::Outcome;

/// Consumes corral's queue and lands each webhook exactly once in PostgreSQL.
#[derive(Debug, Clone, Parser)]
#[command(name = "corral-worker", version, about, long_about = None)]
pub struct Cli {
    /// What to do; `run` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Global so every command takes them, but under their own heading, so
    /// a command's `--help` shows its own options first.
    #[command(
        flatten,
        next_help_heading = "Settings (each also a CORRAL_* variable)"
    )]
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
pub async fn run(command: Command, config: WorkerConfig) -> anyhow::Result<Outcome> {
    let out = &mut std::io::stdout();
    match command {
        Command::Run => {
            let token = CancellationToken::new();
            shutdown::cancel_on_signal(token.clone());
            Application::build(config, token)?
                .run_until_stopped()
                .await?;
            Ok(Outcome::Done)
        }
        Command::Migrate => migrate::run(&config).await.map(|()| Outcome::Done),
        Command::DeadLetters(command) => dead_letters::run(command, &config, out).await,
        Command::Quarantine(command) => quarantine::run(command, &config, out).await,
        Command::Suppressions(command) => suppressions::run(command, &config, out).await,
        Command::Report(args) => report::run(args, &config, out)
            .await
            .map(|()| Outcome::Done),
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

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::Cli;

    /// Every command line the docs teach parses: an argument whose id is
    /// also a global setting's (`kind` was `--buffer`'s) parses into the
    /// wrong type and panics at run time, which `debug_assert` does not see.
    #[test]
    fn every_command_and_its_options_parse() {
        Cli::command().debug_assert();
        for line in [
            "run",
            "migrate",
            "suppressions list --phone +15552224444 --kind sms --class opted_out --all --limit 5 --json",
            "suppressions lift --phone +15552224444 --kind rvm --class litigator --by x --dry-run --yes",
            "suppressions lift --phone +15552224444 --all-classes --by x --yes",
            "quarantine list --limit 5 --json",
            "quarantine reprocess --dry-run --limit 3 --id 1 --id 2 --batch 10 --as-messages",
            "dead-letters list --limit 2 --json",
            "dead-letters replay --dry-run --limit 1 --message-id a",
            "report --since 24h --until 1h --json --by-hour",
            "--buffer sqs dead-letters list",
        ] {
            let args = std::iter::once("corral-worker").chain(line.split(' '));
            if let Err(err) = Cli::try_parse_from(args) {
                panic!("{line}: {err}");
            }
        }
    }
}
