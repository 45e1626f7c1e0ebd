//! The processes of one scenario, on their own AMQP prefix and database, and
//! the checks made after it.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use anyhow::{Context as _, ensure};

use corral_loadgen::{self as loadgen, Load, Mix, Verification, VerifyOptions};
use corral_testkit::{
    broker,
    database::{Server, SpoolWriter, TestDatabase},
    fixtures,
    process::{Process, ProcessConfig, fresh_connections},
    proxy::TcpProxy,
    sqs::{QueueOptions, TestQueue},
    unique_name,
};

use super::outcome::*;

/// Token of the suite's ingresses.
pub(super) const TOKEN: &str = "fault-suite-token-0123456789";

/// Signing secret of the ingresses of a signed stack ([`Stack::start_signed`]).
pub(super) const SIGNING_SECRET: &str = "fault-suite-signing-0123456789";

/// The publish deadline the suite's ingresses run with (`tuned`) plus two
/// seconds of slack for a loaded 2-core machine: no answer may take longer.
pub(super) const SLOWEST_ANSWER_MS: f64 = 5_000.0;

/// Connections each load may open. A process's memory grows with the
/// connections it serves at once (buffers per connection), so every scenario
/// first serves this many (see [`Stack::warm_up`]) and the load never opens
/// more: RSS before and after a fault then differ only by what the fault left.
pub(super) const MAX_CONNECTIONS: usize = 64;

/// One running `corral-loadgen` load against one ingress.
pub(super) type LoadTask = tokio::task::JoinHandle<Result<loadgen::Run, loadgen::LoadgenError>>;

/// The processes of one scenario, on their own AMQP prefix and database.
/// Every ingress spools to that database (as the scenario's own
/// `corral_spool_writer` role), so every scenario runs the fallback path too.
pub(super) struct Stack {
    pub(super) prefix: String,
    /// Before `db`: the role is dropped before its database.
    pub(super) spool: SpoolWriter,
    pub(super) db: TestDatabase,
    pub(super) ingresses: Vec<Process>,
    pub(super) workers: Vec<Process>,
    /// Between the ingresses and RabbitMQ (or, with SQS, between every
    /// process and moto), where the scenario cuts the path.
    pub(super) proxy: Option<TcpProxy>,
    /// With `CORRAL_BUFFER=sqs`: the scenario's own queue on moto (and its
    /// dead-letter queue), deleted when the stack is dropped.
    pub(super) sqs: Option<TestQueue>,
    pub(super) http: reqwest::Client,
    pub(super) canaries: u64,
    /// The load is Drop Cowboy's signed webhooks ([`signed_mix`]), the
    /// ingresses verifying them with [`SIGNING_SECRET`].
    pub(super) signed: bool,
    /// Whether [`finish`](Self::finish) notes the longest gaps in answers
    /// and in stored rows (the cluster scenarios).
    pub(super) measure_gaps: bool,
}

/// The brokers a stack's processes use instead of the shared one: every
/// node's URL, and how many quorum queues share the webhooks.
#[derive(Debug, Clone, Copy)]
pub(super) struct Brokers<'a> {
    /// `CORRAL_AMQP_URL`, comma-separated.
    pub url: &'a str,
    /// `CORRAL_AMQP_QUEUES`.
    pub queues: u16,
}

impl Stack {
    pub(super) async fn start(
        ingresses: usize,
        workers: usize,
        proxied: bool,
    ) -> anyhow::Result<Self> {
        let proxy = if proxied {
            Some(TcpProxy::start("127.0.0.1:5672".parse()?).await)
        } else {
            None
        };
        Self::start_with(ingresses, workers, proxy, None, false, None).await
    }

    /// A stack whose processes reach RabbitMQ through `amqp_url` (several
    /// brokers, comma-separated), with the gaps measured at the end.
    pub(super) async fn start_on(
        ingresses: usize,
        workers: usize,
        brokers: Brokers<'_>,
    ) -> anyhow::Result<Self> {
        let mut stack =
            Self::start_with(ingresses, workers, None, None, false, Some(brokers)).await?;
        stack.measure_gaps = true;
        Ok(stack)
    }

