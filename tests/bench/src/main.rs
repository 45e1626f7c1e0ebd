//! corral's benchmark suite: limit probes, ingress alone, worker alone, and
//! the whole pipeline at fixed rates. See docs/benchmarks.md; `scripts/bench`
//! builds the release binaries and runs `corral-bench all`.
//!
//! # Layout
//!
//! - `main.rs`: the command line (`all`, `report`, `worker`, `latency`, …).
//! - `bench`: the suite itself, its results, and the report written from them.
//! - `probes`: the broker's and the database's own limits, measured with
//!   bare clients, that corral's numbers are divided by.

use std::{path::PathBuf, time::Duration};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use corral_testkit::{config, fixtures};

mod bench;
mod probes;

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
    /// Everything: probes, ingress alone, worker alone, pipeline; writes
    /// benchmarks.md, benchmarks.json and benchmarks.svg. Run it through
    /// `scripts/bench` (it needs CORRAL_TEST_BIN_DIR pointing at release binaries).
    All {
        /// A shorter run (one pre-fill of 100,000, 5 s per ingress run).
        #[arg(long)]
        quick: bool,
        /// Directory to write the results to. Its previous benchmarks.json,
        /// if any, is the "before" the report compares with.
        #[arg(long, default_value = "docs")]
        out: PathBuf,
        /// Pre-fill the worker-alone queue with this many webhooks per
        /// message (envelope 2, as a coalescing ingress publishes); one per
        /// message (envelope 1) without it.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=10_000))]
        prefill_batch: Option<u64>,
    },
    /// Only the HTTP ceiling and ingress alone at each connection count
    /// (the wide ones too); prints each run as JSON.
    Ingress {
        /// Closed-loop connections; repeat for several.
        #[arg(long = "connections", default_values_t = [64, 256])]
        connections: Vec<usize>,
        /// Connections held at once by the wide runs (ingress only, its
        /// CORRAL_MAX_CONNECTIONS raised to fit); repeat for several.
        #[arg(long = "wide", default_values_t = [4096])]
        wide: Vec<usize>,
        /// Seconds measured per run, after a 2 s warm-up.
        #[arg(long, default_value_t = 15)]
        seconds: u64,
    },
    /// Serve the HTTP ceiling (a bare actix-web server answering every
    /// webhook POST with 200) until stopped; `all` and `ingress` start it.
    HttpCeiling {
        /// Address to listen on.
        #[arg(long)]
        listen: String,
        /// HTTP worker threads; 0 means one per CPU.
        #[arg(long, default_value_t = 0)]
        workers: usize,
        /// Milliseconds each answer waits after its body was read (0: none).
        #[arg(long, default_value_t = 0.0)]
        hold_ms: f64,
    },
    /// Rewrite benchmarks.md and benchmarks.svg from an existing benchmarks.json.
    Report {
        /// Directory holding benchmarks.json; the files are written there.
        #[arg(long, default_value = "docs")]
        dir: PathBuf,
    },
    /// Only the worker draining a pre-filled queue, with extra settings
    /// (`--env CORRAL_BATCH_MAX=1000`), for tuning.
    Drain {
        /// Webhooks to pre-fill.
        #[arg(long, default_value_t = 100_000)]
        messages: usize,
        /// Webhooks per message (envelope 2); one per message (envelope 1)
        /// without it.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=10_000))]
        batch: Option<u64>,
        /// Extra worker settings, `KEY=VALUE`.
        #[arg(long = "env", value_parser = parse_env)]
        env: Vec<(String, String)>,
    },
    /// Only the result-event relay: a worker emptying a pre-filled outbox
    /// into a bound quorum queue, beside the publish probe (64 in flight,
    /// 4 channels) measured just before it.
    Relay {
        /// Events to publish.
        #[arg(long, default_value_t = 100_000)]
        events: usize,
        /// Pre-fill the main queue instead (100 webhooks per message): the
        /// worker stores them and relays their events meanwhile.
        #[arg(long)]
        drain: bool,
        /// Seconds of the publish probe.
        #[arg(long, default_value_t = 10)]
        probe_seconds: u64,
        /// Extra worker settings, `KEY=VALUE`.
        #[arg(long = "env", value_parser = parse_env)]
        env: Vec<(String, String)>,
    },
    /// Only the broker's own confirm latency at fixed publish rates, and
    /// ingress's answer latency alone (no worker) at the same rates, the queue
    /// kept empty by a bare consumer.
    Latency {
        /// Publishes (and webhooks) per second; repeat for several.
        #[arg(long = "rate", required = true)]
        rates: Vec<f64>,
        /// Seconds measured per rate, after a 2 s warm-up.
        #[arg(long, default_value_t = 20)]
        seconds: u64,
    },
    /// Only ingress through the PostgreSQL spool, its broker gone, against
    /// the bare spool INSERT; prints each run as JSON.
    Spool {
        /// Closed-loop connections; repeat for several.
        #[arg(long = "connections", default_values_t = [64, 256])]
        connections: Vec<usize>,
        /// Seconds measured per run, after a 2 s warm-up.
        #[arg(long, default_value_t = 15)]
        seconds: u64,
    },
    /// Only the pipeline over SQS (the local moto server) at fixed rates,
    /// in each shape (default, no linger, FIFO): requests per webhook.
    Sqs {
        /// Webhooks per second; repeat for several.
        #[arg(long = "rate", default_values_t = [1_000.0, 5_000.0])]
        rates: Vec<f64>,
        /// Seconds measured per run, after a 2 s warm-up.
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        /// Put the runs into this directory's benchmarks.json (replacing its
        /// SQS runs) and rewrite the report from it, instead of printing them.
        #[arg(long)]
        into: Option<PathBuf>,
    },
    /// Only the pipeline on a three-node RabbitMQ cluster of its own
    /// (`scripts/services --cluster`) at fixed rates: each part's CPU per
    /// webhook, the sizing table's inputs.
    Sizing {
        /// Webhooks per second; repeat for several.
        #[arg(long = "rate", default_values_t = [1_000.0, 3_000.0])]
        rates: Vec<f64>,
        /// Seconds measured per run, after a 2 s warm-up.
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        /// Put the runs into this directory's benchmarks.json (replacing its
        /// sizing runs) and rewrite the report from it, instead of printing them.
        #[arg(long)]
        into: Option<PathBuf>,
    },
    /// Only the signed route beside the token route: ingress alone with a
    /// signing secret, each route loaded in turn, in pairs; prints each pair
    /// as JSON, or puts them into a directory's results.
    Signed {
        /// Closed-loop connections; repeat for several.
        #[arg(long = "connections", default_values_t = [64])]
        connections: Vec<usize>,
        /// Seconds measured per run, after a 2 s warm-up.
        #[arg(long, default_value_t = 15)]
        seconds: u64,
        /// Pairs of runs (token route, signed route), every other one in
        /// the reverse order.
        #[arg(long, default_value_t = 4)]
        pairs: usize,
        /// Put the pairs into this directory's benchmarks.json (replacing
        /// its signed-route pairs) and rewrite the report from it, instead
        /// of printing them.
        #[arg(long)]
        into: Option<PathBuf>,
    },
    /// Only the broker's and the database's own limits.
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
        Command::All {
            quick,
            out,
            prefill_batch,
        } => {
            let mut plan = if quick {
                bench::Plan::quick()
            } else {
                bench::Plan::full()
            };
            plan.prefill_batch = prefill_batch.map(|n| n as usize);
            let baseline = read_results(&out)
                .ok()
                .map(|previous| bench::Baseline::of(&previous));
            let results = bench::run(plan, baseline).await?;
            bench::write(&results, &out)?;
            eprintln!("bench: wrote {}/benchmarks.{{md,json,svg}}", out.display());
        }
        Command::Report { dir } => {
            let results = read_results(&dir)?;
            bench::write(&results, &dir)?;
        }
        Command::Ingress {
            connections,
            wide,
            seconds,
        } => {
            let plan = bench::Plan {
                seconds,
                connections,
                wide_connections: wide,
                ..bench::Plan::quick()
            };
            let (ceiling, ingress) = bench::ingress_runs(&plan).await?;
            let (wide, bare, holding) = bench::wide_runs(&plan).await?;
            let holding: Vec<_> = holding.into_iter().map(|(_, run)| run).collect();
            for run in ceiling
                .iter()
                .chain(&ingress)
                .chain(&wide)
                .chain(&bare)
                .chain(&holding)
            {
                eprintln!("{}", serde_json::to_string(run)?);
            }
        }
        Command::HttpCeiling {
            listen,
            workers,
            hold_ms,
        } => {
            let hold = Duration::from_secs_f64(hold_ms.max(0.0) / 1000.0);
            probes::serve_http_ceiling(&listen, workers, hold).await?;
        }
        Command::Drain {
            messages,
            batch,
            env,
        } => {
            let run = bench::worker_alone_with(messages, batch.map(|n| n as usize), &env).await?;
            eprintln!("{}", serde_json::to_string(&run)?);
        }
        Command::Relay {
            events,
            drain,
            probe_seconds,
            env,
        } => {
            let probe = probes::publish(&probes::PublishProbe {
                amqp: config::amqp(corral_testkit::unique_name("probe")),
                channels: 4,
                in_flight: 64,
                duration: Duration::from_secs(probe_seconds),
                body: fixtures::SMS_SUCCESS.as_bytes().to_vec(),
                delete_after: true,
            })
            .await?;
            eprintln!("{}: {:.0}/s", probe.name, probe.per_second);
            let run = bench::relay_run(events, drain, &env).await?;
            eprintln!("{}", serde_json::to_string(&run)?);
            eprintln!(
                "relay: {:.0} events/s, {:.2}x the publish probe",
                run.events_per_sec,
                run.events_per_sec / probe.per_second
            );
        }
        Command::Spool {
            connections,
            seconds,
        } => {
            let plan = bench::Plan {
                seconds,
                spool_connections: connections,
                ..bench::Plan::quick()
            };
            for run in bench::spool_runs(&plan).await? {
                eprintln!("{}", serde_json::to_string(&run)?);
            }
        }
        Command::Sqs {
            rates,
            seconds,
            into,
        } => {
            let plan = bench::Plan {
                pipeline_seconds: seconds,
                sqs_rates: rates,
                ..bench::Plan::quick()
            };
            let runs = bench::sqs_runs(&plan).await?;
            put_or_print(into, "SQS runs", runs, |results, runs| {
                results.plan.sqs_rates = plan.sqs_rates;
                results.sqs = runs;
            })?;
        }
        Command::Sizing {
            rates,
            seconds,
            into,
        } => {
            let plan = bench::Plan {
                pipeline_seconds: seconds,
                sizing_rates: rates,
                ..bench::Plan::quick()
            };
            let runs = bench::sizing_runs(&plan).await?;
            put_or_print(into, "sizing runs", runs, |results, runs| {
                results.plan.sizing_rates = plan.sizing_rates;
                results.sizing = runs;
            })?;
        }
        Command::Latency { rates, seconds } => {
            for rate in rates {
                let (probe, ingress) =
                    bench::latency_at(rate, Duration::from_secs(seconds)).await?;
                eprintln!("{}", serde_json::to_string(&probe)?);
                eprintln!("{}", serde_json::to_string(&ingress)?);
            }
        }
        Command::Signed {
            connections,
            seconds,
            pairs,
            into,
        } => {
            let plan = bench::Plan {
                seconds,
                signed_connections: connections,
                signed_pairs: pairs,
                ..bench::Plan::quick()
            };
            let runs = bench::signed_runs(&plan).await?;
            put_or_print(into, "signed-route pairs", runs, |results, runs| {
                results.plan.signed_connections = plan.signed_connections;
                results.plan.signed_pairs = plan.signed_pairs;
                results.signed = runs;
            })?;
        }
        Command::Probes {
            seconds,
            rows,
            database_url,
        } => {
            for (in_flight, channels) in [(64, 1), (64, 4), (1024, 4)] {
                let result = probes::publish(&probes::PublishProbe {
                    amqp: config::amqp(corral_testkit::unique_name("probe")),
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
                for kind in [
                    probes::InsertKind::EventsOnly,
                    probes::InsertKind::WithLatest,
                ] {
                    let result = probes::insert(&database_url, rows, batch, kind).await?;
                    eprintln!("{}: {:.0}/s", result.name, result.per_second);
                }
                let result = probes::store(&database_url, rows, batch).await?;
                eprintln!("{}: {:.0}/s", result.name, result.per_second);
            }
        }
    }
    Ok(())
}

/// With a directory, puts `runs` into its benchmarks.json (`put` says where)
/// and rewrites the report from it; without one, prints each run as JSON.
fn put_or_print<R: serde::Serialize>(
    into: Option<PathBuf>,
    what: &str,
    runs: Vec<R>,
    put: impl FnOnce(&mut bench::Results, Vec<R>),
) -> anyhow::Result<()> {
    let Some(dir) = into else {
        for run in &runs {
            eprintln!("{}", serde_json::to_string(run)?);
        }
        return Ok(());
    };
    let mut results = read_results(&dir)?;
    put(&mut results, runs);
    bench::write(&results, &dir)?;
    eprintln!("bench: wrote the {what} into {}", dir.display());
    Ok(())
}

/// `benchmarks.json` of `dir`.
fn read_results(dir: &std::path::Path) -> anyhow::Result<bench::Results> {
    let path = dir.join("benchmarks.json");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

fn parse_env(pair: &str) -> Result<(String, String), String> {
    pair.split_once('=')
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .ok_or_else(|| format!("expected KEY=VALUE, got {pair:?}"))
}
