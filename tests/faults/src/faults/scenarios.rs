//! The scenarios, one function each, and running one by name.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure};

use corral_testkit::database;

use super::{cluster, failover, outcome::*, services::*, sqs, stack::*};

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
    "broker-and-postgres-down",
    "postgres-down-broker-up",
    "spool-table-locked",
    "broker-stopped-signed",
    "sqs-endpoint-unreachable",
    "sqs-slow-endpoint",
    "sqs-worker-killed",
    "cluster-leader-killed",
    "cluster-follower-killed",
    "cluster-majority-stopped",
    "cluster-node-partitioned",
    "cluster-shard-leader-killed",
    "postgres-failover",
];

/// Scenarios only the full profile runs: each starts a cluster of its own,
/// which takes a while; the CI profile proves the cluster with the leader's
/// death alone.
const FULL_ONLY: &[&str] = &[
    "cluster-follower-killed",
    "cluster-majority-stopped",
    "cluster-node-partitioned",
    "cluster-shard-leader-killed",
];

/// Scenarios that break only what they start themselves (their own
/// processes, database, proxy, SQS queue, cluster or PostgreSQL pair) and
/// never the shared broker or database: they may run beside each other.
const CONTAINED: &[&str] = &[
    "worker-sigkill",
    "worker-sigterm",
    "ingress-sigterm",
    "postgres-backends-terminated",
    "broker-path-blackholed",
    "poison-messages",
    "two-of-each-one-killed",
    "spool-table-locked",
    "sqs-endpoint-unreachable",
    "sqs-slow-endpoint",
    "sqs-worker-killed",
    "cluster-leader-killed",
    "cluster-follower-killed",
    "cluster-majority-stopped",
    "cluster-node-partitioned",
    "cluster-shard-leader-killed",
    "postgres-failover",
];

/// Whether scenario `name` may run beside other contained ones.
pub fn is_contained(name: &str) -> bool {
    CONTAINED.contains(&name)
}

/// Whether scenario `name` starts services of its own (a RabbitMQ cluster,
/// a PostgreSQL pair), which makes it the longest.
pub fn starts_services(name: &str) -> bool {
    name.starts_with("cluster-") || name == "postgres-failover"
}

/// The scenarios `profile` runs, in order.
pub fn selected(profile: Profile) -> Vec<&'static str> {
    SCENARIOS
        .iter()
        .copied()
        .filter(|name| profile.name == Profile::FULL.name || !FULL_ONLY.contains(name))
        .collect()
}

/// The share of requests that must be answered 2xx while only the broker is
/// away: the spool takes what RabbitMQ cannot.
pub(super) const SPOOLED_SHARE: f64 = 0.999;

/// How long the scenarios that stop PostgreSQL keep it stopped.
const POSTGRES_DOWN: Duration = Duration::from_secs(5);

/// How long `spool-table-locked` holds its lock.
const TABLE_LOCKED: Duration = Duration::from_secs(4);

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
        "broker-and-postgres-down" => broker_and_postgres_down(profile).await,
        "postgres-down-broker-up" => postgres_down_broker_up(profile).await,
        "spool-table-locked" => spool_table_locked(profile).await,
        "broker-stopped-signed" => broker_stopped_signed(profile).await,
        "sqs-endpoint-unreachable" => sqs::endpoint_unreachable(profile).await,
        "sqs-slow-endpoint" => sqs::slow_endpoint(profile).await,
        "sqs-worker-killed" => sqs::worker_killed(profile).await,
        "cluster-leader-killed" => cluster::leader_killed(profile).await,
        "cluster-follower-killed" => cluster::follower_killed(profile).await,
        "cluster-majority-stopped" => cluster::majority_stopped(profile).await,
        "cluster-node-partitioned" => cluster::node_partitioned(profile).await,
        "cluster-shard-leader-killed" => cluster::shard_leader_killed(profile).await,
        "postgres-failover" => failover::postgres_failover(profile).await,
        other => bail!(
            "unknown scenario {other:?}; known: {}",
            SCENARIOS.join(", ")
        ),
    }
}