    /// A stack whose database (and spool) is on `server` instead of the
    /// shared PostgreSQL: a scenario's own primary and standby.
    pub(super) async fn start_on_server(
        server: Server,
        ingresses: usize,
        workers: usize,
    ) -> anyhow::Result<Self> {
        Self::start_in(
            TestDatabase::new_on(server).await,
            ingresses,
            workers,
            None,
            None,
            false,
            None,
        )
        .await
    }

    /// A stack whose load goes to the signed route: its ingresses have a
    /// signing secret, and the load is Drop Cowboy's signed webhooks.
    pub(super) async fn start_signed(ingresses: usize, workers: usize) -> anyhow::Result<Self> {
        Self::start_with(ingresses, workers, None, None, true, None).await
    }

    /// A stack on SQS (`CORRAL_BUFFER=sqs`): a fresh queue on moto, which
    /// every process reaches through the stack's proxy, so a scenario breaks
    /// its own path and never the shared moto server.
    pub(super) async fn start_sqs(
        ingresses: usize,
        workers: usize,
        options: QueueOptions,
    ) -> anyhow::Result<Self> {
        let queue = TestQueue::with(options).await;
        let proxy = TcpProxy::start(SQS_SERVER.parse()?).await;
        let visibility = options.visibility_secs;
        let sqs = Some((queue, visibility));
        Self::start_with(ingresses, workers, Some(proxy), sqs, false, None).await
    }

    async fn start_with(
        ingresses: usize,
        workers: usize,
        proxy: Option<TcpProxy>,
        sqs: Option<(TestQueue, u32)>,
        signed: bool,
        brokers: Option<Brokers<'_>>,
    ) -> anyhow::Result<Self> {
        let db = TestDatabase::new().await;
        Self::start_in(db, ingresses, workers, proxy, sqs, signed, brokers).await
    }

