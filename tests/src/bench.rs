//! The benchmark suite behind `corral-bench all`: limit probes, ingress alone,
//! worker alone, the whole pipeline at fixed rates, each measured on the
//! local services with the real binaries (release build) as processes, and
//! written up as `docs/benchmarks.md`, `docs/benchmarks.json` and
//! `docs/benchmarks.svg`.
//!
//! Nothing here asserts a speed: benchmarks measure, tests check behaviour.

use std::{
    fmt::Write as _,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use chrono::Utc;
use corral_shared::config::AmqpSettings;
use futures_util::{StreamExt, stream::FuturesUnordered};
use serde::Serialize;

use crate::{
    database::TestDatabase,
    loadgen::{self, Load, Mix, VerifyOptions},
    probes::{self, ProbeResult, PublishProbe},
    process::{Process, ProcessConfig},
};

const TOKEN: &str = "bench-token-0123456789";

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

    let mut probe_results = Vec::new();
    for (in_flight, channels) in [(64, 1), (64, 4), (1024, 4)] {
        let result = probes::publish(&PublishProbe {
            amqp: AmqpSettings::local(crate::unique_name("bench-probe")),
            channels,
            in_flight,
            duration: Duration::from_secs(plan.seconds),
            body: crate::fixtures::SMS_SUCCESS.as_bytes().to_vec(),
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
                probes::insert(crate::database::SERVER_URL, plan.insert_rows, batch, kind).await?;
            eprintln!("bench: {}: {:.0}/s", result.name, result.per_second);
            probe_results.push(result);
        }
    }

    let mut ingress_runs = Vec::new();
    for &connections in &plan.connections {
        let run = ingress_alone(connections, Duration::from_secs(plan.seconds)).await?;
        eprintln!(
            "bench: ingress at {connections} connections: {:.0}/s, p99 {:.2} ms, RSS {:.1} MiB",
            run.accepted_per_sec, run.p99_ms, run.peak_rss_mib
        );
        ingress_runs.push(run);
    }

    let mut worker_runs = Vec::new();
    for &messages in &plan.prefill {
        let run = worker_alone(messages).await?;
        eprintln!(
            "bench: worker draining {messages}: {:.0} rows/s, RSS {:.1} MiB",
            run.rows_per_sec, run.peak_rss_mib
        );
        worker_runs.push(run);
    }

    let max = ingress_runs
        .iter()
        .map(|r| r.accepted_per_sec)
        .fold(0.0, f64::max);
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
    Ok(Results {
        machine,
        plan,
        probes: probe_results,
        ingress: ingress_runs,
        worker: worker_runs,
        pipeline: pipeline_runs,
        latency: latency_runs,
    })
}

/// Samples a process's CPU time and peak RSS from /proc while it runs.
struct Sampler {
    pid: u32,
    ticks_per_sec: f64,
    start_ticks: u64,
    started: Instant,
    peak_rss_kib: std::sync::Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    fn start(pid: u32) -> Self {
        let peak =
            std::sync::Arc::new(std::sync::atomic::AtomicU64::new(rss_kib(pid).unwrap_or(0)));
        let task_peak = peak.clone();
        let task = tokio::spawn(async move {
            loop {
                if let Some(rss) = rss_kib(pid) {
                    task_peak.fetch_max(rss, std::sync::atomic::Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        Self {
            pid,
            ticks_per_sec: ticks_per_sec(),
            start_ticks: cpu_ticks(pid).unwrap_or(0),
            started: Instant::now(),
            peak_rss_kib: peak,
            task,
        }
    }

    /// (CPU % of one core, peak RSS MiB) since start.
    fn finish(self) -> (f64, f64) {
        let ticks = cpu_ticks(self.pid).unwrap_or(self.start_ticks) - self.start_ticks;
        let cpu = ticks as f64 / self.ticks_per_sec / self.started.elapsed().as_secs_f64() * 100.0;
        self.task.abort();
        let peak = self.peak_rss_kib.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1024.0;
        (cpu, peak)
    }
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat; 12 and 13 after the comm.
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

fn ticks_per_sec() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

async fn ingress_alone(connections: usize, duration: Duration) -> anyhow::Result<IngressRun> {
    ingress_under(Load::Closed { connections }, connections, duration, false).await
}

/// Ingress alone (no worker) under `load`; `connections` labels the run.
/// With `drained`, a bare consumer keeps the queue empty meanwhile.
async fn ingress_under(
    load: Load,
    connections: usize,
    duration: Duration,
    drained: bool,
) -> anyhow::Result<IngressRun> {
    let prefix = crate::unique_name("bench");
    let drain = if drained {
        Some(probes::Drain::start(&AmqpSettings::local(prefix.clone())).await?)
    } else {
        None
    };
    let mut ingress =
        Process::start_ready(ProcessConfig::ingress(&prefix, TOKEN).env("CORRAL_LOG", "warn"))
            .await;
    let base = ingress
        .webhook_url("sms")
        .trim_end_matches("/webhooks/dropcowboy/sms")
        .to_owned();
    let mut config = loadgen::Config::new(base, TOKEN);
    config.load = load;
    config.duration = Some(duration);
    config.warmup = Duration::from_secs(2);
    let sampler = Sampler::start(ingress.pid());
    let run = loadgen::run(config).await?;
    let (cpu, peak) = sampler.finish();
    ingress.terminate(Duration::from_secs(40)).await;
    if let Some(drain) = drain {
        drain.stop().await;
    }
    crate::broker::delete_prefix(&prefix).await;
    let report = run.report;
    Ok(IngressRun {
        connections,
        accepted_per_sec: report.accepted_per_sec,
        not_accepted: report.requests - report.accepted,
        p50_ms: ms(report.latency_us.p50),
        p99_ms: ms(report.latency_us.p99),
        p999_ms: ms(report.latency_us.p99_9),
        peak_rss_mib: peak,
        cpu_percent: cpu,
        generator_cpu_percent: report.generator.cpu_percent,
    })
}

/// At a fixed `rate`: the broker's own confirm latency (bare client), then
/// ingress's answer latency (no worker), each with a bare consumer keeping the
/// queue empty — the two layers under the pipeline's answer latency at that rate.
pub async fn latency_at(
    rate: f64,
    duration: Duration,
) -> anyhow::Result<(probes::LatencyProbe, IngressRun)> {
    let probe = probes::confirm_latency(
        &AmqpSettings::local(crate::unique_name("bench-latency")),
        rate,
        Duration::from_secs(2),
        duration,
        crate::fixtures::SMS_SUCCESS.as_bytes(),
    )
    .await?;
    let ingress = ingress_under(
        Load::Open {
            rate,
            max_connections: 512,
        },
        0,
        duration,
        true,
    )
    .await?;
    Ok((probe, ingress))
}

/// Publishes `count` distinct webhooks into the prefix's queue, confirmed,
/// as ingress would have (same properties), 1,024 in flight on 4 channels.
pub async fn prefill(prefix: &str, count: usize) -> anyhow::Result<()> {
    let (connection, channels, topology) =
        probes::confirm_channels(&AmqpSettings::local(prefix), 4).await?;
    let exchange = topology.exchange();
    let run = crate::unique_name("bench-row");
    let mut pending = FuturesUnordered::new();
    for i in 0..count {
        if pending.len() >= 1024
            && let Some(confirmation) = pending.next().await
        {
            let confirmation: lapin::Confirmation = confirmation?;
            anyhow::ensure!(confirmation.is_ack(), "prefill publish nacked");
        }
        let body = probes::body(&run, i);
        let routing_key = if i % 4 == 3 {
            "dropcowboy.rvm"
        } else {
            "dropcowboy.sms"
        };
        let confirm = probes::publish_as_ingress(
            &channels[i % channels.len()],
            &exchange,
            routing_key,
            body.as_bytes(),
        )
        .await?;
        pending.push(confirm);
    }
    while let Some(confirmation) = pending.next().await {
        anyhow::ensure!(confirmation?.is_ack(), "prefill publish nacked");
    }
    let _ = connection.close(200, "prefilled".into()).await;
    Ok(())
}

async fn worker_alone(messages: usize) -> anyhow::Result<WorkerRun> {
    worker_alone_with(messages, &[]).await
}

/// [`worker_alone`] with extra `CORRAL_*` settings for the worker (tuning experiments).
pub async fn worker_alone_with(
    messages: usize,
    env: &[(String, String)],
) -> anyhow::Result<WorkerRun> {
    let prefix = crate::unique_name("bench");
    let db = TestDatabase::migrated().await;
    let started_fill = Instant::now();
    prefill(&prefix, messages).await?;
    eprintln!(
        "bench: pre-filled {messages} messages in {:.1} s",
        started_fill.elapsed().as_secs_f64()
    );
    let client = db.client().await;
    let mut config = ProcessConfig::worker(&db.url, &prefix)
        .env("CORRAL_DB_POOL_SIZE", "4")
        .env("CORRAL_LOG", "warn");
    for (key, value) in env {
        config = config.env(key, value.clone());
    }
    let started = Instant::now();
    let mut worker = Process::start(config).await;
    let sampler = Sampler::start(worker.pid());
    let deadline = Instant::now() + Duration::from_secs(1800);
    // Progress from the worker's own counter: a `count(*)` every 50 ms would
    // compete with the worker for the same two cores and slow what it measures.
    let stored = r#"corral_worker_messages_total{outcome="stored"}"#;
    loop {
        if worker.is_ready().await && worker.metrics().await.get(stored) as usize >= messages {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the worker did not drain {messages} messages in 30 minutes"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let rows: i64 = client
        .query_one("SELECT count(*) FROM delivery_events", &[])
        .await?
        .get(0);
    anyhow::ensure!(
        rows as usize == messages,
        "{rows} rows for {messages} messages"
    );
    let metrics = worker.metrics().await;
    let batches = metrics.get("corral_worker_batch_size_count");
    eprintln!(
        "bench: {batches} batches, mean size {:.0}, mean write {:.1} ms",
        metrics.get("corral_worker_batch_size_sum") / batches.max(1.0),
        metrics.get("corral_worker_db_write_seconds_sum") / batches.max(1.0) * 1000.0
    );
    let (cpu, peak) = sampler.finish();
    worker.terminate(Duration::from_secs(40)).await;
    crate::broker::delete_prefix(&prefix).await;
    Ok(WorkerRun {
        messages,
        seconds,
        rows_per_sec: messages as f64 / seconds,
        peak_rss_mib: peak,
        cpu_percent: cpu,
    })
}

async fn pipeline(fraction: f64, rate: f64, duration: Duration) -> anyhow::Result<PipelineRun> {
    let prefix = crate::unique_name("bench");
    let db = TestDatabase::migrated().await;
    let mut worker = Process::start_ready(
        ProcessConfig::worker(&db.url, &prefix)
            .env("CORRAL_DB_POOL_SIZE", "4")
            .env("CORRAL_LOG", "warn"),
    )
    .await;
    let mut ingress =
        Process::start_ready(ProcessConfig::ingress(&prefix, TOKEN).env("CORRAL_LOG", "warn"))
            .await;
    let base = ingress
        .webhook_url("sms")
        .trim_end_matches("/webhooks/dropcowboy/sms")
        .to_owned();
    let mut config = loadgen::Config::new(base, TOKEN);
    config.load = Load::Open {
        rate,
        max_connections: 512,
    };
    config.duration = Some(duration);
    config.warmup = Duration::from_secs(2);
    config.mix = Mix {
        duplicates: 0.02,
        out_of_order: 0.02,
        ..Mix::default()
    };
    let ingress_sampler = Sampler::start(ingress.pid());
    let worker_sampler = Sampler::start(worker.pid());
    let run = loadgen::run(config).await?;
    let verification = loadgen::verify(&db.url, &run.sent, &VerifyOptions::default()).await?;
    let (_, ingress_peak) = ingress_sampler.finish();
    let (_, worker_peak) = worker_sampler.finish();
    let client = db.client().await;
    let row = client
        .query_one(
            "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM stored_at - received_at)),
                    percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM stored_at - received_at))
             FROM delivery_events",
            &[],
        )
        .await?;
    let (e2e_p50, e2e_p99): (f64, f64) = (row.get(0), row.get(1));
    ingress.terminate(Duration::from_secs(40)).await;
    worker.terminate(Duration::from_secs(40)).await;
    crate::broker::delete_prefix(&prefix).await;
    let report = run.report;
    Ok(PipelineRun {
        fraction,
        rate,
        accepted_per_sec: report.accepted_per_sec,
        p50_ms: ms(report.latency_us.p50),
        p99_ms: ms(report.latency_us.p99),
        p999_ms: ms(report.latency_us.p99_9),
        e2e_p50_ms: e2e_p50 * 1000.0,
        e2e_p99_ms: e2e_p99 * 1000.0,
        lost: verification.lost,
        duplicated: verification.duplicated,
        verified: verification.is_ok() && verification.drained,
        ingress_peak_rss_mib: ingress_peak,
        worker_peak_rss_mib: worker_peak,
    })
}

async fn machine() -> anyhow::Result<Machine> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown".into());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory_kib: f64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|l| l.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    let command = |program: &str, args: &[&str]| {
        std::process::Command::new(program)
            .args(args)
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    };
    let client = crate::database::connect(crate::database::SERVER_URL).await;
    let postgres: String = client
        .query_one("SELECT version()", &[])
        .await
        .context("PostgreSQL version")?
        .get(0);
    Ok(Machine {
        date: Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
        cpu,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        memory_gib: (memory_kib / 1_048_576.0 * 10.0).round() / 10.0,
        kernel: command("uname", &["-r"]),
        rabbitmq: command("rabbitmqctl", &["version"]),
        postgres: postgres
            .split(" on ")
            .next()
            .unwrap_or(&postgres)
            .to_owned(),
        commit: command(
            "git",
            &[
                "-C",
                &crate::process::workspace_root().to_string_lossy(),
                "rev-parse",
                "--short",
                "HEAD",
            ],
        ),
    })
}

fn probe(results: &Results, prefix: &str) -> Option<f64> {
    results
        .probes
        .iter()
        .filter(|p| p.name.starts_with(prefix))
        .map(|p| p.per_second)
        .reduce(f64::max)
}

/// `docs/benchmarks.md`: method, machine, numbers and ratios.
pub fn markdown(results: &Results, previous_notes: &str) -> String {
    let m = &results.machine;
    let publish64 = probe(results, "bare lapin publish, 64 in flight").unwrap_or(f64::NAN);
    let publish1024 = probe(results, "bare lapin publish, 1024 in flight").unwrap_or(f64::NAN);
    let insert500 = probe(
        results,
        "bare tokio-postgres UNNEST insert (events only), 500-row",
    )
    .unwrap_or(f64::NAN);
    let same500 = probe(
        results,
        "bare tokio-postgres UNNEST insert (events + deliveries upsert), 500-row",
    )
    .unwrap_or(f64::NAN);
    let mut out = String::new();
    let _ = writeln!(out, "# Benchmarks\n");
    let _ = writeln!(
        out,
        "How fast corral is on one small machine, measured in the same run as the limits of the broker and the database it \
         sits on. Reproduce with `scripts/bench` (15–20 minutes; `scripts/bench --quick` for a 5-minute version). Raw \
         numbers: [`benchmarks.json`](benchmarks.json); chart: [`benchmarks.svg`](benchmarks.svg).\n"
    );
    let _ = writeln!(out, "![throughput and latency](benchmarks.svg)\n");
    let _ = writeln!(out, "## Machine\n");
    let _ = writeln!(
        out,
        "{}; {} cores, {} GiB; Linux {}; RabbitMQ {} and {}, both local with Debian's default settings; corral `{}` \
         (release build). The load generator, RabbitMQ, PostgreSQL and corral share the same {} cores, so every number \
         here includes that contention.\n",
        m.cpu, m.cores, m.memory_gib, m.kernel, m.rabbitmq, m.postgres, m.commit, m.cores
    );
    let _ = writeln!(out, "## Method\n");
    let _ = writeln!(
        out,
        "- **Limit probes** use corral's payloads and topology but none of its code: a bare lapin client publishing persistent, \
         mandatory messages with confirms into the same quorum queue (a fixed window of publishes in flight, one task per \
         channel), and a bare tokio-postgres client inserting the same typed rows into the same `delivery_events` table \
         (same indexes) with one `INSERT … SELECT FROM unnest(…) ON CONFLICT DO NOTHING` per batch on one connection. \
         These are the ceilings corral's numbers are divided by.\n\
         - **Ingress alone**: `corral-ingress` (defaults: 4 confirm channels, one HTTP worker per core) with no worker, \
         `corral-loadgen` in a closed loop at N keep-alive connections for {} s after a 2 s warm-up, realistic mix (SMS/RVM, \
         success and every failure reason). Latency is per request; RSS is the peak of the process, CPU its average over \
         the run.\n\
         - **Worker alone**: the queue pre-filled with distinct webhooks (confirmed publishes, ingress's properties), then \
         `corral-worker` with default settings (pool 4, 2 writers, prefetch 2,000, batches of 500, 50 ms linger) started; \
         rows/s is messages ÷ seconds from the worker's start to its last commit (so it includes start-up and \
         migrations; progress is read from the worker's own counter, not by querying the table it writes).\n\
         - **Pipeline**: both binaries, `corral-loadgen` in an open loop at a fixed rate (a fraction of the best ingress \
         rate above) for {} s, latency measured from each request's *scheduled* send time (no coordinated omission); \
         end-to-end is `stored_at − received_at` of every row (ingress receiving the webhook → the start of the worker's \
         transaction that wrote it; the commit adds that batch's write time, the `corral_worker_db_write_seconds` \
         histogram); the run is then verified: every webhook answered 200 is exactly one row, nothing else changed.\n",
        results.plan.seconds, results.plan.pipeline_seconds
    );
    let _ = writeln!(out, "## Limits of this machine\n");
    let _ = writeln!(out, "| probe | per second |\n|---|---:|");
    for p in &results.probes {
        let _ = writeln!(out, "| {} | {:.0} |", p.name, p.per_second);
    }
    let _ = writeln!(out, "\n## Ingress alone\n");
    let _ = writeln!(
        out,
        "| connections | accepted/s | ÷ publish probe (64 in flight) | p50 ms | p99 ms | p99.9 ms | not 200 | peak RSS MiB | CPU % | load generator CPU % |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for r in &results.ingress {
        let _ = writeln!(
            out,
            "| {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {:.1} | {:.0} | {:.0} |",
            r.connections,
            r.accepted_per_sec,
            r.accepted_per_sec / publish64,
            r.p50_ms,
            r.p99_ms,
            r.p999_ms,
            r.not_accepted,
            r.peak_rss_mib,
            r.cpu_percent,
            r.generator_cpu_percent
        );
    }
    let _ = writeln!(
        out,
        "\n(the 1,024-in-flight publish probe reached {publish1024:.0}/s: what more concurrency buys the broker.)"
    );
    let _ = writeln!(out, "\n## Worker alone\n");
    let _ = writeln!(
        out,
        "| messages | seconds | rows/s | ÷ insert probe, events only | ÷ insert probe, same work (events + deliveries) | peak RSS MiB | CPU % |\n|---:|---:|---:|---:|---:|---:|---:|"
    );
    for r in &results.worker {
        let _ = writeln!(
            out,
            "| {} | {:.1} | {:.0} | {:.2} | {:.2} | {:.1} | {:.0} |",
            r.messages,
            r.seconds,
            r.rows_per_sec,
            r.rows_per_sec / insert500,
            r.rows_per_sec / same500,
            r.peak_rss_mib,
            r.cpu_percent
        );
    }
    let _ = writeln!(out, "\n## Whole pipeline at fixed rates\n");
    let _ = writeln!(
        out,
        "| load | offered/s | accepted/s | answer p50 ms | p99 ms | p99.9 ms | end-to-end p50 ms | end-to-end p99 ms | lost | duplicated | verified | ingress RSS MiB | worker RSS MiB |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|"
    );
    for r in &results.pipeline {
        let _ = writeln!(
            out,
            "| {:.0} % | {:.0} | {:.0} | {:.2} | {:.2} | {:.2} | {:.1} | {:.1} | {} | {} | {} | {:.1} | {:.1} |",
            r.fraction * 100.0,
            r.rate,
            r.accepted_per_sec,
            r.p50_ms,
            r.p99_ms,
            r.p999_ms,
            r.e2e_p50_ms,
            r.e2e_p99_ms,
            r.lost,
            r.duplicated,
            if r.verified { "yes" } else { "**no**" },
            r.ingress_peak_rss_mib,
            r.worker_peak_rss_mib
        );
    }
    if !results.latency.is_empty() {
        let _ = writeln!(out, "\n## Where the answer latency goes\n");
        let _ = writeln!(
            out,
            "The same rates, one layer at a time, each measured from the scheduled send time and with a bare consumer \
             (prefetch 2,000, one acknowledgement per 100 messages, nothing stored) keeping the queue empty as the worker does: the broker alone (a bare lapin \
             client publishing with confirms on 4 channels), ingress alone (no worker), then the whole pipeline from \
             the table above (ingress, worker and PostgreSQL sharing the cores).\n"
        );
        let _ = writeln!(
            out,
            "| load | rate/s | broker alone: confirm p50 / p99 / p99.9 ms | ingress alone: answer p50 / p99 / p99.9 ms | whole pipeline: answer p50 / p99 / p99.9 ms |\n|---|---:|---|---|---|"
        );
        for r in &results.latency {
            let pipeline = results
                .pipeline
                .iter()
                .find(|p| (p.fraction - r.fraction).abs() < 1e-9)
                .map_or_else(
                    || "–".to_owned(),
                    |p| format!("{:.2} / {:.2} / {:.2}", p.p50_ms, p.p99_ms, p.p999_ms),
                );
            let _ = writeln!(
                out,
                "| {:.0} % | {:.0} | {:.2} / {:.2} / {:.2} | {:.2} / {:.2} / {:.2} | {pipeline} |",
                r.fraction * 100.0,
                r.broker.rate,
                r.broker.p50_ms,
                r.broker.p99_ms,
                r.broker.p999_ms,
                r.ingress.p50_ms,
                r.ingress.p99_ms,
                r.ingress.p999_ms,
            );
        }
    }
    out.push_str(previous_notes);
    out
}

/// A two-panel SVG: throughput against the limits, and latency by load.
pub fn svg(results: &Results) -> String {
    let publish64 = probe(results, "bare lapin publish, 64 in flight").unwrap_or(0.0);
    let insert500 = probe(
        results,
        "bare tokio-postgres UNNEST insert (events only), 500-row",
    )
    .unwrap_or(0.0);
    let same500 = probe(
        results,
        "bare tokio-postgres UNNEST insert (events + deliveries upsert), 500-row",
    )
    .unwrap_or(0.0);
    let ingress64 = results
        .ingress
        .iter()
        .find(|r| r.connections == 64)
        .map_or(0.0, |r| r.accepted_per_sec);
    let worker = results.worker.first().map_or(0.0, |r| r.rows_per_sec);
    let bars = [
        ("publish probe (64 in flight)", publish64, "#9aa5b1"),
        ("corral-ingress (64 connections)", ingress64, "#2f6fdf"),
        ("insert probe, events only", insert500, "#9aa5b1"),
        ("insert probe, same work", same500, "#9aa5b1"),
        ("corral-worker (drain)", worker, "#1f9d55"),
    ];
    let max = bars.iter().map(|b| b.1).fold(1.0, f64::max);
    let mut svg = String::from(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="1000" height="250" font-family="sans-serif" font-size="12">
<rect width="1000" height="250" fill="white"/>
<text x="20" y="24" font-size="15" font-weight="bold">Throughput against this machine's limits (per second)</text>
"#,
    );
    for (i, (label, value, color)) in bars.iter().enumerate() {
        let y = 44.0 + i as f64 * 34.0;
        let width = value / max * 260.0;
        let _ = writeln!(
            svg,
            r#"<text x="20" y="{:.0}">{label}</text><rect x="230" y="{:.0}" width="{width:.0}" height="24" fill="{color}"/><text x="{:.0}" y="{:.0}">{value:.0}</text>"#,
            y + 16.0,
            y,
            236.0 + width,
            y + 16.0
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="540" y="24" font-size="15" font-weight="bold">Answer latency, ms, log scale (p50 / p99 / p99.9)</text>"#
    );
    let rows: Vec<(String, f64, f64, f64)> = results
        .ingress
        .iter()
        .map(|r| {
            (
                format!("ingress, {} conns", r.connections),
                r.p50_ms,
                r.p99_ms,
                r.p999_ms,
            )
        })
        .chain(results.pipeline.iter().map(|r| {
            (
                format!("pipeline, {:.0} % rate", r.fraction * 100.0),
                r.p50_ms,
                r.p99_ms,
                r.p999_ms,
            )
        }))
        .collect();
    let lmax = rows.iter().map(|r| r.3).fold(1.0, f64::max);
    for (i, (label, p50, p99, p999)) in rows.iter().enumerate() {
        let y = 44.0 + i as f64 * 30.0;
        // Logarithmic: the interesting latencies span milliseconds to seconds.
        let scale = |v: f64| (v + 1.0).log10() / (lmax + 1.0).log10() * 140.0;
        let _ = writeln!(
            svg,
            r##"<text x="540" y="{:.0}">{label}</text><rect x="700" y="{y:.0}" width="{:.1}" height="18" fill="#c7d7f5"/><rect x="700" y="{y:.0}" width="{:.1}" height="18" fill="#7ea3ea"/><rect x="700" y="{y:.0}" width="{:.1}" height="18" fill="#2f6fdf"/><text x="{:.0}" y="{:.0}">{p50:.1} / {p99:.1} / {p999:.1}</text>"##,
            y + 13.0,
            scale(*p999),
            scale(*p99),
            scale(*p50),
            706.0 + scale(*p999),
            y + 13.0
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// Writes the three files under `dir`, keeping whatever follows the
/// `<!-- notes -->` marker of an existing `benchmarks.md` (the analysis).
pub fn write(results: &Results, dir: &Path) -> anyhow::Result<()> {
    let md_path = dir.join("benchmarks.md");
    let notes = std::fs::read_to_string(&md_path)
        .ok()
        .and_then(|text| {
            text.find("\n<!-- notes -->")
                .map(|at| text[at..].to_owned())
        })
        .unwrap_or_else(|| "\n<!-- notes -->\n".to_owned());
    std::fs::write(&md_path, markdown(results, &notes))?;
    std::fs::write(
        dir.join("benchmarks.json"),
        serde_json::to_string_pretty(results)?,
    )?;
    std::fs::write(dir.join("benchmarks.svg"), svg(results))?;
    Ok(())
}
