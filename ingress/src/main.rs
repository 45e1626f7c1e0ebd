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
async fn main() -> anyhow::Result<()> {
    let config = IngressConfig::parse();
    telemetry::init_tracing(&config.log);
    let token = CancellationToken::new();
    shutdown::cancel_on_signal(token.clone());
    let app = Application::build(config, token).inspect_err(|err| {
        tracing::error!(error = format!("{err:#}"), "corral-ingress cannot start");
    })?;
    app.run_until_stopped().await
}
