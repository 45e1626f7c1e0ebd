//! What is planned and what is measured, and running the whole suite.

use std::time::Duration;

use serde::Serialize;

use corral_testkit::{config, database, fixtures, unique_name};

use crate::probes::{self, ProbeResult, PublishProbe};

use super::{
    report::{Ceiling, ceiling_of},
    runs::*,
};

/// The pipeline's throughput target, as a multiple of the publish probe (64
/// in flight); its latency targets hold at half that rate.
pub const PIPELINE_TARGET_MULTIPLE: f64 = 1.2;

/// What to run and for how long.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Plan {
    /// Seconds per publish probe and per ingress run.
    pub seconds: u64,
    /// Connections for the ingress-alone runs, and for the HTTP ceiling
    /// measured beside each.
    pub connections: Vec<usize>,
    /// Connections for the ingress-alone runs that hold many keep-alive
    /// connections at once (4,096), reported apart with their connection
    /// errors, 5xx and peak RSS. Absent in results written before them.
    #[serde(default)]
    pub wide_connections: Vec<usize>,
    /// Queue sizes for the worker-alone runs.
    pub prefill: Vec<usize>,
    /// Fractions of the measured ingress maximum for the pipeline runs.
    pub rates: Vec<f64>,
    /// Multiples of the publish probe (64 in flight) for more pipeline runs:
    /// the rates the pipeline's targets are stated at.
    #[serde(default)]
    pub probe_multiples: Vec<f64>,
    /// Webhooks per message in the worker-alone pre-fill: `None` publishes
    /// one webhook per message (envelope 1), `Some(n)` packs `n` webhooks per
    /// message (envelope 2) as ingress does when it coalesces.
    #[serde(default)]
    pub prefill_batch: Option<usize>,
    /// Seconds per pipeline run.
    pub pipeline_seconds: u64,
    /// Rows of the insert probe.
    pub insert_rows: usize,
    /// Connections for the spool runs (ingress with no broker, every webhook
    /// spooled). Absent in results written before the spool.
    #[serde(default)]
    pub spool_connections: Vec<usize>,
    /// Webhooks/s for the runs over SQS (the local moto server). Absent in
    /// results written before SQS.
    #[serde(default)]
    pub sqs_rates: Vec<f64>,
    /// Webhooks/s for the pipeline on a three-node cluster, each part's
    /// CPU per webhook measured. Absent in results written before them.
    #[serde(default)]
    pub sizing_rates: Vec<f64>,
    /// Connections for the signed route measured beside the token route.
    /// Absent in results written before the signed route.
    #[serde(default)]
    pub signed_connections: Vec<usize>,
    /// Pairs of runs (token route, signed route) at each of them, every
    /// other pair in the reverse order.
    #[serde(default = "four")]
    pub signed_pairs: usize,
    /// Events for the result-event runs (the relay alone, and a drain of as
    /// many webhooks with events off and on); 0 runs none, as in results
    /// written before them.
    #[serde(default)]
    pub result_events: usize,
}

impl Plan {
    /// The whole suite, as `scripts/bench` runs it.
    pub fn full() -> Self {
        Self {
            seconds: 15,
            connections: vec![16, 64, 256],
            wide_connections: vec![4096],
            prefill: vec![100_000, 1_000_000],
            rates: vec![0.25, 0.5, 0.9],
            probe_multiples: vec![PIPELINE_TARGET_MULTIPLE, PIPELINE_TARGET_MULTIPLE / 2.0],
            prefill_batch: None,
            pipeline_seconds: 20,
            insert_rows: 200_000,
            spool_connections: vec![64, 256],
            sqs_rates: vec![1_000.0, 5_000.0],
            signed_connections: vec![64],
            sizing_rates: vec![1_000.0, 3_000.0, 5_000.0],
            signed_pairs: 4,
            result_events: 200_000,
        }
    }

