//! What is planned and what is measured, and running the whole suite.

use std::time::Duration;

use serde::Serialize;

use corral_testkit::{config, database, fixtures, unique_name};

use crate::probes::{self, ProbeResult, PublishProbe};

use super::runs::*;

/// What to run and for how long.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Plan {
    /// Seconds per publish probe and per ingress run.
    pub seconds: u64,
    /// Connections for the ingress-alone runs.
    pub connections: Vec<usize>,
    /// Queue sizes for the worker-alone runs.
    pub prefill: Vec<usize>,
    /// Fractions of the measured ingress maximum for the pipeline runs.
    pub rates: Vec<f64>,
    /// Seconds per pipeline run.
    pub pipeline_seconds: u64,
    /// Rows of the insert probe.
    pub insert_rows: usize,
}

impl Plan {
    /// The suite as the issue asks for it.
    pub fn full() -> Self {
        Self {
            seconds: 15,
            connections: vec![16, 64, 256],
            prefill: vec![100_000, 1_000_000],
            rates: vec![0.25, 0.5, 0.9],
            pipeline_seconds: 20,
            insert_rows: 200_000,
        }
    }

    /// A few-minute version for trying changes.
    pub fn quick() -> Self {
        Self {
            seconds: 5,
            connections: vec![16, 64, 256],
            prefill: vec![100_000],
            rates: vec![0.25, 0.5, 0.9],
            pipeline_seconds: 8,
            insert_rows: 100_000,
        }
    }
}

/// Where the numbers were measured.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Machine {
    /// When.
    pub date: String,
    /// CPU model.
    pub cpu: String,
    /// Cores the OS offers.
    pub cores: usize,
    /// Memory, GiB.
    pub memory_gib: f64,
    /// Kernel.
    pub kernel: String,
    /// RabbitMQ version.
    pub rabbitmq: String,
    /// PostgreSQL version.
    pub postgres: String,
    /// Commit of corral measured.
    pub commit: String,
}

/// Ingress alone at a concurrency.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct IngressRun {
    /// Closed-loop connections.
    pub connections: usize,
    /// Webhooks answered 200 per second.
    pub accepted_per_sec: f64,
    /// Answers other than 200, and connection errors.
    pub not_accepted: u64,
    /// Latency percentiles, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// 99.9th percentile, ms.
    pub p999_ms: f64,
    /// Peak RSS of the ingress process, MiB.
    pub peak_rss_mib: f64,
    /// CPU of the ingress process, % of one core.
    pub cpu_percent: f64,
    /// CPU of the load generator, % of one core.
    pub generator_cpu_percent: f64,
}

/// Worker alone draining a pre-filled queue.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct WorkerRun {
    /// Messages in the queue at start.
    pub messages: usize,
    /// Seconds from worker start to the last row.
    pub seconds: f64,
    /// Rows per second.
    pub rows_per_sec: f64,
    /// Peak RSS of the worker, MiB.
    pub peak_rss_mib: f64,
    /// CPU of the worker, % of one core.
    pub cpu_percent: f64,
}

/// The whole pipeline at a fixed arrival rate.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct PipelineRun {
    /// Fraction of the ingress maximum.
    pub fraction: f64,
    /// Offered webhooks per second.
    pub rate: f64,
    /// Answered 200 per second.
    pub accepted_per_sec: f64,
    /// Answer latency from the scheduled send, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// 99.9th percentile, ms.
    pub p999_ms: f64,
    /// `received_at` → row written, from the rows themselves, ms.
    pub e2e_p50_ms: f64,
    /// 99th percentile of the same, ms.
    pub e2e_p99_ms: f64,
    /// Lost and duplicated webhooks (the verifier's counts; must be 0).
    pub lost: u64,
    /// Duplicated.
    pub duplicated: u64,
    /// The verifier found nothing wrong at all (lost, duplicated, unexpected,
    /// changed, stale latest state, quarantined) and the pipeline had drained.
    #[serde(default)]
    pub verified: bool,
    /// Peak RSS of ingress and worker, MiB.
    pub ingress_peak_rss_mib: f64,
    /// Peak RSS of the worker, MiB.
    pub worker_peak_rss_mib: f64,
}

/// Everything measured.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Results {
    /// Where.
    pub machine: Machine,
    /// What was planned.
    pub plan: Plan,
    /// Limit probes.
    pub probes: Vec<ProbeResult>,
    /// Ingress alone.
    pub ingress: Vec<IngressRun>,
    /// Worker alone.
    pub worker: Vec<WorkerRun>,
    /// Pipeline.
    pub pipeline: Vec<PipelineRun>,
    /// The layers under the pipeline's answer latency, at the same rates.
    #[serde(default)]
    pub latency: Vec<LatencyRun>,
}

