//! What each part costs per webhook on a three-node RabbitMQ cluster, at fixed
//! rates: the inputs of the sizing table in
//! docs/operations/configure-and-size.md. Every part runs on this machine's
//! cores, so the cluster is no faster than one node here; what carries over
//! to bigger machines is CPU time per webhook, not the rate.
//!
//! Each part's CPU is read from /proc before and after: ingress, worker, each
//! broker node (its Erlang VM), PostgreSQL (every `postgres` process, with the
//! postmaster's reaped children), and the load generator (this process). The
//! parts idle first for a few seconds, so the table can say what a part costs
//! at rest and what each webhook adds on top.

use std::{collections::BTreeMap, fmt::Write as _, time::Duration};

use anyhow::Context as _;
use serde::Serialize;

use corral_loadgen::{self as loadgen, VerifyOptions};
use corral_testkit::{
    cluster::{NODES, RabbitCluster},
    process::{Process, ProcessConfig},
    unique_name,
    wait::until_true,
};

use crate::probes;

use super::{results::*, runs::*, sampler::*};

/// How long the parts are watched at rest before the load.
const IDLE: Duration = Duration::from_secs(5);

/// One fixed rate on the cluster.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct SizingRun {
    /// Webhooks/s offered.
    pub rate: f64,
    /// Webhooks answered 2xx over the whole run (warm-up included), all of
    /// which the worker stored before the CPU was read.
    pub webhooks: u64,
    /// Seconds from the load's start to the last webhook stored.
    pub seconds: f64,
    /// Ingress's webhooks per AMQP message over the run.
    pub webhooks_per_message: Option<f64>,
    /// Answer p99 (ms, from the scheduled send).
    pub p99_ms: f64,
    /// Per part: CPU % of one core at rest (before the load).
    pub idle_percent: BTreeMap<String, f64>,
    /// Per part: CPU µs per webhook over the run, the rest subtracted.
    pub us_per_webhook: BTreeMap<String, f64>,
    /// Share of the machine's cores busy during the run.
    pub machine_busy_percent: f64,
    /// PostgreSQL's write-ahead log written per webhook, bytes: what the
    /// database's disk must take at a rate.
    #[serde(default)]
    pub wal_bytes_per_webhook: f64,
    pub lost: u64,
    pub duplicated: u64,
    pub verified: bool,
}

/// Starts a cluster and measures each rate on it, each with its own prefix
/// and database.
pub async fn sizing_runs(plan: &Plan) -> anyhow::Result<Vec<SizingRun>> {
    if plan.sizing_rates.is_empty() {
        return Ok(Vec::new());
    }
    let duration = Duration::from_secs(plan.pipeline_seconds);
    let cluster = RabbitCluster::start().await?;
    eprintln!(
        "sizing: cluster started in {:.0} s",
        cluster.started_in().as_secs_f64()
    );
    let mut runs = Vec::new();
    for &rate in &plan.sizing_rates {
        let run = sizing_run(&cluster, rate, duration).await?;
        eprintln!("{}", serde_json::to_string(&run)?);
        runs.push(run);
    }
    Ok(runs)
}

