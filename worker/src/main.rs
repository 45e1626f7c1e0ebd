use clap::Parser;
use corral_runtime::telemetry;
use corral_worker::commands::{self, Cli, Command};

// jemalloc with background purging hands memory back to the system after a
// burst or a broker outage; glibc's per-thread arenas keep what each
// reconnect's I/O thread freed (the fault suite's RSS check watches this).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Cli { command, config } = Cli::parse();
    telemetry::init_tracing(&config.log);
    commands::run(command.unwrap_or(Command::Run), config)
        .await
        .inspect_err(|err| tracing::error!(error = format!("{err:#}"), "corral-worker failed"))
}
