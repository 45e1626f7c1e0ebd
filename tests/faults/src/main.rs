//! corral's fault suite: breaks the broker, the database and both services
//! mid-load and checks that every webhook answered 2xx is stored exactly once.
//! See docs/reliability.md. It restarts shared services: never run it beside
//! other tests.
//!
//! # Layout
//!
//! - `main.rs`: the command line: which profile, which scenarios, where the
//!   table goes.
//! - `faults`: the scenarios, the processes each runs, and the outcome table.

use std::{io::Write as _, path::PathBuf, time::Duration};

use crate::faults::{Outcome, Profile};
use clap::{Parser, ValueEnum};

mod faults;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ProfileName {
    /// Every scenario but three of the four on a cluster (the leader's death
    /// stays), 300 webhooks/s, a few seconds around each fault (CI).
    Ci,
    /// Every scenario, 1,500 webhooks/s, 10 s around each fault.
    Full,
}

#[derive(Debug, Parser)]
#[command(
    name = "corral-faults",
    about = "corral's fault-injection suite (see docs/reliability.md)"
)]
struct Cli {
    /// Load and duration per scenario.
    #[arg(long, value_enum, default_value_t = ProfileName::Ci)]
    profile: ProfileName,
    /// Run only these scenarios (repeatable); the profile's by default.
    #[arg(long = "scenario", value_parser = clap::builder::PossibleValuesParser::new(faults::SCENARIOS))]
    scenarios: Vec<String>,
    /// Also write the outcomes as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Also write the markdown table to this file.
    #[arg(long)]
    markdown: Option<PathBuf>,
}

/// Resolves on SIGINT or SIGTERM, with the signal's name.
async fn interrupted() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let profile = match cli.profile {
        ProfileName::Ci => Profile::CI,
        ProfileName::Full => Profile::FULL,
    };
    let names: Vec<String> = if cli.scenarios.is_empty() {
        faults::selected(profile)
            .into_iter()
            .map(str::to_owned)
            .collect()
    } else {
        cli.scenarios
    };
    let mut outcomes: Vec<Outcome> = Vec::new();
    let mut errors = Vec::new();
    // Registered once: from here on SIGINT and SIGTERM end the run through it.
    let mut stop = std::pin::pin!(interrupted());
    for name in &names {
        eprintln!("== {name} ({} profile)", profile.name);
        // Interrupted, the scenario is dropped before the process exits, so
        // its processes and a cluster of its own are stopped and removed.
        let run = tokio::select! {
            run = faults::run(name, profile) => Ok(run),
            signal = &mut stop => Err(signal),
        };
        let run = run.unwrap_or_else(|signal| {
            eprintln!("   interrupted by {signal}");
            std::process::exit(130)
        });
        match run {
            Ok(outcome) => {
                eprintln!("   {}", if outcome.passed { "pass" } else { "FAIL" });
                for note in &outcome.notes {
                    eprintln!("   - {note}");
                }
                outcomes.push(outcome);
            }
            Err(err) => {
                eprintln!("   ERROR: {err:#}");
                errors.push(format!("{name}: {err:#}"));
            }
        }
        // A failed scenario must not leave the next one without its services.
        faults::ensure_services_up(Duration::from_secs(120)).await;
    }
    let table = faults::table(&outcomes);
    let mut stdout = std::io::stdout();
    writeln!(stdout, "\n{table}")?;
    if let Some(path) = cli.json {
        std::fs::write(path, serde_json::to_string_pretty(&outcomes)?)?;
    }
    if let Some(path) = cli.markdown {
        std::fs::write(path, &table)?;
    }
    for error in &errors {
        eprintln!("error: {error}");
    }
    let failed = outcomes.iter().filter(|o| !o.passed).count() + errors.len();
    if failed > 0 {
        eprintln!(
            "corral-faults: {failed} of {} scenarios failed",
            names.len()
        );
        std::process::exit(1);
    }
    Ok(())
}
