use std::process::ExitCode;

use clap::Parser;
use corral_runtime::telemetry;
use corral_worker::{
    commands::{self, Cli, Command, Outcome, output},
    ops::OpsError,
};

// jemalloc with background purging hands memory back to the system after a
// burst or a broker outage; glibc's per-thread arenas keep what each
// reconnect's I/O thread freed (the fault suite's RSS check watches this).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let Cli { command, config } = Cli::parse();
    telemetry::init_tracing(&config.log);
    let command = command.unwrap_or(Command::Run);
    let serving = matches!(command, Command::Run);
    // Each error is printed once: as a log event by the service, as one
    // plain line by an operator command (both on stderr).
    match commands::run(command, config).await {
        Ok(Outcome::Done) => ExitCode::SUCCESS,
        Ok(outcome @ Outcome::NothingMatched(_)) => {
            if let Outcome::NothingMatched(what) = &outcome {
                eprintln!("corral-worker: {what}");
            }
            ExitCode::from(outcome.exit_code())
        }
        Err(err) if serving => {
            tracing::error!(error = format!("{err:#}"), "corral-worker failed");
            ExitCode::from(output::EXIT_FAILED)
        }
        Err(err) => {
            eprintln!("corral-worker: error: {err:#}");
            let usage = matches!(err.downcast_ref(), Some(OpsError::Usage(_)));
            ExitCode::from(if usage {
                output::EXIT_USAGE
            } else {
                output::EXIT_FAILED
            })
        }
    }
}
