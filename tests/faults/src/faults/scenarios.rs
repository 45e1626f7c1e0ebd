//! The scenarios, one function each, and running one by name.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure};

use corral_testkit::database;

use super::{outcome::*, services::*, stack::*};

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
    let mut stack = Stack::start(1, 1, false).await?;
    let (loads, rss) = stack.load_until_fault(p, p.outage).await?;
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