/// At one of the pipeline's rates: the broker alone and ingress alone.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct LatencyRun {
    /// Fraction of the best ingress rate.
    pub fraction: f64,
    /// The broker's own confirm latency (bare client, bare consumer).
    pub broker: probes::LatencyProbe,
    /// Ingress's answer latency with no worker.
    pub ingress: IngressRun,
}

/// Runs the whole suite.
pub async fn run(plan: Plan) -> anyhow::Result<Results> {
    let machine = machine().await?;
    eprintln!(
        "bench: {} cores, {}, RabbitMQ {}, {}",
        machine.cores, machine.cpu, machine.rabbitmq, machine.postgres
    );
    let probes = limit_probes(&plan).await?;
    let ingress = ingress_runs(&plan).await?;
    let worker = worker_runs(&plan).await?;
    // The pipeline runs at fractions of the best rate ingress reached alone.
    let max = ingress
        .iter()
        .map(|r| r.accepted_per_sec)
        .fold(0.0, f64::max);
    let pipeline = pipeline_runs(&plan, max).await?;
    let latency = latency_runs(&plan, max).await?;
    Ok(Results {
        machine,
        plan,
        probes,
        ingress,
        worker,
        pipeline,
        latency,
    })
}

/// The publish and insert probes: this machine's ceilings.
async fn limit_probes(plan: &Plan) -> anyhow::Result<Vec<ProbeResult>> {
    let mut probe_results = Vec::new();
    for (in_flight, channels) in [(64, 1), (64, 4), (1024, 4)] {
        let result = probes::publish(&PublishProbe {
            amqp: config::amqp(unique_name("bench-probe")),
            channels,
            in_flight,
            duration: Duration::from_secs(plan.seconds),
            body: fixtures::SMS_SUCCESS.as_bytes().to_vec(),
            delete_after: true,
        })
        .await?;
        eprintln!("bench: {}: {:.0}/s", result.name, result.per_second);
        probe_results.push(result);
    }
    for batch in [500, 1000] {
        for kind in [
            probes::InsertKind::EventsOnly,
            probes::InsertKind::WithLatest,
        ] {
            let result =
                probes::insert(database::SERVER_URL, plan.insert_rows, batch, kind).await?;
            eprintln!("bench: {}: {:.0}/s", result.name, result.per_second);
            probe_results.push(result);
        }
    }
    Ok(probe_results)
}

/// Ingress alone at each planned connection count.
async fn ingress_runs(plan: &Plan) -> anyhow::Result<Vec<IngressRun>> {
    let mut ingress_runs = Vec::new();
    for &connections in &plan.connections {
        let run = ingress_alone(connections, Duration::from_secs(plan.seconds)).await?;
        eprintln!(
            "bench: ingress at {connections} connections: {:.0}/s, p99 {:.2} ms, RSS {:.1} MiB",
            run.accepted_per_sec, run.p99_ms, run.peak_rss_mib
        );
        ingress_runs.push(run);
    }
    Ok(ingress_runs)
}

/// The worker alone, draining each planned pre-fill.
async fn worker_runs(plan: &Plan) -> anyhow::Result<Vec<WorkerRun>> {
    let mut worker_runs = Vec::new();
    for &messages in &plan.prefill {
        let run = worker_alone(messages).await?;
        eprintln!(
            "bench: worker draining {messages}: {:.0} rows/s, RSS {:.1} MiB",
            run.rows_per_sec, run.peak_rss_mib
        );
        worker_runs.push(run);
    }
    Ok(worker_runs)
}

/// The whole pipeline at each planned fraction of `max`.
async fn pipeline_runs(plan: &Plan, max: f64) -> anyhow::Result<Vec<PipelineRun>> {
    let mut pipeline_runs = Vec::new();
    for &fraction in &plan.rates {
        let run = pipeline(
            fraction,
            max * fraction,
            Duration::from_secs(plan.pipeline_seconds),
        )
        .await?;
        eprintln!(
            "bench: pipeline at {:.0}% ({:.0}/s): p99 {:.2} ms, end-to-end p99 {:.1} ms, lost {} duplicated {}",
            fraction * 100.0,
            run.rate,
            run.p99_ms,
            run.e2e_p99_ms,
            run.lost,
            run.duplicated
        );
        pipeline_runs.push(run);
    }
    Ok(pipeline_runs)
}

/// The broker alone and ingress alone at the pipeline's rates.
async fn latency_runs(plan: &Plan, max: f64) -> anyhow::Result<Vec<LatencyRun>> {
    let mut latency_runs = Vec::new();
    for &fraction in &plan.rates {
        let (broker, ingress) =
            latency_at(max * fraction, Duration::from_secs(plan.pipeline_seconds)).await?;
        eprintln!(
            "bench: at {:.0}/s the broker alone confirms with p99 {:.2} ms, ingress alone answers with p99 {:.2} ms",
            broker.rate, broker.p99_ms, ingress.p99_ms
        );
        latency_runs.push(LatencyRun {
            fraction,
            broker,
            ingress,
        });
    }
    Ok(latency_runs)
}
