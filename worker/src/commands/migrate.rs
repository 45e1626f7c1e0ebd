//! `corral-worker migrate`: create the database if missing and apply the
//! migrations (`worker/migrations/`, under an advisory lock), then exit.

use crate::{config::WorkerConfig, db};

/// Runs `corral-worker migrate`.
pub async fn run(config: &WorkerConfig) -> anyhow::Result<()> {
    config.validate()?;
    let applied = db::migrate(&config.db.target()?).await?;
    tracing::info!(applied, "database is up to date");
    Ok(())
}
