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

use std::{
    io::Write as _,
    panic::AssertUnwindSafe,
    path::PathBuf,
    time::{Duration, Instant},
};

use crate::faults::{Outcome, Profile};
use clap::{Parser, ValueEnum};
use futures_util::{FutureExt as _, StreamExt as _};

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
    /// How many contained scenarios (those that break only what they start
    /// themselves) run at once, after the ones that break the shared
    /// broker or database, which always run alone. 1 runs everything in
    /// order, one at a time.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=8))]
    parallel: u16,
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
        cli.scenarios.clone()
    };
    // The scenarios that stop or cut the shared services run first, one at a
    // time; the contained ones then run `--parallel` at once.
    let (mut beside, alone): (Vec<String>, Vec<String>) = names
        .iter()
        .cloned()
        .partition(|name| cli.parallel > 1 && faults::is_contained(name));
    // The ones that start services of their own take longest: first, so the
    // others run beside them rather than after them.
    beside.sort_by_key(|name| !faults::starts_services(name));
    let mut results = Results::default();
    // Registered once: from here on SIGINT and SIGTERM end the run through it.
    let mut stop = std::pin::pin!(interrupted());
    // Interrupted, the scenarios are dropped before the process exits, so
    // their processes and clusters of their own are stopped and removed.
    let run = async {
        for name in &alone {
            let (run, took) = run_one(name, profile).await;
            results.add(name, run, took);
            // A failed scenario must not leave the next one without its services.
            faults::ensure_services_up(Duration::from_secs(120)).await;
        }
        // Unordered: a scenario that ends frees its place for the next at
        // once, rather than after every one started before it (a cluster's
        // scenario takes three times as long as most).
        let mut runs = futures_util::stream::iter(&beside)
            .map(|name| async move { (name, run_one(name, profile).await) })
            .buffer_unordered(usize::from(cli.parallel));
        while let Some((name, (run, took))) = runs.next().await {
            results.add(name, run, took);
        }
    };
    tokio::select! {
        () = run => {}
        signal = &mut stop => {
            eprintln!("   interrupted by {signal}");
            std::process::exit(130)
        }
    }
    results.finish(&cli, &names)
}

/// Runs scenario `name`, and how long it took. A panic in it (a helper's
/// `expect`) is its error, not the end of the run: the other scenarios still
/// run and report, and this one's processes and clusters are dropped where
/// it stopped.
async fn run_one(name: &str, profile: Profile) -> (anyhow::Result<Outcome>, Duration) {
    let began = Instant::now();
    let run = AssertUnwindSafe(faults::run(name, profile))
        .catch_unwind()
        .await;
    let outcome = match run {
        Ok(outcome) => outcome,
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("(no message)");
            Err(anyhow::anyhow!("panicked: {message}"))
        }
    };
    (outcome, began.elapsed())
}

/// The outcomes so far, and the scenarios that could not run.
#[derive(Default)]
struct Results {
    outcomes: Vec<Outcome>,
    errors: Vec<String>,
}

impl Results {
    /// Prints one scenario's result as it is known, and how long it took.
    fn add(&mut self, name: &str, run: anyhow::Result<Outcome>, took: Duration) {
        eprintln!("== {name} ({:.0} s)", took.as_secs_f64());
        match run {
            Ok(outcome) => {
                eprintln!("   {}", if outcome.passed { "pass" } else { "FAIL" });
                for note in &outcome.notes {
                    eprintln!("   - {note}");
                }
                self.outcomes.push(outcome);
            }
            Err(err) => {
                eprintln!("   ERROR: {err:#}");
                self.errors.push(format!("{name}: {err:#}"));
            }
        }
    }

    /// Prints and writes the table; exits 1 if a scenario failed.
    fn finish(mut self, cli: &Cli, planned: &[String]) -> anyhow::Result<()> {
        // In the planned order, whatever order they ended in.
        let position =
            |outcome: &Outcome| planned.iter().position(|name| *name == outcome.scenario);
        self.outcomes.sort_by_key(position);
        let planned = planned.len();
        let table = faults::table(&self.outcomes);
        let mut stdout = std::io::stdout();
        writeln!(stdout, "\n{table}")?;
        if let Some(path) = &cli.json {
            std::fs::write(path, serde_json::to_string_pretty(&self.outcomes)?)?;
        }
        if let Some(path) = &cli.markdown {
            std::fs::write(path, &table)?;
        }
        for error in &self.errors {
            eprintln!("error: {error}");
        }
        let failed = self.outcomes.iter().filter(|o| !o.passed).count() + self.errors.len();
        if failed > 0 {
            eprintln!("corral-faults: {failed} of {planned} scenarios failed");
            std::process::exit(1);
        }
        Ok(())
    }
}
