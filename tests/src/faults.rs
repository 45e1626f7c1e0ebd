//! The fault suite: both binaries as real processes under a steady load from
//! `corral-loadgen`, a fault injected mid-load, recovery awaited, and then the
//! one promise checked — every webhook answered 2xx is exactly one
//! `delivery_events` row, no row exists that was not sent — plus the
//! services having recovered by themselves.
//!
//! Scenarios restart shared services (RabbitMQ, PostgreSQL), so the suite
//! runs serially and never beside the parallel test suite; `scripts/test`
//! runs its short profile after the other tests.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use serde::Serialize;

use crate::{
    database::TestDatabase,
    loadgen::{self, Load, Mix, Verification, VerifyOptions},
    process::{Process, ProcessConfig},
    proxy::TcpProxy,
};

/// Token of the suite's ingresses.
const TOKEN: &str = "fault-suite-token-0123456789";

/// The publish deadline the suite's ingresses run with (`tuned`) plus two
/// seconds of slack for a loaded 2-core machine: no answer may take longer.
const SLOWEST_ANSWER_MS: f64 = 5_000.0;

/// Connections each load may open. A process's memory grows with the
/// connections it serves at once (buffers per connection), so every scenario
/// first serves this many (see [`Stack::warm_up`]) and the load never opens
/// more: RSS before and after a fault then differ only by what the fault left.
const MAX_CONNECTIONS: usize = 64;

/// How hard and how long each scenario runs.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Profile {
    /// Name (`ci`, `full`).
    pub name: &'static str,
    /// Webhooks per second offered (open loop), split over the ingresses.
    pub rate: f64,
    /// Load before the fault.
    pub before: Duration,
    /// Load after recovery.
    pub after: Duration,
    /// How long an outage lasts where the scenario has one.
    pub outage: Duration,
}

impl Profile {
    /// The short version CI runs: every scenario, a lighter and shorter load.
    pub const CI: Profile = Profile {
        name: "ci",
        rate: 300.0,
        before: Duration::from_secs(3),
        after: Duration::from_secs(3),
        outage: Duration::from_secs(10),
    };
    /// The full version.
    pub const FULL: Profile = Profile {
        name: "full",
        rate: 1_500.0,
        before: Duration::from_secs(10),
        after: Duration::from_secs(10),
        outage: Duration::from_secs(10),
    };
}

/// One scenario's outcome: the row of the table.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// Scenario name.
    pub scenario: String,
    /// Requests sent (all loads).
    pub sent: u64,
    /// Answered 2xx.
    pub ok: u64,
    /// Answered 503.
    pub unavailable: u64,
    /// Anything else: other statuses, connection errors, timeouts.
    pub other: u64,
    /// `delivery_events` rows of the load.
    pub rows: u64,
    /// Answered 2xx and not stored.
    pub lost: u64,
    /// Stored more than once.
    pub duplicated: u64,
    /// Rows nobody sent, content changed, stale latest state, quarantined by mistake.
    pub wrong: u64,
    /// Seconds from the end of the fault until every process was ready and a
    /// webhook was accepted again.
    pub recovered_secs: f64,
    /// The slowest answer any request got, from its actual send, ms: no
    /// request may hang past the publish deadline (plus scheduling slack).
    pub slowest_answer_ms: f64,
    /// Resident memory before the fault and after recovery, per process, MiB.
    pub rss_mib: Vec<(String, f64, f64)>,
    /// Whether RSS after recovery is within 20 % of before (broker scenarios).
    pub rss_checked: bool,
    /// Anything else the scenario checked or noticed.
    pub notes: Vec<String>,
    /// The scenario's verdict.
    pub passed: bool,
}

/// Every scenario, in the order they run.
pub const SCENARIOS: &[&str] = &[
    "broker-connections-closed",
    "broker-stopped",
    "worker-sigkill",
    "worker-sigterm",
    "ingress-sigterm",
    "postgres-restarted",
    "postgres-backends-terminated",
    "broker-path-blackholed",
    "poison-messages",
    "two-of-each-one-killed",
];

