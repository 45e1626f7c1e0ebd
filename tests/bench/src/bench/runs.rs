//! Each measured run: ingress alone, worker alone, the pipeline, the latency
//! layers, and the machine.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::Utc;
use futures_util::{StreamExt, stream::FuturesUnordered};

use corral_contract::envelope::{self, Kind, batch};
use corral_loadgen::{self as loadgen, Load, Mix, VerifyOptions};
use corral_runtime::telemetry::metrics::{
    INGRESS_PUBLISH_BATCH_SIZE, INGRESS_SPOOL_BATCH_SIZE, SQS_BILLED_REQUESTS, SQS_REQUESTS,
};
use corral_testkit::{
    broker, config, database, fixtures,
    metrics::Metrics,
    process::{self, Process, ProcessConfig},
    sqs::{self, QueueOptions, TestQueue},
    unique_name, wait,
};
use uuid::Uuid;

use crate::probes::{self};

use super::{results::*, sampler::*, signed::Signing};

pub(super) const TOKEN: &str = "bench-token-0123456789";

pub(super) fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

pub(super) async fn ingress_alone(
    connections: usize,
    duration: Duration,
) -> anyhow::Result<IngressRun> {
    ingress_under(
        Load::Closed { connections },
        connections,
        duration,
        false,
        None,
        None,
    )
    .await
}

/// Ingress alone holding `connections` keep-alive connections at once: its
/// `CORRAL_MAX_CONNECTIONS` raised to fit them, and the open-file limit of
/// this process (which ingress inherits) raised for both ends of each.
pub(super) async fn ingress_wide(
    connections: usize,
    duration: Duration,
) -> anyhow::Result<IngressRun> {
    // Both ends of every connection are on this machine, one in each process,
    // plus what each needs besides (broker, listeners, files).
    raise_open_file_limit(connections as u64 + 1024)?;
    // The closed loop holds exactly `connections`; the load generator's
    // reachability check opens one more, closed at once, and a broken
    // connection is replaced before the server has seen the old one close.
    let max_connections = connections + 64;
    ingress_under(
        Load::Closed { connections },
        connections,
        duration,
        false,
        Some(max_connections),
        None,
    )
    .await
}

/// Raises this process's soft open-file limit to at least `needed` (up to
/// the hard limit); children started afterwards inherit it.
fn raise_open_file_limit(needed: u64) -> anyhow::Result<()> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    let current = limit.current.unwrap_or(u64::MAX);
    if current >= needed {
        return Ok(());
    }
    let hard = limit.maximum.unwrap_or(u64::MAX);
    anyhow::ensure!(
        hard >= needed,
        "{needed} open files are needed and the hard limit is {hard}: raise it (`ulimit -Hn`, \
         or LimitNOFILE) or plan fewer wide connections"
    );
    limit.current = Some(needed);
    setrlimit(Resource::Nofile, limit).context("raising the open-file limit")?;
    eprintln!("bench: raised the open-file limit from {current} to {needed}");
    Ok(())
}

/// Ingress alone (no worker) under `load`; `connections` labels the run.
/// With `drained`, a bare consumer keeps the queue empty meanwhile; with
/// `max_connections`, ingress runs with that `CORRAL_MAX_CONNECTIONS`; with
/// `signing`, it has a signing secret and the load is signed or not as it says.
pub(super) async fn ingress_under(
    load: Load,
    connections: usize,
    duration: Duration,
    drained: bool,
    max_connections: Option<usize>,
    signing: Option<Signing>,
) -> anyhow::Result<IngressRun> {
    let prefix = unique_name("bench");
    let drain = if drained {
        Some(probes::Drain::start(&config::amqp(prefix.clone())).await?)
    } else {
        None
    };
    let mut settings = ProcessConfig::ingress(&prefix, TOKEN).env("CORRAL_LOG", "warn");
    if let Some(max) = max_connections {
        settings = settings.env("CORRAL_MAX_CONNECTIONS", max.to_string());
    }
    if let Some(signing) = signing {
        settings = signing.ingress(settings);
    }
    let mut ingress = Process::start_ready(settings).await;
    let before = publish_batches(&ingress).await;
    let measured = drive(&ingress.base_url(), ingress.pid(), load, duration, signing).await?;
    let after = publish_batches(&ingress).await;
    ingress.terminate(Duration::from_secs(40)).await;
    if let Some(drain) = drain {
        drain.stop().await;
    }
    broker::delete_prefix(&prefix).await;
    Ok(IngressRun {
        webhooks_per_message: webhooks_per_message(before, after),
        max_connections,
        ..measured.into_run(connections)
    })
}

