//! Stopping and starting the shared RabbitMQ and PostgreSQL.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, ensure};

use corral_testkit::database;

pub(super) fn shell(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program}"))?;
    ensure!(
        output.status.success(),
        "{program} {} failed: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

pub(super) fn rabbitmqctl(args: &[&str]) -> anyhow::Result<()> {
    shell("rabbitmqctl", args)
}

pub(super) fn postgres_version() -> anyhow::Result<String> {
    let mut versions: Vec<String> = std::fs::read_dir("/etc/postgresql")
        .context("reading /etc/postgresql (the suite restarts the local Debian cluster)")?
        .filter_map(|entry| {
            entry
                .ok()
                .map(|e| e.file_name().to_string_lossy().into_owned())
        })
        .collect();
    versions.sort_by_key(|v| v.parse::<u32>().unwrap_or(0));
    versions
        .pop()
        .context("no PostgreSQL cluster under /etc/postgresql")
}

/// The shared services a scenario has stopped. Dropping it starts them again
/// (synchronously: `rabbitmqctl start_app` and `pg_ctlcluster start` return
/// once the service is up), so a scenario that fails half-way never leaves
/// the next one, or the test database's cleanup, without them. Create it
/// after the scenario's [`super::stack::Stack`]: it is then dropped first.
#[derive(Debug, Default)]
pub(super) struct Stopped {
    broker: bool,
    /// The cluster's version, while it is stopped.
    postgres: Option<String>,
}

impl Stopped {
    /// `rabbitmqctl stop_app`: the node stays up, its listeners close.
    pub(super) fn stop_broker(&mut self) -> anyhow::Result<()> {
        self.broker = true;
        rabbitmqctl(&["stop_app"])
    }

    pub(super) fn start_broker(&mut self) -> anyhow::Result<()> {
        rabbitmqctl(&["start_app"])?;
        self.broker = false;
        Ok(())
    }

    /// `pg_ctlcluster … stop` (fast mode: sessions are terminated).
    pub(super) fn stop_postgres(&mut self) -> anyhow::Result<()> {
        let version = postgres_version()?;
        self.postgres = Some(version.clone());
        pg_ctlcluster(&version, "stop")
    }

    pub(super) fn start_postgres(&mut self) -> anyhow::Result<()> {
        if let Some(version) = &self.postgres {
            pg_ctlcluster(version, "start")?;
        }
        self.postgres = None;
        Ok(())
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        if self.broker {
            let _ = self.start_broker();
        }
        if self.postgres.is_some() {
            let _ = self.start_postgres();
        }
    }
}

pub(super) fn pg_ctlcluster(version: &str, action: &str) -> anyhow::Result<()> {
    shell(
        "pg_ctlcluster",
        &["--skip-systemctl-redirect", version, "main", action],
    )
}

/// Starts RabbitMQ's app and the PostgreSQL cluster again if a scenario left
/// them down, and waits until both accept connections.
pub async fn ensure_services_up(timeout: Duration) {
    let deadline = Instant::now() + timeout;
    let port_open = |port: u16| std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
    if !port_open(5672) {
        let _ = rabbitmqctl(&["start_app"]);
    }
    if !port_open(5432)
        && let Ok(version) = postgres_version()
    {
        let _ = pg_ctlcluster(&version, "start");
    }
    while Instant::now() < deadline {
        let broker =
            corral_runtime::amqp::connect(&corral_testkit::config::amqp("probe"), "corral-faults")
                .await;
        let database = tokio_postgres::connect(database::SERVER_URL, tokio_postgres::NoTls).await;
        if let (Ok(connection), Ok(_)) = (broker, database) {
            corral_runtime::amqp::close(&connection, Duration::from_secs(10), "ok").await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