pub(super) async fn broker_connections_closed(p: Profile) -> anyhow::Result<Outcome> {
    let mut stack = Stack::start(1, 1, false).await?;
    let (loads, rss) = stack.load_until_fault(p, Duration::from_secs(6)).await?;
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

pub(super) async fn broker_stopped(p: Profile) -> anyhow::Result<Outcome> {
    broker_outage(p, Stack::start(1, 1, false).await?, "broker-stopped").await
}

/// `broker-stopped` with the load on the signed route: Drop Cowboy's signed
/// webhooks, its retries, and some drops on both channels.
pub(super) async fn broker_stopped_signed(p: Profile) -> anyhow::Result<Outcome> {
    broker_outage(p, Stack::start_signed(1, 1).await?, "broker-stopped-signed").await
}

/// The broker stopped for `p.outage` under `stack`'s load: the spool answers,
/// rows keep landing, nothing is lost.
async fn broker_outage(p: Profile, mut stack: Stack, name: &str) -> anyhow::Result<Outcome> {
    let mut stopped = Stopped::default();
    let (loads, rss) = stack.load_until_fault(p, p.outage).await?;
    stopped.stop_broker()?;
    let landing = Landing::watch(&stack, p.outage).await?;
    // Recovery counts from the restart command: the broker's own start-up
    // (recovering the quorum queues) is part of what the services wait out.
    let since = Instant::now();
    stopped.start_broker()?;
    let recovered = stack.wait_recovered(since).await?;
    let mut outcome = stack
        .finish(
            name,
            loads,
            recovered,
            rss,
            true,
            vec![
                format!("rabbitmqctl stop_app for {:?}", p.outage),
                landing.note(),
            ],
        )
        .await?;
    require_answered(&mut outcome, SPOOLED_SHARE);
    landing.require(&mut outcome);
    Ok(outcome)
}

/// Rows landing while the broker is away: counted twice during the outage,
/// after the webhooks queued before it have had time to land, so whatever
/// lands in between came through the spool.
pub(super) struct Landing {
    between: Duration,
    rows: (u64, u64),
    drained: (f64, f64),
}

impl Landing {
    /// Sleeps out `outage` (which began just now), counting on the way.
    pub(super) async fn watch(stack: &Stack, outage: Duration) -> anyhow::Result<Self> {
        let ends = Instant::now() + outage;
        tokio::time::sleep(outage / 5).await;
        let early = Instant::now();
        let rows_early = stack.rows().await?;
        let drained_early = stack.worker_metric(SPOOL_DRAINED).await;
        // The second count is the outage's last moment, its own time included.
        tokio::time::sleep_until((ends - Duration::from_millis(300)).into()).await;
        let rows_late = stack.rows().await?;
        let drained_late = stack.worker_metric(SPOOL_DRAINED).await;
        let between = early.elapsed();
        tokio::time::sleep_until(ends.into()).await;
        Ok(Self {
            between,
            rows: (rows_early, rows_late),
            drained: (drained_early, drained_late),
        })
    }

    pub(super) fn note(&self) -> String {
        format!(
            "during the outage, over {:.1} s: delivery_events {} → {} rows, {} webhooks drained from the spool",
            self.between.as_secs_f64(),
            self.rows.0,
            self.rows.1,
            self.drained.1 - self.drained.0,
        )
    }

    /// Fails `outcome` unless rows landed from the spool during the outage.
    pub(super) fn require(&self, outcome: &mut Outcome) {
        if self.rows.1 <= self.rows.0 || self.drained.1 <= self.drained.0 {
            outcome.fail("no rows landed from the spool during the outage");
        }
    }
}

pub(super) const SPOOL_DRAINED: &str = "corral_worker_spool_drained_total";

/// Fails `outcome` if fewer than `share` of its requests were answered 2xx.
pub(super) fn require_answered(outcome: &mut Outcome, share: f64) {
    if outcome.ok_share() < share {
        outcome.fail(format!(
            "only {} of {} requests answered 2xx ({:.2} %; {} got 503, {} other): at least {:.1} % must be",
            outcome.ok,
            outcome.sent,
            outcome.ok_share() * 100.0,
            outcome.unavailable,
            outcome.other,
            share * 100.0,
        ));
    }
}

pub(super) async fn worker_killed(p: Profile, graceful: bool) -> anyhow::Result<Outcome> {
    let mut stack = Stack::start(1, 1, false).await?;
    let (loads, rss) = stack.load_until_fault(p, Duration::from_secs(2)).await?;
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

pub(super) async fn ingress_sigterm(p: Profile) -> anyhow::Result<Outcome> {
    let mut stack = Stack::start(1, 1, false).await?;
    let (loads, rss) = stack.load_until_fault(p, Duration::from_secs(2)).await?;
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

pub(super) async fn postgres_restarted(p: Profile) -> anyhow::Result<Outcome> {
    let mut stack = Stack::start(1, 1, false).await?;
    let (loads, rss) = stack.load_until_fault(p, Duration::from_secs(5)).await?;
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

pub(super) async fn postgres_backends_terminated(p: Profile) -> anyhow::Result<Outcome> {
    let mut stack = Stack::start(1, 1, false).await?;
    let (loads, rss) = stack.load_until_fault(p, Duration::from_secs(4)).await?;
    let admin = database::connect(database::SERVER_URL).await;
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

pub(super) async fn broker_path_blackholed(p: Profile) -> anyhow::Result<Outcome> {
    let mut stack = Stack::start(1, 1, true).await?;
    let (loads, rss) = stack.load_until_fault(p, p.outage).await?;
    let proxy = stack.proxy.as_ref().expect("proxied stack");
    proxy.blackhole();
    let landing = Landing::watch(&stack, p.outage).await?;
    let proxy = stack.proxy.as_ref().expect("proxied stack");
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
    let mut outcome = stack
        .finish(
            "broker-path-blackholed",
            loads,
            recovered,
            rss,
            true,
            vec![note, landing.note()],
        )
        .await?;
    require_answered(&mut outcome, SPOOLED_SHARE);
    landing.require(&mut outcome);
    Ok(outcome)
}

/// Valid JSON objects the worker cannot store, posted in the middle of normal
/// traffic: each must end in `quarantined_webhooks`, byte for byte, and the
/// traffic around them must be stored as usual.
pub(super) async fn poison_messages(p: Profile) -> anyhow::Result<Outcome> {
    let mut stack = Stack::start(1, 1, false).await?;
    let (loads, rss) = stack.load_until_fault(p, Duration::from_secs(2)).await?;
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

pub(super) async fn two_of_each_one_killed(p: Profile) -> anyhow::Result<Outcome> {
    let mut stack = Stack::start(2, 2, false).await?;
    let (loads, rss) = stack.load_until_fault(p, Duration::from_secs(3)).await?;
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

/// Both durable paths gone: every webhook gets 503 (none is acknowledged,
/// none hangs), and once both are back the services recover by themselves.
pub(super) async fn broker_and_postgres_down(p: Profile) -> anyhow::Result<Outcome> {
    let mut stack = Stack::start(1, 1, false).await?;
    let mut stopped = Stopped::default();
    let spooling = Duration::from_secs(1);
    let (loads, rss) = stack.load_until_fault(p, spooling + POSTGRES_DOWN).await?;
    stopped.stop_broker()?;
    // The spool takes over first, then it goes too.
    tokio::time::sleep(spooling).await;
    stopped.stop_postgres()?;
    tokio::time::sleep(POSTGRES_DOWN).await;
    let since = Instant::now();
    stopped.start_postgres()?;
    stopped.start_broker()?;
    let recovered = stack.wait_recovered(since).await?;
    let mut outcome = stack
        .finish(
            "broker-and-postgres-down",
            loads,
            recovered,
            rss,
            true,
            vec![format!(
                "rabbitmqctl stop_app, {spooling:?} later pg_ctlcluster stop for {POSTGRES_DOWN:?}, then both started"
            )],
        )
        .await?;
    if outcome.unavailable == 0 {
        outcome.fail("no webhook got 503 while neither path could take it");
    }
    Ok(outcome)
}

/// PostgreSQL away, RabbitMQ there: ingress goes on answering through the
/// queue (the spool is not needed), and the rows land once PostgreSQL is back.
pub(super) async fn postgres_down_broker_up(p: Profile) -> anyhow::Result<Outcome> {
    let mut stack = Stack::start(1, 1, false).await?;
    let mut stopped = Stopped::default();
    let (loads, rss) = stack.load_until_fault(p, POSTGRES_DOWN).await?;
    stopped.stop_postgres()?;
    tokio::time::sleep(POSTGRES_DOWN).await;
    let since = Instant::now();
    stopped.start_postgres()?;
    let recovered = stack.wait_recovered(since).await?;
    let mut outcome = stack
        .finish(
            "postgres-down-broker-up",
            loads,
            recovered,
            rss,
            false,
            vec![format!("pg_ctlcluster stop for {POSTGRES_DOWN:?}")],
        )
        .await?;
    require_answered(&mut outcome, SPOOLED_SHARE);
    // Only a publish slower than CORRAL_SPOOL_AFTER_MS tries the spool here.
    let allowed = outcome.sent / 1000;
    if outcome.spool_failures > allowed {
        outcome.fail(format!(
            "{} spool failures with the broker up (at most {allowed} allowed)",
            outcome.spool_failures
        ));
    }
    Ok(outcome)
}

/// The spool's table locked by someone else during a broker outage: the
/// requests that need it get 503 by their deadline instead of hanging, and
/// the spool takes webhooks again as soon as the lock is gone.
pub(super) async fn spool_table_locked(p: Profile) -> anyhow::Result<Outcome> {
    let mut stack = Stack::start(1, 1, false).await?;
    let mut stopped = Stopped::default();
    let spooling = Duration::from_secs(2);
    let (loads, rss) = stack
        .load_until_fault(p, spooling * 2 + TABLE_LOCKED)
        .await?;
    stopped.stop_broker()?;
    tokio::time::sleep(spooling).await;
    let (locker, connection) =
        tokio_postgres::connect(&stack.db.url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    // A deadline on the lock's own wait: it queues behind the inserts and
    // drains in progress, and must not wait for ever if one never ends.
    locker
        .batch_execute(
            "SET lock_timeout = '5s'; BEGIN; LOCK TABLE spooled_webhooks IN ACCESS EXCLUSIVE MODE",
        )
        .await?;
    let counts = async || {
        let (spooled, failures) = stack.spool_counts().await;
        (
            failures,
            spooled.values().sum::<u64>(),
            stack.refused().await,
        )
    };
    let before = counts().await;
    tokio::time::sleep(TABLE_LOCKED).await;
    let locked = counts().await;
    locker.batch_execute("ROLLBACK").await?;
    drop(locker);
    // With the broker still away, the spool alone must take webhooks again.
    let unlocked = Instant::now();
    let deadline = unlocked + Duration::from_secs(15);
    while !stack.canary().await {
        ensure!(
            Instant::now() < deadline,
            "the spool took no webhook within 15 s of the unlock"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let spool_back = unlocked.elapsed().as_secs_f64();
    tokio::time::sleep(spooling.saturating_sub(unlocked.elapsed())).await;
    let since = Instant::now();
    stopped.start_broker()?;
    let recovered = stack.wait_recovered(since).await?;
    let mut outcome = stack
        .finish(
            "spool-table-locked",
            loads,
            recovered,
            rss,
            false,
            vec![
                format!(
                    "rabbitmqctl stop_app; {spooling:?} later LOCK TABLE spooled_webhooks IN ACCESS EXCLUSIVE MODE for {TABLE_LOCKED:?}"
                ),
                format!(
                    "while locked: {} answered 503 (corral_ingress_publish_failures_total), {} counted as spool failures, {} spooled",
                    locked.2 - before.2,
                    locked.0 - before.0,
                    locked.1 - before.1,
                ),
                format!("the spool took a webhook again {spool_back:.1} s after the unlock"),
            ],
        )
        .await?;
    if locked.2 == before.2 {
        outcome.fail("no request failed on the locked spool: the lock did not bite");
    }
    Ok(outcome)
}