/// Runs one scenario by name.
pub async fn run(name: &str, profile: Profile) -> anyhow::Result<Outcome> {
    match name {
        "broker-connections-closed" => broker_connections_closed(profile).await,
        "broker-stopped" => broker_stopped(profile).await,
        "worker-sigkill" => worker_killed(profile, false).await,
        "worker-sigterm" => worker_killed(profile, true).await,
        "ingress-sigterm" => ingress_sigterm(profile).await,
        "postgres-restarted" => postgres_restarted(profile).await,
        "postgres-backends-terminated" => postgres_backends_terminated(profile).await,
        "broker-path-blackholed" => broker_path_blackholed(profile).await,
        "poison-messages" => poison_messages(profile).await,
        "two-of-each-one-killed" => two_of_each_one_killed(profile).await,
        other => bail!(
            "unknown scenario {other:?}; known: {}",
            SCENARIOS.join(", ")
        ),
    }
}

/// The processes of one scenario, on their own AMQP prefix and database.
struct Stack {
    prefix: String,
    db: TestDatabase,
    ingresses: Vec<Process>,
    workers: Vec<Process>,
    /// Between the ingresses and RabbitMQ, where the scenario cuts the path.
    proxy: Option<TcpProxy>,
    http: reqwest::Client,
    canaries: u64,
}

impl Stack {
    async fn start(ingresses: usize, workers: usize, proxied: bool) -> anyhow::Result<Self> {
        let prefix = crate::unique_name("fault");
        let db = TestDatabase::new().await;
        let proxy = if proxied {
            Some(TcpProxy::start("127.0.0.1:5672".parse()?).await)
        } else {
            None
        };
        let mut stack = Self {
            prefix,
            db,
            ingresses: Vec::new(),
            workers: Vec::new(),
            proxy,
            http: reqwest::Client::new(),
            canaries: 0,
        };
        for _ in 0..workers {
            let config = tuned(ProcessConfig::worker(&stack.db.url, &stack.prefix));
            stack.workers.push(Process::start_ready(config).await);
        }
        for _ in 0..ingresses {
            let mut config = tuned(ProcessConfig::ingress(&stack.prefix, TOKEN));
            if let Some(proxy) = &stack.proxy {
                config = config.env("CORRAL_AMQP_URL", proxy.amqp_url());
            }
            stack.ingresses.push(Process::start_ready(config).await);
        }
        Ok(stack)
    }

    /// Serves `MAX_CONNECTIONS` connections on every ingress for a second,
    /// so the RSS measured before the fault is the process at its working size.
    async fn warm_up(
        &self,
    ) -> anyhow::Result<Vec<tokio::task::JoinHandle<Result<loadgen::Run, loadgen::LoadgenError>>>>
    {
        let mut runs = Vec::new();
        for i in 0..self.ingresses.len() {
            let mut config = loadgen::Config::new(self.ingress_base(i), TOKEN);
            config.load = Load::Closed {
                connections: MAX_CONNECTIONS,
            };
            config.duration = Some(Duration::from_secs(1));
            let run = loadgen::run(config).await?;
            runs.push(tokio::spawn(async move { Ok(run) }));
        }
        Ok(runs)
    }

    fn ingress_base(&self, i: usize) -> String {
        let url = self.ingresses[i].webhook_url("sms");
        url.trim_end_matches("/webhooks/dropcowboy/sms").to_owned()
    }

    /// Starts the load: one open-loop run per ingress, `rate` split evenly,
    /// lasting `duration`.
    fn start_load(
        &self,
        profile: Profile,
        duration: Duration,
    ) -> Vec<tokio::task::JoinHandle<Result<loadgen::Run, loadgen::LoadgenError>>> {
        let share = profile.rate / self.ingresses.len() as f64;
        (0..self.ingresses.len())
            .map(|i| {
                let mut config = loadgen::Config::new(self.ingress_base(i), TOKEN);
                config.load = Load::Open {
                    rate: share,
                    max_connections: MAX_CONNECTIONS,
                };
                config.duration = Some(duration);
                config.timeout = Duration::from_secs(15);
                config.mix = Mix {
                    duplicates: 0.05,
                    out_of_order: 0.05,
                    ..Mix::default()
                };
                tokio::spawn(loadgen::run(config))
            })
            .collect()
    }

    fn rss(&self) -> Vec<(String, f64)> {
        self.ingresses
            .iter()
            .map(|p| ("ingress", p))
            .chain(self.workers.iter().map(|p| ("worker", p)))
            .enumerate()
            .map(|(i, (kind, p))| {
                (
                    format!("{kind}#{i}"),
                    p.rss_bytes().unwrap_or(0) as f64 / 1_048_576.0,
                )
            })
            .collect()
    }