/// The HTTP ceiling ([`probes::serve_http_ceiling`]) as its own process, with
/// as many HTTP workers as ingress, each answer held `hold_ms`, under the same
/// closed loop as [`ingress_alone`].
pub(super) async fn http_ceiling(
    connections: usize,
    duration: Duration,
    hold_ms: f64,
) -> anyhow::Result<IngressRun> {
    let port = process::free_port();
    let listen = format!("127.0.0.1:{port}");
    // As many HTTP workers as the kit gives every ingress it starts.
    let workers = ProcessConfig::ingress("unused", TOKEN)
        .env
        .get("CORRAL_HTTP_WORKERS")
        .cloned()
        .unwrap_or_else(|| "0".to_owned());
    let mut server = ChildGuard(
        std::process::Command::new(std::env::current_exe().context("finding corral-bench")?)
            .args(["http-ceiling", "--listen", &listen, "--workers", &workers])
            .args(["--hold-ms", &hold_ms.to_string()])
            .stdin(std::process::Stdio::null())
            .spawn()
            .context("starting the HTTP ceiling server")?,
    );
    wait::until_true(
        "the HTTP ceiling server to listen",
        Duration::from_secs(30),
        || {
            let listen = listen.clone();
            async move { tokio::net::TcpStream::connect(listen).await.is_ok() }
        },
    )
    .await;
    let measured = drive(
        &corral_testkit::base_url(port),
        server.0.id(),
        Load::Closed { connections },
        duration,
        None,
    )
    .await;
    server.stop();
    Ok(measured?.into_run(connections))
}

/// A child process killed when dropped, so a failed run leaves no server behind.
struct ChildGuard(std::process::Child);

impl ChildGuard {
    fn stop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What the load generator measured against one HTTP server, and that
/// server's CPU and peak RSS meanwhile.
struct Measured {
    report: loadgen::Report,
    cpu_percent: f64,
    peak_rss_mib: f64,
}

/// Runs the load generator against `base_url` (2 s warm-up, then `duration`)
/// while sampling process `pid`; signed as `signing` says.
async fn drive(
    base_url: &str,
    pid: u32,
    load: Load,
    duration: Duration,
    signing: Option<Signing>,
) -> anyhow::Result<Measured> {
    let mut config = loadgen::Config::new(base_url, TOKEN);
    if let Some(signing) = signing {
        signing.load(&mut config);
    }
    config.load = load;
    config.duration = Some(duration);
    config.warmup = Duration::from_secs(2);
    let sampler = Sampler::start(pid);
    let run = loadgen::run(config).await;
    let (cpu_percent, peak_rss_mib) = sampler.finish();
    Ok(Measured {
        report: run?.report,
        cpu_percent,
        peak_rss_mib,
    })
}

impl Measured {
    fn into_run(self, connections: usize) -> IngressRun {
        let report = self.report;
        let server_errors = report
            .statuses
            .iter()
            .filter(|(status, _)| (500..600).contains(*status))
            .map(|(_, count)| count)
            .sum();
        IngressRun {
            connections,
            accepted_per_sec: report.accepted_per_sec,
            not_accepted: report.requests - report.accepted,
            p50_ms: ms(report.latency_us.p50),
            p99_ms: ms(report.latency_us.p99),
            p999_ms: ms(report.latency_us.p99_9),
            peak_rss_mib: self.peak_rss_mib,
            cpu_percent: self.cpu_percent,
            generator_cpu_percent: report.generator.cpu_percent,
            webhooks_per_message: None,
            connection_errors: report.errors.connect + report.errors.io,
            timeouts: report.errors.timeout,
            server_errors,
            connections_opened: report.generator.connections_opened,
            max_connections: None,
        }
    }
}

/// Ingress's publish batch-size histogram now: (webhooks, messages) so far,
/// or `None` when ingress does not export it.
pub(super) async fn publish_batches(ingress: &Process) -> Option<(f64, f64)> {
    histogram_now(ingress, INGRESS_PUBLISH_BATCH_SIZE).await
}

/// A histogram of `process` now: (sum, count), or `None` before its first
/// observation.
async fn histogram_now(process: &Process, name: &str) -> Option<(f64, f64)> {
    let metrics = process.metrics().await;
    let series = |suffix: &str| metrics.0.get(&format!("{name}_{suffix}")).copied();
    Some((series("sum")?, series("count")?))
}

/// Webhooks per message between two [`publish_batches`] readings. A
/// histogram appears with its first observation, so one absent before but
/// present after started from zero.
pub(super) fn webhooks_per_message(
    before: Option<(f64, f64)>,
    after: Option<(f64, f64)>,
) -> Option<f64> {
    let (sum, count) = after?;
    let (sum_before, count_before) = before.unwrap_or((0.0, 0.0));
    let messages = count - count_before;
    (messages > 0.0).then(|| (sum - sum_before) / messages)
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
        None,
        None,
    )
    .await?;
    Ok((probe, ingress))
}