async fn sizing_run(
    cluster: &RabbitCluster,
    rate: f64,
    duration: Duration,
) -> anyhow::Result<SizingRun> {
    let prefix = unique_name("sizing");
    let db = probes::migrated_database().await?;
    let urls = cluster.urls();
    let mut worker = Process::start_ready(
        ProcessConfig::worker(&db.url, &prefix)
            .env("CORRAL_AMQP_URL", urls.clone())
            .env("CORRAL_DB_POOL_SIZE", "4")
            .env("CORRAL_LOG", "warn"),
    )
    .await;
    let mut ingress = Process::start_ready(
        ProcessConfig::ingress(&prefix, TOKEN)
            .env("CORRAL_AMQP_URL", urls)
            .env("CORRAL_LOG", "warn"),
    )
    .await;
    let parts = Parts::of(cluster, &ingress, &worker)?;
    let idle = parts.watch(IDLE).await;
    let client = db.client().await;
    let wal_before = wal_lsn(&client).await?;
    let before = parts.read();
    let batches_before = publish_batches(&ingress).await;
    let run = loadgen::run(open_loop(&ingress, rate, duration)).await?;
    let published = stored_all(&ingress, &worker).await?;
    let after = parts.read();
    let wal = wal_since(&client, &wal_before).await?;
    let batches_after = publish_batches(&ingress).await;
    let verification = loadgen::verify(&db.url, &run.sent, &VerifyOptions::default()).await?;
    ingress.terminate(Duration::from_secs(40)).await;
    worker.terminate(Duration::from_secs(40)).await;
    let seconds = (after.at - before.at).as_secs_f64();
    Ok(SizingRun {
        rate,
        webhooks: published,
        seconds,
        webhooks_per_message: webhooks_per_message(batches_before, batches_after),
        p99_ms: ms(run.report.latency_us.p99),
        us_per_webhook: after.per_webhook(&before, &idle, published),
        idle_percent: idle.percent,
        machine_busy_percent: after.machine_busy_since(&before),
        wal_bytes_per_webhook: wal / published.max(1) as f64,
        lost: verification.lost,
        duplicated: verification.duplicated,
        verified: verification.is_ok() && verification.drained,
    })
}

/// PostgreSQL's current write-ahead log position.
async fn wal_lsn(client: &tokio_postgres::Client) -> anyhow::Result<String> {
    let row = client
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await?;
    Ok(row.get(0))
}

/// Bytes of write-ahead log written since `lsn`, by the whole server.
async fn wal_since(client: &tokio_postgres::Client, lsn: &str) -> anyhow::Result<f64> {
    let row = client
        .query_one(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::text::pg_lsn)::float8",
            &[&lsn],
        )
        .await?;
    Ok(row.get(0))
}

/// Waits until the worker has taken every webhook ingress published;
/// returns how many that was.
async fn stored_all(ingress: &Process, worker: &Process) -> anyhow::Result<u64> {
    let published = ingress
        .metrics()
        .await
        .sum("corral_ingress_published_total") as u64;
    until_true(
        "the worker to take every webhook ingress published",
        Duration::from_secs(120),
        || async { worker.metrics().await.sum("corral_worker_messages_total") as u64 >= published },
    )
    .await;
    Ok(published)
}

/// The processes measured, by part name.
struct Parts {
    pids: Vec<(String, u32)>,
}

/// CPU ticks per part at one moment, and the machine's.
struct Reading {
    ticks: BTreeMap<String, u64>,
    machine: MachineTicks,
    at: std::time::Instant,
}

/// What the parts cost at rest: CPU % of one core each.
struct Idle {
    percent: BTreeMap<String, f64>,
}

impl Parts {
    fn of(cluster: &RabbitCluster, ingress: &Process, worker: &Process) -> anyhow::Result<Self> {
        let mut pids = vec![
            ("ingress".to_owned(), ingress.pid()),
            ("worker".to_owned(), worker.pid()),
            ("load generator".to_owned(), std::process::id()),
        ];
        for node in 0..NODES {
            let pid = cluster
                .node_pid(node)
                .with_context(|| format!("node {node}'s pid"))?;
            pids.push((format!("broker node {node}"), pid));
        }
        Ok(Self { pids })
    }

    fn read(&self) -> Reading {
        let mut ticks: BTreeMap<String, u64> = self
            .pids
            .iter()
            .map(|(name, pid)| (name.clone(), cpu_ticks(*pid).unwrap_or(0)))
            .collect();
        ticks.insert("PostgreSQL".to_owned(), postgres_ticks());
        Reading {
            ticks,
            machine: MachineTicks::now(),
            at: std::time::Instant::now(),
        }
    }

    async fn watch(&self, period: Duration) -> Idle {
        let start = self.read();
        tokio::time::sleep(period).await;
        let end = self.read();
        let seconds = (end.at - start.at).as_secs_f64();
        let percent = end
            .ticks
            .iter()
            .map(|(name, ticks)| {
                let used = (ticks - start.ticks[name]) as f64 / ticks_per_sec();
                (name.clone(), used / seconds * 100.0)
            })
            .collect();
        Idle { percent }
    }
}