    /// A few-minute version for trying changes.
    pub fn quick() -> Self {
        Self {
            seconds: 5,
            connections: vec![16, 64, 256],
            wide_connections: vec![4096],
            prefill: vec![100_000],
            rates: vec![0.25, 0.5, 0.9],
            probe_multiples: vec![PIPELINE_TARGET_MULTIPLE, PIPELINE_TARGET_MULTIPLE / 2.0],
            prefill_batch: None,
            pipeline_seconds: 8,
            insert_rows: 100_000,
            spool_connections: vec![64],
            sqs_rates: vec![1_000.0],
            signed_connections: vec![64],
            sizing_rates: vec![1_000.0],
            signed_pairs: 2,
            result_events: 50_000,
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
    /// `git describe --always --dirty` of the tree measured: the commit, and
    /// whether it had uncommitted changes. `None` in results written before
    /// it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// Ingress alone at a concurrency (or the HTTP ceiling server, measured the
/// same way).
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
    /// Webhooks per AMQP message over the run (ingress's
    /// `corral_ingress_publish_batch_size` sum ÷ count); `None` when ingress
    /// does not export it, and for the HTTP ceiling.
    #[serde(default)]
    pub webhooks_per_message: Option<f64>,
    /// Measured requests whose connection failed or broke (connect, handshake
    /// or mid-request), not timeouts.
    #[serde(default)]
    pub connection_errors: u64,
    /// Measured requests unanswered within the load generator's timeout.
    #[serde(default)]
    pub timeouts: u64,
    /// Measured answers 500–599.
    #[serde(default)]
    pub server_errors: u64,
    /// TCP connections the load generator opened, warm-up included: the
    /// connection count itself when none broke.
    #[serde(default)]
    pub connections_opened: u64,
    /// `CORRAL_MAX_CONNECTIONS` the run set, or `None` for ingress's default.
    #[serde(default)]
    pub max_connections: Option<usize>,
}

/// Worker alone draining a pre-filled queue.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct WorkerRun {
    /// Webhooks in the queue at start.
    pub messages: usize,
    /// Webhooks per AMQP message of the pre-fill (1: envelope 1; more:
    /// envelope 2). Absent, so 1, in results written before.
    #[serde(default = "one")]
    pub webhooks_per_message: usize,
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
    /// The multiple of the publish probe this run's rate was set to, when it
    /// was set that way (`Plan::probe_multiples`) rather than by `fraction`.
    #[serde(default)]
    pub of_publish_probe: Option<f64>,
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
    /// Webhooks per AMQP message ingress published over the run; `None` when
    /// ingress does not export it.
    #[serde(default)]
    pub webhooks_per_message: Option<f64>,
}

/// Ingress with its broker gone: every webhook through the PostgreSQL spool.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct SpoolRun {
    /// Closed-loop connections.
    pub connections: usize,
    /// Webhooks answered 200 (all spooled) per second, measured.
    pub accepted_per_sec: f64,
    /// Answers other than 2xx, and requests without an answer.
    pub not_accepted: u64,
    /// Answer latency, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Webhooks per spool INSERT over the run.
    pub rows_per_insert: Option<f64>,
    /// Ingress's CPU over the run, percent of one core.
    pub cpu_percent: f64,
    /// The bare spool INSERT probe this run compares with (rows/s, one
    /// connection, statements of the run's mean round size rounded up to a
    /// power of two).
    pub probe_per_sec: f64,
    /// The probe's rows per statement.
    pub probe_batch: usize,
    /// The same probe with the spool's largest round: the most one
    /// connection inserts.
    pub ceiling_per_sec: f64,
    /// Its rows per statement.
    pub ceiling_batch: usize,
    /// What the verifier found once a worker drained the spool: lost,
    /// duplicated, and whether everything else was right.
    pub lost: u64,
    /// Duplicated.
    pub duplicated: u64,
    /// The verifier found nothing wrong and the spool was drained.
    pub verified: bool,
}

/// How an SQS run is set up.
#[derive(Debug, Clone, Copy)]
pub struct SqsShape {
    /// `CORRAL_SQS_LINGER_MS`.
    pub linger_ms: u64,
    /// A FIFO queue.
    pub fifo: bool,
}

/// The shapes each SQS rate is run in: the default, without lingering
/// (what it saves), and on a FIFO queue — that one once, at
/// [`SQS_FIFO_RATE`].
pub const SQS_SHAPES: [SqsShape; 3] = [
    SqsShape {
        linger_ms: 50,
        fifo: false,
    },
    SqsShape {
        linger_ms: 0,
        fifo: false,
    },
    SqsShape {
        linger_ms: 50,
        fifo: true,
    },
];

/// The rate of the one FIFO run: moto's FIFO `SendMessageBatch` takes
/// 150–600 ms, growing with the queue's depth, and it fell behind at 1,000
/// webhooks/s (25/s answered), which measures the emulator, not corral.
pub const SQS_FIFO_RATE: f64 = 200.0;

