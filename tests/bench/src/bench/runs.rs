//! Each measured run: ingress alone, worker alone, the pipeline, the latency
//! layers, and the machine.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::Utc;
use futures_util::{StreamExt, stream::FuturesUnordered};

use corral_loadgen::{self as loadgen, Load, Mix, VerifyOptions};
use corral_shared::envelope::Kind;
use corral_testkit::{
    broker, config, database, fixtures,
    process::{self, Process, ProcessConfig},
    unique_name,
};

use crate::probes::{self};

use super::{results::*, sampler::*};

pub(super) const TOKEN: &str = "bench-token-0123456789";

pub(super) fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

pub(super) async fn ingress_alone(
    connections: usize,
    duration: Duration,
) -> anyhow::Result<IngressRun> {
    ingress_under(Load::Closed { connections }, connections, duration, false).await
}

/// Ingress alone (no worker) under `load`; `connections` labels the run.
/// With `drained`, a bare consumer keeps the queue empty meanwhile.
pub(super) async fn ingress_under(
    load: Load,
    connections: usize,
    duration: Duration,
    drained: bool,
) -> anyhow::Result<IngressRun> {
    let prefix = unique_name("bench");
    let drain = if drained {
        Some(probes::Drain::start(&config::amqp(prefix.clone())).await?)
    } else {
        None
    };
    let mut ingress =
        Process::start_ready(ProcessConfig::ingress(&prefix, TOKEN).env("CORRAL_LOG", "warn"))
            .await;
    let mut config = loadgen::Config::new(ingress.base_url(), TOKEN);
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
    broker::delete_prefix(&prefix).await;
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
        &config::amqp(unique_name("bench-latency")),
        rate,
        Duration::from_secs(2),
        duration,
        fixtures::SMS_SUCCESS.as_bytes(),
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
        probes::confirm_channels(&config::amqp(prefix), 4).await?;
    let exchange = topology.exchange();
    let run = unique_name("bench-row");
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
            Kind::Rvm.routing_key()
        } else {
            Kind::Sms.routing_key()
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
    corral_shared::amqp::close(&connection, Duration::from_secs(10), "prefilled").await;
    Ok(())
}

pub(super) async fn worker_alone(messages: usize) -> anyhow::Result<WorkerRun> {
    worker_alone_with(messages, &[]).await
}

/// [`worker_alone`] with extra `CORRAL_*` settings for the worker (tuning experiments).
pub async fn worker_alone_with(
    messages: usize,
    env: &[(String, String)],
) -> anyhow::Result<WorkerRun> {
    let prefix = unique_name("bench");
    let db = probes::migrated_database().await?;
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
    broker::delete_prefix(&prefix).await;
    Ok(WorkerRun {
        messages,
        seconds,
        rows_per_sec: messages as f64 / seconds,
        peak_rss_mib: peak,
        cpu_percent: cpu,
    })
}

pub(super) async fn pipeline(
    fraction: f64,
    rate: f64,
    duration: Duration,
) -> anyhow::Result<PipelineRun> {
    let prefix = unique_name("bench");
    let db = probes::migrated_database().await?;
    let mut worker = Process::start_ready(
        ProcessConfig::worker(&db.url, &prefix)
            .env("CORRAL_DB_POOL_SIZE", "4")
            .env("CORRAL_LOG", "warn"),
    )
    .await;
    let mut ingress =
        Process::start_ready(ProcessConfig::ingress(&prefix, TOKEN).env("CORRAL_LOG", "warn"))
            .await;
    let mut config = loadgen::Config::new(ingress.base_url(), TOKEN);
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
    broker::delete_prefix(&prefix).await;
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

pub(super) async fn machine() -> anyhow::Result<Machine> {
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
    let client = database::connect(database::SERVER_URL).await;
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
                &process::workspace_root().to_string_lossy(),
                "rev-parse",
                "--short",
                "HEAD",
            ],
        ),
    })
}