/// Publishes `count` distinct webhooks into the prefix's queue, confirmed,
/// as ingress would have (same properties), 1,024 messages in flight on 4
/// channels: one webhook per message (envelope 1) when `batch` is `None`,
/// else `batch` webhooks per message (envelope 2, the last one shorter).
pub async fn prefill(prefix: &str, count: usize, batch: Option<usize>) -> anyhow::Result<()> {
    let (connection, channels, topology) =
        probes::confirm_channels(&config::amqp(prefix), 4).await?;
    let exchange = topology.exchange();
    let run = unique_name("bench-row");
    let kind = |i: usize| if i % 4 == 3 { Kind::Rvm } else { Kind::Sms };
    let per_message = batch.unwrap_or(1).max(1);
    let mut pending = FuturesUnordered::new();
    for (message, first) in (0..count).step_by(per_message).enumerate() {
        if pending.len() >= 1024
            && let Some(confirmation) = pending.next().await
        {
            let confirmation: lapin::Confirmation = confirmation?;
            anyhow::ensure!(confirmation.is_ack(), "prefill publish nacked");
        }
        let channel = &channels[message % channels.len()];
        let confirm = if batch.is_none() {
            let body = probes::body(&run, first);
            probes::publish_as_ingress(
                channel,
                &exchange,
                kind(first).routing_key(),
                body.as_bytes(),
            )
            .await?
        } else {
            let indexes = first..(first + per_message).min(count);
            let bodies: Vec<String> = indexes.clone().map(|i| probes::body(&run, i)).collect();
            let received_at = chrono::Utc::now();
            let packing: Vec<batch::Packing> = indexes
                .zip(&bodies)
                .map(|(i, body)| batch::Packing {
                    id: Uuid::now_v7(),
                    received_at,
                    kind: kind(i),
                    body: body.as_bytes(),
                })
                .collect();
            let message = envelope::batch_message(Uuid::now_v7(), &packing, envelope::Charset::Any);
            corral_runtime::amqp::publish_mandatory(
                channel,
                exchange.as_str().into(),
                message.routing_key.into(),
                &message.body,
                corral_runtime::amqp::properties(&message.metadata),
            )
            .await?
        };
        pending.push(confirm);
    }
    while let Some(confirmation) = pending.next().await {
        anyhow::ensure!(confirmation?.is_ack(), "prefill publish nacked");
    }
    corral_runtime::amqp::close(&connection, Duration::from_secs(10), "prefilled").await;
    Ok(())
}

/// The worker draining `messages` webhooks, pre-filled `batch` per message
/// (see [`prefill`]).
pub(super) async fn worker_alone(
    messages: usize,
    batch: Option<usize>,
) -> anyhow::Result<WorkerRun> {
    worker_alone_with(messages, batch, &[]).await
}

/// [`worker_alone`] with extra `CORRAL_*` settings for the worker (tuning experiments).
pub async fn worker_alone_with(
    messages: usize,
    batch: Option<usize>,
    env: &[(String, String)],
) -> anyhow::Result<WorkerRun> {
    let prefix = unique_name("bench");
    let db = probes::migrated_database().await?;
    let started_fill = Instant::now();
    prefill(&prefix, messages, batch).await?;
    eprintln!(
        "bench: pre-filled {messages} webhooks, {} per message, in {:.1} s",
        batch.unwrap_or(1),
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
        webhooks_per_message: batch.unwrap_or(1),
        seconds,
        rows_per_sec: messages as f64 / seconds,
        peak_rss_mib: peak,
        cpu_percent: cpu,
    })
}

