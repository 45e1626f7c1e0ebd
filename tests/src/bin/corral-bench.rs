//! corral's benchmark suite: limit probes, ingress alone, worker alone, and
//! the whole pipeline at fixed rates. See docs/benchmarks.md.

use std::time::Duration;

use clap::{Parser, Subcommand};
use corral_shared::config::AmqpSettings;
use corral_tests::{fixtures, probes};

#[derive(Debug, Parser)]
#[command(
    name = "corral-bench",
    about = "corral's benchmark suite (see docs/benchmarks.md)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Measure the broker's and the database's own limits with corral's payloads.
    Probes {
        /// Seconds per publish probe.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Rows for the insert probe.
        #[arg(long, default_value_t = 200_000)]
        rows: usize,
        /// PostgreSQL server URL (a database is created and dropped on it).
        #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
        database_url: String,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Probes {
            seconds,
            rows,
            database_url,
        } => {
            for (in_flight, channels) in [(64, 1), (64, 4), (1024, 4)] {
                let result = probes::publish(&probes::PublishProbe {
                    amqp: AmqpSettings::local(corral_tests::unique_name("probe")),
                    channels,
                    in_flight,
                    duration: Duration::from_secs(seconds),
                    body: fixtures::SMS_SUCCESS.as_bytes().to_vec(),
                    delete_after: true,
                })
                .await?;
                eprintln!("{}: {:.0}/s", result.name, result.per_second);
            }
            for batch in [500, 1000] {
                let result = probes::insert(&database_url, rows, batch).await?;
                eprintln!("{}: {:.0}/s", result.name, result.per_second);
            }
        }
    }
    Ok(())
}
