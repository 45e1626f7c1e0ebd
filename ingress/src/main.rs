use std::process::ExitCode;

use clap::Parser;
use corral_ingress::{Application, config::IngressConfig};
use corral_runtime::{shutdown, telemetry};
use tokio_util::sync::CancellationToken;

// jemalloc with background purging hands memory back to the system after a
// burst or a broker outage; glibc's per-thread arenas keep what each
// reconnect's I/O thread freed (the fault suite's RSS check watches this).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let config = IngressConfig::parse();
    telemetry::init_tracing(&config.log);
    let token = CancellationToken::new();
    shutdown::cancel_on_signal(token.clone());
    // Each error is logged once (returning it from main would print it again).
    let app = match Application::build(config, token) {
        Ok(app) => app,
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "corral-ingress cannot start");
            return ExitCode::FAILURE;
        }
    };
    match app.run_until_stopped().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "corral-ingress failed");
            ExitCode::FAILURE
        }
    }
}