/// The pipeline runs' load: an open loop at `rate` for `duration` after a
/// 2 s warm-up, with a few duplicates and results out of order.
pub(super) fn open_loop(ingress: &Process, rate: f64, duration: Duration) -> loadgen::Config {
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
    config
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
    let config = open_loop(&ingress, rate, duration);
    let ingress_sampler = Sampler::start(ingress.pid());
    let worker_sampler = Sampler::start(worker.pid());
    let before = publish_batches(&ingress).await;
    let run = loadgen::run(config).await?;
    let after = publish_batches(&ingress).await;
    let verification = loadgen::verify(&db.url, &run.sent, &VerifyOptions::default()).await?;
    let (_, ingress_peak) = ingress_sampler.finish();
    let (_, worker_peak) = worker_sampler.finish();
    let (e2e_p50, e2e_p99) = end_to_end(&db).await?;
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
        of_publish_probe: None,
        webhooks_per_message: webhooks_per_message(before, after),
    })
}

/// Ingress whose broker is gone (its AMQP URL names a port nobody listens
/// on), so every webhook takes the spool, under a closed loop of
/// `connections`; then a worker drains the spool and the verifier checks
/// every 200 is exactly one row. Compared with the bare spool INSERT on one
/// connection, at the round size the run reached and at the largest round.
pub(super) async fn spool_path(connections: usize, duration: Duration) -> anyhow::Result<SpoolRun> {
    let prefix = unique_name("bench");
    let db = probes::migrated_database().await?;
    let writer = db.spool_writer().await;
    let nowhere = format!("amqp://guest:guest@127.0.0.1:{}/%2f", process::free_port());
    let mut ingress = Process::start_ready(
        ProcessConfig::ingress(&prefix, TOKEN)
            .env("CORRAL_LOG", "warn")
            .env("CORRAL_AMQP_URL", nowhere)
            .env("CORRAL_SPOOL_DATABASE_URL", writer.url.clone()),
    )
    .await;
    let mut config = loadgen::Config::new(ingress.base_url(), TOKEN);
    config.load = Load::Closed { connections };
    config.duration = Some(duration);
    config.warmup = Duration::from_secs(2);
    let sampler = Sampler::start(ingress.pid());
    let before = histogram_now(&ingress, INGRESS_SPOOL_BATCH_SIZE).await;
    let run = loadgen::run(config).await?;
    let after = histogram_now(&ingress, INGRESS_SPOOL_BATCH_SIZE).await;
    let (cpu_percent, _) = sampler.finish();
    ingress.terminate(Duration::from_secs(40)).await;
    let rows_per_insert = webhooks_per_message(before, after);
    // The worker drains what the spool holds; its broker is the local one.
    let mut worker = Process::start_ready(
        ProcessConfig::worker(&db.url, &prefix)
            .env("CORRAL_DB_POOL_SIZE", "4")
            .env("CORRAL_LOG", "warn"),
    )
    .await;
    let verification = loadgen::verify(&db.url, &run.sent, &VerifyOptions::default()).await?;
    worker.terminate(Duration::from_secs(40)).await;
    broker::delete_prefix(&prefix).await;
    drop(writer);
    drop(db);
    // The probe writes statements of the size the spool's rounds had.
    let probe_batch = rows_per_insert
        .map_or(1, |rows| rows.ceil() as usize)
        .next_power_of_two()
        .min(corral_ingress::buffer::spool::BATCH_MAX);
    // Enough rows for a steady rate at either size without a minute of
    // single-row-ish statements.
    let probe = probes::spool_insert(30_000, probe_batch).await?;
    let full = corral_ingress::buffer::spool::BATCH_MAX;
    let ceiling = probes::spool_insert(100_000, full).await?;
    let report = run.report;
    Ok(SpoolRun {
        connections,
        accepted_per_sec: report.accepted_per_sec,
        not_accepted: report.requests - report.accepted,
        p50_ms: ms(report.latency_us.p50),
        p99_ms: ms(report.latency_us.p99),
        rows_per_insert,
        cpu_percent,
        probe_per_sec: probe.per_second,
        probe_batch,
        ceiling_per_sec: ceiling.per_second,
        ceiling_batch: full,
        lost: verification.lost,
        duplicated: verification.duplicated,
        verified: verification.is_ok() && verification.drained,
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
        version: Some(command(
            "git",
            &[
                "-C",
                &process::workspace_root().to_string_lossy(),
                "describe",
                "--always",
                "--dirty",
            ],
        ))
        .filter(|version| !version.is_empty()),
    })
}

/// The median and 99th percentile of `stored_at − received_at` over every
/// stored webhook, in seconds.
async fn end_to_end(db: &database::TestDatabase) -> anyhow::Result<(f64, f64)> {
    let row = db
        .client()
        .await
        .query_one(
            "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM stored_at - received_at)),
                    percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM stored_at - received_at))
             FROM delivery_events",
            &[],
        )
        .await?;
    Ok((row.get(0), row.get(1)))
}