    /// Waits until every process is ready and ingress 0 accepts a webhook;
    /// returns the seconds it took.
    async fn wait_recovered(&mut self, since: Instant) -> anyhow::Result<f64> {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let mut ready = true;
            for process in self.ingresses.iter().chain(self.workers.iter()) {
                ready &= process.is_ready().await;
            }
            if ready && self.canary().await {
                return Ok(since.elapsed().as_secs_f64());
            }
            ensure!(
                Instant::now() < deadline,
                "the services did not recover within 90 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Posts one extra webhook (not part of the load); true on 200.
    async fn canary(&mut self) -> bool {
        self.canaries += 1;
        let body = crate::fixtures::delivery_status(
            &format!("canary-{}-{}", self.prefix, self.canaries),
            "2026-11-27T05:00:00.000Z",
            "",
            "canary",
        );
        self.http
            .post(self.ingresses[0].webhook_url("sms"))
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(body)
            .timeout(Duration::from_secs(6))
            .send()
            .await
            .is_ok_and(|response| response.status().is_success())
    }

    /// Waits for the loads, verifies them, and builds the scenario's row.
    async fn finish(
        self,
        scenario: &str,
        loads: Vec<tokio::task::JoinHandle<Result<loadgen::Run, loadgen::LoadgenError>>>,
        recovered_secs: f64,
        rss_before: Vec<(String, f64)>,
        check_rss: bool,
        mut notes: Vec<String>,
    ) -> anyhow::Result<Outcome> {
        let mut outcome = Outcome {
            scenario: scenario.to_owned(),
            sent: 0,
            ok: 0,
            unavailable: 0,
            other: 0,
            rows: 0,
            lost: 0,
            duplicated: 0,
            wrong: 0,
            recovered_secs,
            slowest_answer_ms: 0.0,
            rss_mib: Vec::new(),
            rss_checked: check_rss,
            notes: Vec::new(),
            passed: false,
        };
        let mut verifications: Vec<Verification> = Vec::new();
        for load in loads {
            let run = load.await.context("the load task panicked")??;
            let report = &run.report;
            outcome.sent += report.requests + report.warmup_requests;
            outcome.ok += report
                .statuses
                .iter()
                .filter(|(status, _)| (200..300).contains(*status))
                .map(|(_, n)| n)
                .sum::<u64>();
            outcome.unavailable += report.statuses.get(&503).copied().unwrap_or(0);
            let slowest = report
                .service_time_us
                .as_ref()
                .unwrap_or(&report.latency_us)
                .max;
            outcome.slowest_answer_ms = outcome.slowest_answer_ms.max(slowest as f64 / 1000.0);
            let options = VerifyOptions {
                timeout: Duration::from_secs(120),
                ..VerifyOptions::default()
            };
            verifications.push(loadgen::verify(&self.db.url, &run.sent, &options).await?);
        }
        outcome.other = outcome.sent - outcome.ok - outcome.unavailable;
        for v in &verifications {
            outcome.lost += v.lost;
            outcome.duplicated += v.duplicated;
            outcome.wrong += v.unexpected + v.mismatched + v.stale_latest + v.quarantined;
            notes.extend(v.examples.iter().take(3).cloned());
        }
        let client = self.db.client().await;
        let rows: i64 = client
            .query_one("SELECT count(*) FROM delivery_events WHERE drop_id NOT LIKE 'canary-%' AND drop_id NOT LIKE 'poison-%'", &[])
            .await?
            .get(0);
        outcome.rows = rows as u64;

        let rss_after = self.rss();
        let mut rss_ok = true;
        for ((name, before), (_, after)) in rss_before.iter().zip(rss_after.iter()) {
            outcome
                .rss_mib
                .push((name.clone(), round1(*before), round1(*after)));
            if check_rss && *after > before * 1.2 {
                rss_ok = false;
                notes.push(format!(
                    "{name} RSS grew from {before:.1} MiB to {after:.1} MiB"
                ));
            }
        }
        let hung = outcome.slowest_answer_ms > SLOWEST_ANSWER_MS;
        if hung {
            notes.push(format!(
                "a request waited {:.0} ms for its answer (more than {SLOWEST_ANSWER_MS} ms)",
                outcome.slowest_answer_ms
            ));
        }
        outcome.passed = !hung
            && outcome.lost == 0
            && outcome.duplicated == 0
            && outcome.wrong == 0
            && outcome.ok > 0
            && rss_ok
            && verifications.iter().all(|v| v.drained);
        outcome.notes = notes;
        self.stop().await;
        Ok(outcome)
    }

    async fn stop(mut self) {
        for process in self.ingresses.iter_mut().chain(self.workers.iter_mut()) {
            if process.is_running() {
                process.terminate(Duration::from_secs(40)).await;
            }
        }
        crate::broker::delete_prefix(&self.prefix).await;
    }
}

/// Settings for quick, observable recovery: the defaults but a shorter
/// reconnect cap and heartbeat, so a scenario does not wait on 5 s backoffs.
fn tuned(config: ProcessConfig) -> ProcessConfig {
    config
        .env("CORRAL_AMQP_RECONNECT_MAX_MS", "1000")
        .env("CORRAL_AMQP_HEARTBEAT_SECS", "5")
        .env("CORRAL_DB_RETRY_MAX_MS", "1000")
        .env("CORRAL_PUBLISH_TIMEOUT_MS", "3000")
        .env("CORRAL_LOG", "warn")
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn shell(program: &str, args: &[&str]) -> anyhow::Result<()> {
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

fn rabbitmqctl(args: &[&str]) -> anyhow::Result<()> {
    shell("rabbitmqctl", args)
}

fn postgres_version() -> anyhow::Result<String> {
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

fn total(profile: Profile, fault: Duration) -> Duration {
    profile.before + fault + Duration::from_secs(2) + profile.after
}

// ---------------------------------------------------------------- scenarios

async fn broker_connections_closed(p: Profile) -> anyhow::Result<Outcome> {
    let mut stack = Stack::start(1, 1, false).await?;
    let mut loads = stack.warm_up().await?;
    loads.extend(stack.start_load(p, total(p, Duration::from_secs(6))));
    tokio::time::sleep(p.before).await;
    let rss = stack.rss();
    for round in 0..3 {
        if round > 0 {
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        rabbitmqctl(&["close_all_connections", "corral fault suite"])?;
    }
    let recovered = stack.wait_recovered(Instant::now()).await?;
    stack
        .finish(
            "broker-connections-closed",
            loads,
            recovered,
            rss,
            true,
            vec!["all connections closed 3 times, 2 s apart".into()],
        )
        .await
}

async fn broker_stopped(p: Profile) -> anyhow::Result<Outcome> {
    let mut stack = Stack::start(1, 1, false).await?;
    let mut loads = stack.warm_up().await?;
    loads.extend(stack.start_load(p, total(p, p.outage)));
    tokio::time::sleep(p.before).await;
    let rss = stack.rss();
    rabbitmqctl(&["stop_app"])?;
    tokio::time::sleep(p.outage).await;
    // Recovery counts from the restart command: the broker's own start-up
    // (recovering the quorum queues) is part of what the services wait out.
    let since = Instant::now();
    rabbitmqctl(&["start_app"])?;
    let recovered = stack.wait_recovered(since).await?;
    stack
        .finish(
            "broker-stopped",
            loads,
            recovered,
            rss,
            true,
            vec![format!("rabbitmqctl stop_app for {:?}", p.outage)],
        )
        .await
}

async fn worker_killed(p: Profile, graceful: bool) -> anyhow::Result<Outcome> {
    let mut stack = Stack::start(1, 1, false).await?;
    let mut loads = stack.warm_up().await?;
    loads.extend(stack.start_load(p, total(p, Duration::from_secs(2))));
    tokio::time::sleep(p.before).await;
    let rss = stack.rss();
    let mut notes = Vec::new();
    let in_hand = stack.workers[0]
        .metrics()
        .await
        .get("corral_worker_messages_in_hand");
    notes.push(format!("messages in hand when signalled: {in_hand}"));
    if graceful {
        let status = stack.workers[0].terminate(Duration::from_secs(40)).await;
        ensure!(
            status.success(),
            "the worker did not exit 0 on SIGTERM: {status}"
        );
        notes.push("worker exited 0 on SIGTERM".into());
    } else {
        stack.workers[0].sigkill();
        stack.workers[0].wait_exit(Duration::from_secs(5)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let since = Instant::now();
    stack.workers[0].restart();
    let recovered = stack.wait_recovered(since).await?;
    let name = if graceful {
        "worker-sigterm"
    } else {
        "worker-sigkill"
    };
    stack
        .finish(name, loads, recovered, rss, false, notes)
        .await
}

async fn ingress_sigterm(p: Profile) -> anyhow::Result<Outcome> {
    let mut stack = Stack::start(1, 1, false).await?;
    let mut loads = stack.warm_up().await?;
    loads.extend(stack.start_load(p, total(p, Duration::from_secs(2))));
    tokio::time::sleep(p.before).await;
    let rss = stack.rss();
    let in_flight = stack.ingresses[0]
        .metrics()
        .await
        .get("corral_ingress_publishes_in_flight");
    let status = stack.ingresses[0].terminate(Duration::from_secs(40)).await;
    ensure!(
        status.success(),
        "the ingress did not exit 0 on SIGTERM: {status}"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let since = Instant::now();
    stack.ingresses[0].restart();
    let recovered = stack.wait_recovered(since).await?;
    stack
        .finish(
            "ingress-sigterm",
            loads,
            recovered,
            rss,
            false,
            vec![format!(
                "publishes in flight when signalled: {in_flight}; exited 0"
            )],
        )
        .await
}

async fn postgres_restarted(p: Profile) -> anyhow::Result<Outcome> {
    let mut stack = Stack::start(1, 1, false).await?;
    let mut loads = stack.warm_up().await?;
    loads.extend(stack.start_load(p, total(p, Duration::from_secs(5))));
    tokio::time::sleep(p.before).await;
    let rss = stack.rss();
    let version = postgres_version()?;
    let since = Instant::now();
    shell(
        "pg_ctlcluster",
        &["--skip-systemctl-redirect", &version, "main", "restart"],
    )?;
    let recovered = stack.wait_recovered(since).await?;
    stack
        .finish(
            "postgres-restarted",
            loads,
            recovered,
            rss,
            false,
            vec![format!("pg_ctlcluster {version} main restart")],
        )
        .await
}

async fn postgres_backends_terminated(p: Profile) -> anyhow::Result<Outcome> {
    let mut stack = Stack::start(1, 1, false).await?;
    let mut loads = stack.warm_up().await?;
    loads.extend(stack.start_load(p, total(p, Duration::from_secs(4))));
    tokio::time::sleep(p.before).await;
    let rss = stack.rss();
    let admin = crate::database::connect(crate::database::SERVER_URL).await;
    let mut terminated = 0i64;
    let mut since = Instant::now();
    for round in 0..3 {
        if round > 0 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        since = Instant::now();
        let row = admin
            .query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                &[&stack.db.name],
            )
            .await?;
        terminated += row.get::<_, i64>(0);
    }
    let recovered = stack.wait_recovered(since).await?;
    stack
        .finish(
            "postgres-backends-terminated",
            loads,
            recovered,
            rss,
            false,
            vec![format!("{terminated} backends terminated in 3 rounds")],
        )
        .await
}

async fn broker_path_blackholed(p: Profile) -> anyhow::Result<Outcome> {
    let mut stack = Stack::start(1, 1, true).await?;
    let mut loads = stack.warm_up().await?;
    loads.extend(stack.start_load(p, total(p, p.outage)));
    tokio::time::sleep(p.before).await;
    let rss = stack.rss();
    let proxy = stack.proxy.as_ref().expect("proxied stack");
    proxy.blackhole();
    tokio::time::sleep(p.outage).await;
    proxy.drop_connections();
    let recovered = stack.wait_recovered(Instant::now()).await?;
    let failures = stack.ingresses[0].metrics().await;
    let note = format!(
        "ingress↔RabbitMQ black-holed for {:?}, then connections dropped; 503 causes: timeout {}, unavailable {}, overloaded {}",
        p.outage,
        failures.get(r#"corral_ingress_publish_failures_total{cause="timeout"}"#),
        failures.get(r#"corral_ingress_publish_failures_total{cause="unavailable"}"#),
        failures.get(r#"corral_ingress_publish_failures_total{cause="overloaded"}"#),
    );
    stack
        .finish(
            "broker-path-blackholed",
            loads,
            recovered,
            rss,
            true,
            vec![note],
        )
        .await
}

/// Valid JSON objects the worker cannot store, posted in the middle of normal
/// traffic: each must end in `quarantined_webhooks`, byte for byte, and the
/// traffic around them must be stored as usual.
async fn poison_messages(p: Profile) -> anyhow::Result<Outcome> {
    let mut stack = Stack::start(1, 1, false).await?;
    let mut loads = stack.warm_up().await?;
    loads.extend(stack.start_load(p, total(p, Duration::from_secs(2))));
    tokio::time::sleep(p.before).await;
    let rss = stack.rss();
    let poisons = [
        r#"{"drop_id":12345,"status":"success","attempt_date":"2026-11-27T05:00:00Z"}"#.to_owned(),
        r#"{"status":"failure","attempt_date":"2026-11-27T05:00:00Z","reason":"poison: no drop_id"}"#.to_owned(),
        r#"{"drop_id":"poison-date","status":"success","attempt_date":"the day after tomorrow"}"#.to_owned(),
        r#"{"drop_id":"poison-money","status":"success","attempt_date":"2026-11-27T05:00:00Z","product_cost":"free"}"#.to_owned(),
        r#"{"drop_id":"poison-nul","status":"success","attempt_date":"2026-11-27T05:00:00Z","note":"a\u0000b"}"#.to_owned(),
        format!(r#"{{"drop_id":"poison-{}","status":"success","attempt_date":"2026-11-27T05:00:00Z","huge":1e1000000}}"#, stack.prefix),
    ];
    for body in &poisons {
        let response = stack
            .http
            .post(stack.ingresses[0].webhook_url("sms"))
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await?;
        ensure!(
            response.status().is_success(),
            "ingress refused a poison message it should accept: {}",
            response.status()
        );
    }
    let recovered = stack.wait_recovered(Instant::now()).await?;
    let client = stack.db.client().await;
    let mut missing = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    for body in &poisons {
        loop {
            let found: i64 = client
                .query_one(
                    "SELECT count(*) FROM quarantined_webhooks WHERE body = $1",
                    &[&body.as_bytes()],
                )
                .await?
                .get(0);
            if found == 1 {
                break;
            }
            if Instant::now() > deadline {
                missing.push(body.clone());
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let mut notes = vec![format!(
        "{} poison messages posted; {} quarantined byte for byte",
        poisons.len(),
        poisons.len() - missing.len()
    )];
    notes.extend(
        missing
            .iter()
            .map(|body| format!("NOT quarantined: {body}")),
    );
    let mut outcome = stack
        .finish("poison-messages", loads, recovered, rss, false, notes)
        .await?;
    outcome.passed &= missing.is_empty();
    Ok(outcome)
}

async fn two_of_each_one_killed(p: Profile) -> anyhow::Result<Outcome> {
    let mut stack = Stack::start(2, 2, false).await?;
    let mut loads = stack.warm_up().await?;
    loads.extend(stack.start_load(p, total(p, Duration::from_secs(3))));
    tokio::time::sleep(p.before).await;
    let rss = stack.rss();
    stack.ingresses[1].sigkill();
    stack.workers[0].sigkill();
    stack.ingresses[1].wait_exit(Duration::from_secs(5)).await;
    stack.workers[0].wait_exit(Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let since = Instant::now();
    stack.ingresses[1].restart();
    stack.workers[0].restart();
    let recovered = stack.wait_recovered(since).await?;
    stack
        .finish(
            "two-of-each-one-killed",
            loads,
            recovered,
            rss,
            false,
            vec![
                "2 ingresses + 2 workers; SIGKILL ingress#1 and worker#0, restarted 3 s later"
                    .into(),
            ],
        )
        .await
}

/// Renders outcomes as the markdown table of docs/reliability.md.
pub fn table(outcomes: &[Outcome]) -> String {
    let mut out = String::from(
        "| scenario | sent | 2xx | 503 | other | rows | lost | duplicated | wrong | recovered in | slowest answer | RSS before → after (MiB) | result |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|\n",
    );
    for o in outcomes {
        let rss = o
            .rss_mib
            .iter()
            .map(|(name, before, after)| format!("{name} {before} → {after}"))
            .collect::<Vec<_>>()
            .join(", ");
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.1} s | {:.0} ms | {}{} | {} |\n",
            o.scenario,
            o.sent,
            o.ok,
            o.unavailable,
            o.other,
            o.rows,
            o.lost,
            o.duplicated,
            o.wrong,
            o.recovered_secs,
            o.slowest_answer_ms,
            rss,
            if o.rss_checked {
                " (checked ≤ +20 %)"
            } else {
                ""
            },
            if o.passed { "pass" } else { "**FAIL**" },
        ));
    }
    out
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
        let _ = shell(
            "pg_ctlcluster",
            &["--skip-systemctl-redirect", &version, "main", "start"],
        );
    }
    while Instant::now() < deadline {
        let broker = corral_shared::amqp::connect(
            &corral_shared::config::AmqpSettings::local("probe"),
            "corral-faults",
        )
        .await;
        let database =
            tokio_postgres::connect(crate::database::SERVER_URL, tokio_postgres::NoTls).await;
        if let (Ok(connection), Ok(_)) = (broker, database) {
            let _ = connection.close(200, "ok".into()).await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