/// The pipeline over SQS at a fixed rate.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct SqsRun {
    /// Offered webhooks/s.
    pub rate: f64,
    /// `CORRAL_SQS_LINGER_MS`.
    pub linger_ms: u64,
    /// A FIFO queue.
    pub fifo: bool,
    /// Webhooks answered 200 per second.
    pub accepted_per_sec: f64,
    /// Webhooks ingress sent to SQS over the run (warm-up included).
    pub webhooks: u64,
    /// Answer latency, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// `received_at` to commit, ms.
    pub e2e_p50_ms: f64,
    /// 99th percentile, ms.
    pub e2e_p99_ms: f64,
    /// Webhooks per SQS message.
    pub webhooks_per_message: Option<f64>,
    /// Ingress's SQS requests (every operation, checks included) per webhook.
    pub ingress_requests_per_webhook: f64,
    /// The worker's, until the queue was empty.
    pub worker_requests_per_webhook: f64,
    /// Both binaries' requests as AWS bills them (64 KiB each), per webhook.
    pub billed_per_webhook: f64,
    /// Lost, by the verifier.
    pub lost: u64,
    /// Duplicated.
    pub duplicated: u64,
    /// Nothing wrong, and everything drained.
    pub verified: bool,
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
    /// The bare actix-web server at the same connection counts as `ingress`.
    #[serde(default)]
    pub http_ceiling: Vec<IngressRun>,
    /// Ingress alone.
    pub ingress: Vec<IngressRun>,
    /// Ingress alone at `Plan::wide_connections`.
    #[serde(default)]
    pub ingress_wide: Vec<IngressRun>,
    /// The bare actix-web server at `Plan::wide_connections`, right after
    /// ingress at each: the memory ingress's connections are held to.
    #[serde(default)]
    pub http_ceiling_wide: Vec<IngressRun>,
    /// The same bare server holding each answer as long as ingress's p50 at
    /// the same connections (ms, the run): what holding the requests costs
    /// actix-web itself.
    #[serde(default)]
    pub http_holding_wide: Vec<(f64, IngressRun)>,
    /// Worker alone.
    pub worker: Vec<WorkerRun>,
    /// Pipeline.
    pub pipeline: Vec<PipelineRun>,
    /// The layers under the pipeline's answer latency, at the same rates.
    #[serde(default)]
    pub latency: Vec<LatencyRun>,
    /// Ingress through the spool alone, its broker gone.
    #[serde(default)]
    pub spool: Vec<SpoolRun>,
    /// The pipeline over SQS.
    #[serde(default)]
    pub sqs: Vec<SqsRun>,
    /// The signed route beside the token route, ingress alone.
    #[serde(default)]
    pub signed: Vec<super::SignedRun>,
    /// The pipeline on a three-node cluster: each part's CPU per webhook.
    #[serde(default)]
    pub sizing: Vec<super::SizingRun>,
    /// The result-event relay, and a drain with events off and on.
    #[serde(default)]
    pub result_events: Option<super::ResultEvents>,
    /// The run these results replaced, for the targets stated against
    /// "before"; `None` when there was none to read.
    #[serde(default)]
    pub baseline: Option<Baseline>,
}

/// What the report compares with the previous results in the same directory.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Baseline {
    /// Commit measured then.
    pub commit: String,
    /// When.
    pub date: String,
    /// Answer p50 of the pipeline at 25 % load then, ms.
    pub quarter_load_p50_ms: Option<f64>,
}

impl Baseline {
    /// The baseline `previous` results give.
    pub fn of(previous: &Results) -> Self {
        Self {
            commit: previous.machine.commit.clone(),
            date: previous.machine.date.clone(),
            quarter_load_p50_ms: previous.quarter_load().map(|run| run.p50_ms),
        }
    }
}

impl Results {
    /// The pipeline run at 25 % of the ingress maximum, if any.
    pub fn quarter_load(&self) -> Option<&PipelineRun> {
        self.pipeline
            .iter()
            .find(|run| run.of_publish_probe.is_none() && (run.fraction - 0.25).abs() < 1e-9)
    }
}

fn one() -> usize {
    1
}