/// SQS requests by the two binaries, summed over operations: sent, and
/// billed (each 64 KiB of payload one).
fn sqs_requests(metrics: &Metrics) -> (f64, f64) {
    let sum = |name: &str| {
        metrics
            .0
            .iter()
            .filter(|(series, _)| series.starts_with(&format!("{name}{{")))
            .map(|(_, value)| value)
            .sum::<f64>()
    };
    (sum(SQS_REQUESTS), sum(SQS_BILLED_REQUESTS))
}

/// The pipeline over SQS (moto on this machine) at `rate` webhooks/s: what
/// it answers, how fast, and how many SQS requests each webhook cost.
pub(super) async fn sqs_pipeline(
    rate: f64,
    duration: Duration,
    shape: SqsShape,
) -> anyhow::Result<SqsRun> {
    let queue = TestQueue::with(QueueOptions {
        fifo: shape.fifo,
        ..QueueOptions::default()
    })
    .await;
    let db = probes::migrated_database().await?;
    let mut worker = Process::start_ready(
        ProcessConfig::worker(&db.url, "bench-unused")
            .sqs(&queue.url, sqs::ENDPOINT)
            .env("CORRAL_DB_POOL_SIZE", "4")
            .env("CORRAL_LOG", "warn"),
    )
    .await;
    let mut ingress = Process::start_ready(
        ProcessConfig::ingress("bench-unused", TOKEN)
            .sqs(&queue.url, sqs::ENDPOINT)
            .env("CORRAL_SQS_LINGER_MS", shape.linger_ms.to_string())
            .env("CORRAL_LOG", "warn"),
    )
    .await;
    let before = (ingress.metrics().await, worker.metrics().await);
    let config = loadgen::Config {
        mix: Mix::default(),
        ..open_loop(&ingress, rate, duration)
    };
    let run = loadgen::run(config).await?;
    // moto's FIFO queue falls behind (answers of seconds, a backlog that
    // ends a minute after the load): the verifier's default 60 s would
    // count what is still on its way as lost.
    let options = VerifyOptions {
        timeout: Duration::from_secs(if shape.fifo { 300 } else { 60 }),
        ..VerifyOptions::default()
    };
    let verification = loadgen::verify(&db.url, &run.sent, &options).await?;
    // Everything is stored: the worker has deleted what it took, or is
    // about to; its requests until then are part of the cost.
    wait::until_true("the queue to be empty", Duration::from_secs(60), || async {
        queue.counts().await == (0, 0)
    })
    .await;
    let after = (ingress.metrics().await, worker.metrics().await);
    let (e2e_p50, e2e_p99) = end_to_end(&db).await?;
    ingress.terminate(Duration::from_secs(40)).await;
    worker.terminate(Duration::from_secs(40)).await;
    let delta = |before: &Metrics, after: &Metrics| {
        let (sent0, billed0) = sqs_requests(before);
        let (sent1, billed1) = sqs_requests(after);
        (sent1 - sent0, billed1 - billed0)
    };
    let (ingress_sent, ingress_billed) = delta(&before.0, &after.0);
    let (worker_sent, worker_billed) = delta(&before.1, &after.1);
    let batch = |m: &Metrics| {
        (
            m.get(&format!("{INGRESS_PUBLISH_BATCH_SIZE}_count")),
            m.get(&format!("{INGRESS_PUBLISH_BATCH_SIZE}_sum")),
        )
    };
    let messages = batch(&after.0).0 - batch(&before.0).0;
    // Every webhook ingress sent to SQS, warm-up included, as the request
    // counts are.
    let webhooks = batch(&after.0).1 - batch(&before.0).1;
    let report = run.report;
    Ok(SqsRun {
        rate,
        linger_ms: shape.linger_ms,
        fifo: shape.fifo,
        accepted_per_sec: report.accepted_per_sec,
        webhooks: webhooks as u64,
        p50_ms: ms(report.latency_us.p50),
        p99_ms: ms(report.latency_us.p99),
        e2e_p50_ms: e2e_p50 * 1000.0,
        e2e_p99_ms: e2e_p99 * 1000.0,
        webhooks_per_message: (messages > 0.0).then(|| webhooks / messages),
        ingress_requests_per_webhook: ingress_sent / webhooks,
        worker_requests_per_webhook: worker_sent / webhooks,
        billed_per_webhook: (ingress_billed + worker_billed) / webhooks,
        lost: verification.lost,
        duplicated: verification.duplicated,
        verified: verification.is_ok() && verification.drained,
    })
}
