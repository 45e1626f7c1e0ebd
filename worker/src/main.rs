use clap::Parser;
use corral_shared::{shutdown, telemetry};
use corral_worker::{
    Application,
    config::{Cli, Command},
    db, ops, summary,
};
use tokio_util::sync::CancellationToken;

// jemalloc with background purging hands memory back to the system after a
// burst or a broker outage; glibc's per-thread arenas keep what each
// reconnect's I/O thread freed (the fault suite's RSS check watches this).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Cli { command, config } = Cli::parse();
    telemetry::init_tracing(&config.log);
    let result = match command.unwrap_or(Command::Run) {
        Command::Run => {
            let token = CancellationToken::new();
            shutdown::cancel_on_signal(token.clone());
            match Application::build(config, token) {
                Ok(app) => app.run_until_stopped().await,
                Err(err) => Err(err),
            }
        }
        Command::Migrate => {
            config.validate()?;
            db::migrate(&config.database()?)
                .await
                .map(|applied| tracing::info!(applied, "database is up to date"))
        }
        Command::DeadLetters(command) => {
            ops::dead_letters_command(command, &config, &mut std::io::stdout()).await
        }
        Command::Quarantine(command) => {
            ops::quarantine_command(command, &config, &mut std::io::stdout()).await
        }
        Command::Suppressions(command) => {
            ops::suppressions_command(command, &config, &mut std::io::stdout()).await
        }
        Command::Report(args) => {
            summary::report::report_command(args, &config, &mut std::io::stdout()).await
        }
    };
    result.inspect_err(|err| tracing::error!(error = format!("{err:#}"), "corral-worker failed"))
}