    async fn start_in(
        db: TestDatabase,
        ingresses: usize,
        workers: usize,
        proxy: Option<TcpProxy>,
        sqs: Option<(TestQueue, u32)>,
        signed: bool,
        brokers: Option<Brokers<'_>>,
    ) -> anyhow::Result<Self> {
        ensure!(
            workers > 0,
            "a stack needs a worker: it migrates the database"
        );
        let prefix = unique_name("fault");
        let on_sqs = |config: ProcessConfig| match (&sqs, &proxy, brokers) {
            (_, _, Some(brokers)) => config
                .env("CORRAL_AMQP_URL", brokers.url)
                .env("CORRAL_AMQP_QUEUES", brokers.queues.to_string()),
            // The worker's visibility timeout as the queue's own.
            (Some((queue, visibility)), Some(proxy), None) => config
                .sqs(&queue.url, &format!("http://{}", proxy.addr()))
                .env("CORRAL_SQS_VISIBILITY_SECS", visibility.to_string()),
            _ => config,
        };
        // The workers migrate the database on start, which creates the
        // `corral_spool_writer` role the spool's login role joins.
        let mut started = Vec::new();
        for _ in 0..workers {
            let config = on_sqs(tuned(ProcessConfig::worker(&db.url, &prefix)));
            started.push(Process::start_ready(config).await);
        }
        let spool = db.spool_writer().await;
        let mut stack = Self {
            prefix,
            spool,
            db,
            ingresses: Vec::new(),
            workers: started,
            proxy: None,
            sqs: None,
            // Its canaries go to ingresses that scenarios kill and restart.
            http: fresh_connections(),
            canaries: 0,
            signed,
            measure_gaps: false,
        };
        for _ in 0..ingresses {
            let mut config = on_sqs(tuned(ProcessConfig::ingress(&stack.prefix, TOKEN)))
                .env("CORRAL_SPOOL_DATABASE_URL", &stack.spool.url);
            if signed {
                config = config.env("CORRAL_DROPCOWBOY_SIGNING_SECRETS", SIGNING_SECRET);
            }
            if let Some(proxy) = &proxy
                && sqs.is_none()
            {
                config = config.env("CORRAL_AMQP_URL", proxy.amqp_url());
            }
            stack.ingresses.push(Process::start_ready(config).await);
        }
        let buffer = if sqs.is_some() { "SQS" } else { "RabbitMQ" };
        stack.proxy = proxy;
        stack.sqs = sqs.map(|(queue, _)| queue);
        // With a spool, ingress is ready as soon as the spool is, which can
        // be before its broker link is up: the load must start on the
        // broker path, so that what a scenario spools is its fault's doing.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !stack.brokers_connected().await {
            ensure!(
                Instant::now() < deadline,
                "the processes did not connect to {buffer} within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(stack)
    }

    /// Whether every process has its broker link (`corral_broker_connected`).
    pub(super) async fn brokers_connected(&self) -> bool {
        for process in self.ingresses.iter().chain(self.workers.iter()) {
            if process.metrics().await.get("corral_broker_connected") != 1.0 {
                return false;
            }
        }
        true
    }

    /// What every scenario does before its fault: warms up, starts the load
    /// for the whole scenario (a fault lasting `fault`), lets it run for
    /// `p.before`, and measures each process's RSS. Returns the loads and the RSS.
    pub(super) async fn load_until_fault(
        &self,
        p: Profile,
        fault: Duration,
    ) -> anyhow::Result<(Vec<LoadTask>, Vec<(String, f64)>)> {
        let mut loads = self.warm_up().await?;
        loads.extend(self.start_load(p, total(p, fault)));
        tokio::time::sleep(p.before).await;
        Ok((loads, self.rss()))
    }

    /// Serves `MAX_CONNECTIONS` connections on every ingress for a second,
    /// so the RSS measured before the fault is the process at its working size.
    pub(super) async fn warm_up(&self) -> anyhow::Result<Vec<LoadTask>> {
        let mut runs = Vec::new();
        for i in 0..self.ingresses.len() {
            let mut config = self.load_config(i);
            config.load = Load::Closed {
                connections: MAX_CONNECTIONS,
            };
            config.duration = Some(Duration::from_secs(1));
            let run = loadgen::run(config).await?;
            runs.push(tokio::spawn(async move { Ok(run) }));
        }
        Ok(runs)
    }

    /// Starts the load: one open-loop run per ingress, `rate` split evenly,
    /// lasting `duration`.
    pub(super) fn start_load(&self, profile: Profile, duration: Duration) -> Vec<LoadTask> {
        let share = profile.rate / self.ingresses.len() as f64;
        (0..self.ingresses.len())
            .map(|i| {
                let mut config = self.load_config(i);
                config.load = Load::Open {
                    rate: share,
                    max_connections: MAX_CONNECTIONS,
                };
                config.duration = Some(duration);
                config.timeout = Duration::from_secs(15);
                tokio::spawn(loadgen::run(config))
            })
            .collect()
    }

    /// The load generator's settings for ingress `i`: callbacks with 5 %
    /// resends and 5 % out-of-order pairs, or on a signed stack the signed
    /// traffic of [`signed_mix`].
    fn load_config(&self, i: usize) -> loadgen::Config {
        let mut config = loadgen::Config::new(self.ingresses[i].base_url(), TOKEN);
        config.mix = Mix {
            duplicates: 0.05,
            out_of_order: 0.05,
            ..Mix::default()
        };
        if self.signed {
            config.signing_secret = Some(SIGNING_SECRET.into());
            config.mix = signed_mix(config.mix);
        }
        config
    }

    pub(super) fn rss(&self) -> Vec<(String, f64)> {
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

    /// Waits until every process is ready and connected to RabbitMQ (an
    /// ingress with a spool is ready without it) and ingress 0 accepts a
    /// webhook; returns the seconds it took.
    pub(super) async fn wait_recovered(&mut self, since: Instant) -> anyhow::Result<f64> {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let mut ready = true;
            for process in self.ingresses.iter().chain(self.workers.iter()) {
                ready &= process.is_ready().await;
            }
            if ready && self.brokers_connected().await && self.canary().await {
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
    pub(super) async fn canary(&mut self) -> bool {
        self.canaries += 1;
        let body = fixtures::delivery_status(
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

    /// Rows of the load in `delivery_events` right now.
    pub(super) async fn rows(&self) -> anyhow::Result<u64> {
        let client = self.db.client().await;
        let query = format!("SELECT count(*) FROM delivery_events WHERE {LOAD}");
        let rows: i64 = client.query_one(&query, &[]).await?.get(0);
        Ok(rows as u64)
    }

    /// The longest time between two webhooks of the load that were answered
    /// 2xx (their `received_at`: ingress stamps it as it takes one) and
    /// between two rows stored (`stored_at`), in seconds. Every 2xx is a row
    /// (the suite checks that), so the rows tell both.
    pub(super) async fn gaps(&self) -> anyhow::Result<(f64, f64)> {
        let client = self.db.client().await;
        let mut gaps = [0.0; 2];
        for (gap, column) in gaps.iter_mut().zip(["received_at", "stored_at"]) {
            let query = format!(
                "SELECT coalesce(extract(epoch FROM max(t - previous)), 0)::float8 FROM \
                 (SELECT {column} AS t, lag({column}) OVER (ORDER BY {column}) AS previous \
                  FROM delivery_events WHERE {LOAD}) gaps"
            );
            *gap = client.query_one(&query, &[]).await?.get(0);
        }
        Ok((gaps[0], gaps[1]))
    }

    /// A counter or gauge summed over the workers.
    pub(super) async fn worker_metric(&self, series: &str) -> f64 {
        let mut sum = 0.0;
        for worker in &self.workers {
            sum += worker.metrics().await.get(series);
        }
        sum
    }

    /// Webhooks the ingresses answered 503, summed over the causes of
    /// `corral_ingress_publish_failures_total`.
    pub(super) async fn refused(&self) -> u64 {
        let mut refused = 0.0;
        for ingress in &self.ingresses {
            refused += ingress
                .metrics()
                .await
                .0
                .iter()
                .filter(|(series, _)| series.starts_with("corral_ingress_publish_failures_total{"))
                .map(|(_, value)| value)
                .sum::<f64>();
        }
        refused as u64
    }

    /// Webhooks the ingresses answered from the spool, by cause, and those
    /// the spool failed to commit. Every ingress must be running.
    pub(super) async fn spool_counts(&self) -> (BTreeMap<String, u64>, u64) {
        let mut spooled = BTreeMap::new();
        let mut failures = 0.0;
        for ingress in &self.ingresses {
            let metrics = ingress.metrics().await;
            for (series, value) in &metrics.0 {
                if let Some(labels) = series.strip_prefix("corral_ingress_spooled_total{cause=\"")
                    && *value > 0.0
                {
                    let cause = labels.trim_end_matches("\"}").to_owned();
                    *spooled.entry(cause).or_insert(0) += *value as u64;
                }
            }
            failures += metrics.get("corral_ingress_spool_failures_total");
        }
        (spooled, failures as u64)
    }

    /// Waits for the loads, verifies them, and builds the scenario's row.
    pub(super) async fn finish(
        self,
        scenario: &str,
        loads: Vec<LoadTask>,
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
            spooled: BTreeMap::new(),
            spool_failures: 0,
            resent_twice: 0,
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
            count_answers(&mut outcome, &run.report);
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
            outcome.wrong +=
                v.unexpected + v.mismatched + v.stale_latest + v.quarantined + v.unmerged;
            notes.extend(v.examples.iter().take(3).cloned());
        }
        outcome.rows = self.rows().await?;
        if self.measure_gaps {
            let (answered, stored) = self.gaps().await?;
            notes.push(format!(
                "gap: {answered:.1} s without a 2xx answer, {stored:.1} s without a row stored"
            ));
        }
        (outcome.spooled, outcome.spool_failures) = self.spool_counts().await;
        if !outcome.spooled.is_empty() {
            let causes = outcome
                .spooled
                .iter()
                .map(|(cause, n)| format!("{cause} {n}"))
                .collect::<Vec<_>>()
                .join(", ");
            notes.push(format!("spooled by cause: {causes}"));
        }

        let mut dead_lettered = 0;
        if let Some(queue) = &self.sqs {
            dead_lettered = queue.dead_letters().await.len();
            if dead_lettered > 0 {
                notes.push(format!(
                    "{dead_lettered} messages (at least) went to the dead-letter queue"
                ));
            }
        }
        let rss_ok = compare_rss(&mut outcome, &rss_before, &self.rss(), &mut notes);
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
            && dead_lettered == 0
            && rss_ok
            && verifications.iter().all(|v| v.drained);
        outcome.notes = notes;
        self.stop().await;
        Ok(outcome)
    }

    pub(super) async fn stop(mut self) {
        for process in self.ingresses.iter_mut().chain(self.workers.iter_mut()) {
            if process.is_running() {
                process.terminate(Duration::from_secs(40)).await;
            }
        }
        broker::delete_prefix(&self.prefix).await;
    }
}

/// The signed traffic of a signed stack, on top of `callbacks`: every item
/// signed, 5 % of the events retried by the provider (some re-serialised),
/// 10 % of the drops also reported by their callback (with the token),
/// receipts and events corral does not type at the generator's defaults.
pub(super) fn signed_mix(callbacks: Mix) -> Mix {
    Mix {
        signed: 1.0,
        both_channels: 0.1,
        retries: 0.05,
        ..callbacks
    }
}

/// Where moto answers: the stack's proxy forwards there.
const SQS_SERVER: &str = "127.0.0.1:4566";

/// The load's rows: canaries and poison messages are not part of it.
const LOAD: &str = "drop_id NOT LIKE 'canary-%' AND drop_id NOT LIKE 'poison-%'";

/// How long a scenario's load runs: before, the fault, two seconds to
/// recover, after.
fn total(profile: Profile, fault: Duration) -> Duration {
    profile.before + fault + Duration::from_secs(2) + profile.after
}

/// Adds one load's answers to `outcome`: requests, 2xx, 503, slowest answer.
fn count_answers(outcome: &mut Outcome, report: &loadgen::Report) {
    outcome.sent += report.requests + report.warmup_requests;
    outcome.ok += report
        .statuses
        .iter()
        .filter(|(status, _)| (200..300).contains(*status))
        .map(|(_, n)| n)
        .sum::<u64>();
    outcome.unavailable += report.statuses.get(&503).copied().unwrap_or(0);
    outcome.resent_twice += report.sent.resent_confirmed_twice;
    let slowest = report
        .service_time_us
        .as_ref()
        .unwrap_or(&report.latency_us)
        .max;
    outcome.slowest_answer_ms = outcome.slowest_answer_ms.max(slowest as f64 / 1000.0);
}

/// Records each process's RSS before and after; with `outcome.rss_checked`,
/// false (and a note) when one grew by more than 20 %.
fn compare_rss(
    outcome: &mut Outcome,
    before: &[(String, f64)],
    after: &[(String, f64)],
    notes: &mut Vec<String>,
) -> bool {
    let mut rss_ok = true;
    for ((name, before), (_, after)) in before.iter().zip(after.iter()) {
        outcome
            .rss_mib
            .push((name.clone(), round1(*before), round1(*after)));
        if outcome.rss_checked && *after > before * 1.2 {
            rss_ok = false;
            notes.push(format!(
                "{name} RSS grew from {before:.1} MiB to {after:.1} MiB"
            ));
        }
    }
    rss_ok
}

/// Settings for quick, observable recovery: the defaults but a shorter
/// reconnect cap and heartbeat, so a scenario does not wait on 5 s backoffs.
pub(super) fn tuned(config: ProcessConfig) -> ProcessConfig {
    config
        .env("CORRAL_AMQP_RECONNECT_MAX_MS", "1000")
        .env("CORRAL_AMQP_HEARTBEAT_SECS", "5")
        .env("CORRAL_DB_RETRY_MAX_MS", "1000")
        .env("CORRAL_PUBLISH_TIMEOUT_MS", "3000")
        .env("CORRAL_LOG", "warn")
}

pub(super) fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}