impl Reading {
    /// CPU µs per webhook since `before`, each part's rest subtracted.
    fn per_webhook(&self, before: &Reading, idle: &Idle, webhooks: u64) -> BTreeMap<String, f64> {
        let seconds = (self.at - before.at).as_secs_f64();
        self.ticks
            .iter()
            .map(|(name, ticks)| {
                let used = (ticks - before.ticks[name]) as f64 / ticks_per_sec();
                let rest = idle.percent[name] / 100.0 * seconds;
                let us = (used - rest).max(0.0) * 1e6 / webhooks.max(1) as f64;
                (name.clone(), us)
            })
            .collect()
    }

    fn machine_busy_since(&self, before: &Reading) -> f64 {
        self.machine.busy_share_since(&before.machine) * 100.0
    }
}

/// The parts in the order the table gives them.
const PARTS: [&str; 7] = [
    "ingress",
    "broker node 0",
    "broker node 1",
    "broker node 2",
    "worker",
    "PostgreSQL",
    "load generator",
];

/// The sizing runs: each part's CPU per webhook at each rate, and at rest.
pub(super) fn table(out: &mut String, results: &Results) {
    let Some(first) = results.sizing.first() else {
        return;
    };
    let _ = writeln!(out, "\n## Cost per webhook on a three-node cluster\n");
    let _ = writeln!(
        out,
        "The whole pipeline (one ingress, one worker) against a RabbitMQ cluster of three nodes on this machine \
         (`scripts/services --cluster`: the quorum queue has a replica on each, a confirm waits for two of \
         them on disk), in an open loop at each rate for {} s after a 2 s warm-up, every webhook then stored \
         and verified. CPU is each process's own time from /proc over the run, until the worker had taken \
         every webhook, minus what the part used at rest in the {} s before the load (the last row), divided \
         by the webhooks: what each webhook adds. These are the inputs of the [sizing \
         table](operations/configure-and-size.md#sizing).\n",
        results.plan.pipeline_seconds,
        IDLE.as_secs()
    );
    let head: Vec<String> = PARTS.iter().map(|p| format!("{p} µs")).collect();
    let _ = writeln!(
        out,
        "| webhooks/s | webhooks per message | answer p99 ms | {} | corral's parts µs | WAL bytes per webhook | machine busy % | lost | duplicated | verified |\n|---:|---:|---:|{}---:|---:|---:|---:|---:|---|",
        head.join(" | "),
        "---:|".repeat(PARTS.len())
    );
    for r in &results.sizing {
        let cells: Vec<String> = PARTS
            .iter()
            .map(|p| format!("{:.1}", r.us_per_webhook.get(*p).copied().unwrap_or(0.0)))
            .collect();
        let _ = writeln!(
            out,
            "| {:.0} | {} | {:.1} | {} | **{:.0}** | {:.0} | {:.0} | {} | {} | {} |",
            r.rate,
            per_message(r.webhooks_per_message),
            r.p99_ms,
            cells.join(" | "),
            r.corral_us(),
            r.wal_bytes_per_webhook,
            r.machine_busy_percent,
            r.lost,
            r.duplicated,
            if r.verified { "yes" } else { "**no**" }
        );
    }
    let rest: Vec<String> = PARTS
        .iter()
        .map(|p| format!("{:.1}", first.idle_percent.get(*p).copied().unwrap_or(0.0)))
        .collect();
    let _ = writeln!(
        out,
        "| at rest (CPU % of one core) | | | {} | | | | | | |",
        rest.join(" | ")
    );
}

impl SizingRun {
    /// CPU µs per webhook of everything but the load generator.
    pub fn corral_us(&self) -> f64 {
        self.us_per_webhook
            .iter()
            .filter(|(part, _)| *part != "load generator")
            .map(|(_, us)| us)
            .sum()
    }
}