fn four() -> usize {
    4
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

/// Runs the whole suite; `baseline` is what the results it replaces said.
pub async fn run(plan: Plan, baseline: Option<Baseline>) -> anyhow::Result<Results> {
    let machine = machine().await?;
    eprintln!(
        "bench: {} cores, {}, RabbitMQ {}, {}",
        machine.cores, machine.cpu, machine.rabbitmq, machine.postgres
    );
    let probes = limit_probes(&plan).await?;
    let (http_ceiling, ingress) = ingress_runs(&plan).await?;
    let signed = super::signed_runs(&plan).await?;
    let (ingress_wide, http_ceiling_wide, http_holding_wide) = wide_runs(&plan).await?;
    let worker = worker_runs(&plan).await?;
    // The pipeline runs at fractions of the best rate ingress reached alone
    // (at the planned connection counts; the wide point measures holding
    // connections, not the rate to load the pipeline at).
    let max = ingress
        .iter()
        .map(|r| r.accepted_per_sec)
        .fold(0.0, f64::max);
    let publish64 = ceiling_of(&probes, Ceiling::Publish64);
    let pipeline = pipeline_runs(&plan, max, publish64).await?;
    let latency = latency_runs(&plan, max).await?;
    let spool = spool_runs(&plan).await?;
    let sqs = sqs_runs(&plan).await?;
    let sizing = super::sizing_runs(&plan).await?;
    // Last: the quorum queue that took their events is deleted at the end of
    // each run, and the broker's clean-up must not fall on the pipeline runs.
    let result_events = super::events::runs(&plan).await?;
    Ok(Results {
        machine,
        plan,
        probes,
        http_ceiling,
        ingress,
        ingress_wide,
        http_ceiling_wide,
        http_holding_wide,
        worker,
        pipeline,
        latency,
        spool,
        sqs,
        signed,
        sizing,
        result_events,
        baseline,
    })
}

/// The pipeline over SQS at each planned rate, in each shape.
pub async fn sqs_runs(plan: &Plan) -> anyhow::Result<Vec<SqsRun>> {
    let mut runs = Vec::new();
    let mut planned: Vec<(f64, SqsShape)> = Vec::new();
    for &rate in &plan.sqs_rates {
        planned.extend(SQS_SHAPES.iter().filter(|s| !s.fifo).map(|s| (rate, *s)));
    }
    if !plan.sqs_rates.is_empty() {
        planned.extend(
            SQS_SHAPES
                .iter()
                .filter(|s| s.fifo)
                .map(|s| (SQS_FIFO_RATE, *s)),
        );
    }
    for (rate, shape) in planned {
        let run = sqs_pipeline(rate, Duration::from_secs(plan.pipeline_seconds), shape).await?;
        eprintln!(
            "bench: SQS at {rate}/s, linger {} ms{}: {:.0}/s, p99 {:.1} ms, {:.3} requests per webhook ({:.3} billed), lost {}, duplicated {}",
            shape.linger_ms,
            if shape.fifo { ", FIFO" } else { "" },
            run.accepted_per_sec,
            run.p99_ms,
            run.ingress_requests_per_webhook + run.worker_requests_per_webhook,
            run.billed_per_webhook,
            run.lost,
            run.duplicated
        );
        runs.push(run);
    }
    Ok(runs)
}

/// Ingress with no broker at each planned connection count.
pub async fn spool_runs(plan: &Plan) -> anyhow::Result<Vec<SpoolRun>> {
    let mut runs = Vec::new();
    for &connections in &plan.spool_connections {
        let run = spool_path(connections, Duration::from_secs(plan.seconds)).await?;
        eprintln!(
            "bench: spool path, {connections} connections: {:.0}/s ({:.2}x the bare INSERT of {}-row statements, {:.2}x of {}-row ones), lost {}, duplicated {}",
            run.accepted_per_sec,
            run.accepted_per_sec / run.probe_per_sec,
            run.probe_batch,
            run.accepted_per_sec / run.ceiling_per_sec,
            run.ceiling_batch,
            run.lost,
            run.duplicated
        );
        runs.push(run);
    }
    Ok(runs)
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

/// The HTTP ceiling and ingress alone at each planned connection count, one
/// right after the other so both meet the same machine.
pub async fn ingress_runs(plan: &Plan) -> anyhow::Result<(Vec<IngressRun>, Vec<IngressRun>)> {
    let duration = Duration::from_secs(plan.seconds);
    let mut ceiling_runs = Vec::new();
    let mut ingress_runs = Vec::new();
    for &connections in &plan.connections {
        let ceiling = http_ceiling(connections, duration, 0.0).await?;
        eprintln!(
            "bench: HTTP ceiling at {connections} connections: {:.0}/s, p99 {:.2} ms",
            ceiling.accepted_per_sec, ceiling.p99_ms
        );
        ceiling_runs.push(ceiling);
        let run = ingress_alone(connections, duration).await?;
        eprintln!(
            "bench: ingress at {connections} connections: {:.0}/s, p99 {:.2} ms, RSS {:.1} MiB, {} webhooks per message",
            run.accepted_per_sec,
            run.p99_ms,
            run.peak_rss_mib,
            per_message(run.webhooks_per_message)
        );
        ingress_runs.push(run);
    }
    Ok((ceiling_runs, ingress_runs))
}

/// The wide runs: ingress, the bare server, the bare server holding answers.
pub type WideRuns = (Vec<IngressRun>, Vec<IngressRun>, Vec<(f64, IngressRun)>);

/// Ingress alone at each planned wide connection count, and the bare
/// actix-web server right after it at the same count: answering at once, and
/// holding each answer as long as ingress's p50.
pub async fn wide_runs(plan: &Plan) -> anyhow::Result<WideRuns> {
    let duration = Duration::from_secs(plan.seconds);
    let mut wide_runs = Vec::new();
    let mut bare_runs = Vec::new();
    let mut holding_runs = Vec::new();
    for &connections in &plan.wide_connections {
        let run = ingress_wide(connections, duration).await?;
        eprintln!(
            "bench: ingress at {connections} connections: {:.0}/s, p99 {:.2} ms, peak RSS {:.1} MiB, \
             {} connection errors, {} timeouts, {} 5xx, {} connections opened",
            run.accepted_per_sec,
            run.p99_ms,
            run.peak_rss_mib,
            run.connection_errors,
            run.timeouts,
            run.server_errors,
            run.connections_opened
        );
        let hold_ms = run.p50_ms;
        wide_runs.push(run);
        bare_runs.push(bare_wide(connections, duration, 0.0).await?);
        holding_runs.push((hold_ms, bare_wide(connections, duration, hold_ms).await?));
    }
    Ok((wide_runs, bare_runs, holding_runs))
}

/// The HTTP ceiling holding `connections`, each answer held `hold_ms`.
async fn bare_wide(
    connections: usize,
    duration: Duration,
    hold_ms: f64,
) -> anyhow::Result<IngressRun> {
    let bare = http_ceiling(connections, duration, hold_ms).await?;
    eprintln!(
        "bench: HTTP ceiling at {connections} connections, answers held {hold_ms:.1} ms: \
         {:.0}/s, peak RSS {:.1} MiB",
        bare.accepted_per_sec, bare.peak_rss_mib
    );
    Ok(bare)
}

/// Webhooks per message for a log line: "—" when ingress does not say.
pub(super) fn per_message(value: Option<f64>) -> String {
    value.map_or_else(|| "—".to_owned(), |v| format!("{v:.1}"))
}

/// The worker alone, draining each planned pre-fill.
async fn worker_runs(plan: &Plan) -> anyhow::Result<Vec<WorkerRun>> {
    let mut worker_runs = Vec::new();
    for &messages in &plan.prefill {
        let run = worker_alone(messages, plan.prefill_batch).await?;
        eprintln!(
            "bench: worker draining {messages}: {:.0} rows/s, RSS {:.1} MiB",
            run.rows_per_sec, run.peak_rss_mib
        );
        worker_runs.push(run);
    }
    Ok(worker_runs)
}

/// The whole pipeline at each planned fraction of `max`, then at each
/// planned multiple of `publish64` (the publish probe, 64 in flight).
async fn pipeline_runs(
    plan: &Plan,
    max: f64,
    publish64: Option<f64>,
) -> anyhow::Result<Vec<PipelineRun>> {
    let by_fraction = plan.rates.iter().map(|&fraction| (fraction, None));
    let by_probe = publish64.into_iter().flat_map(|probe| {
        plan.probe_multiples
            .iter()
            .map(move |&multiple| (probe * multiple / max.max(1.0), Some(multiple)))
    });
    let mut pipeline_runs = Vec::new();
    for (fraction, of_publish_probe) in by_fraction.chain(by_probe).collect::<Vec<_>>() {
        let mut run = pipeline(
            fraction,
            max * fraction,
            Duration::from_secs(plan.pipeline_seconds),
        )
        .await?;
        run.of_publish_probe = of_publish_probe;
        eprintln!(
            "bench: pipeline at {:.0}% ({:.0}/s): p99 {:.2} ms, end-to-end p99 {:.1} ms, lost {} duplicated {}, {} webhooks per message",
            fraction * 100.0,
            run.rate,
            run.p99_ms,
            run.e2e_p99_ms,
            run.lost,
            run.duplicated,
            per_message(run.webhooks_per_message)
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
