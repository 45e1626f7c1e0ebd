use clap::Parser;
use corral_ingress::{Application, config::IngressConfig};
use corral_shared::{shutdown, telemetry};
use tokio_util::sync::CancellationToken;

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
