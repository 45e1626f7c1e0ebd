//! `postgres-failover`: the primary crashes under load and its synchronous
//! standby is promoted. The scenario runs its own pair
//! ([`ReplicatedPostgres`], on free ports), never the shared server, and the
//! processes reach it by one multi-host URL with
//! `target_session_attrs=read-write`, as on VMs or with Patroni.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use corral_testkit::replicated::{ReplicatedPostgres, longest_gap};

use super::{outcome::*, stack::*};

/// The fault's share of the load's duration: the crash, noticing it, the
/// promotion and reconnecting.
const FAULT: Duration = Duration::from_secs(5);

/// The worker's transient database errors (a write on the dead primary).
const DB_TRANSIENT: &str = r#"corral_worker_db_errors_total{kind="transient"}"#;

pub(super) async fn postgres_failover(p: Profile) -> anyhow::Result<Outcome> {
    let cluster = ReplicatedPostgres::start().await;
    let mut stack = Stack::start_on_server(cluster.server(), 1, 1).await?;
    let (loads, rss) = stack.load_until_fault(p, FAULT).await?;
    let client = stack.db.client().await;
    let killed_at = server_clock(&client).await?;
    let errors = stack.worker_metric(DB_TRANSIENT).await;
    cluster.kill_primary().await;
    // Promote once the worker has met the dead primary (a failed write),
    // as an operator's failover would follow the crash.
    let deadline = Instant::now() + Duration::from_secs(30);
    while stack.worker_metric(DB_TRANSIENT).await <= errors {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the worker did not notice the crash"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let since = Instant::now();
    cluster.promote_standby().await;
    let promoted = since.elapsed();
    let recovered = stack.wait_recovered(since).await?;
    let client = stack.db.client().await;
    let promoted_at = server_clock(&client).await?;
    let gap = wait_row_after(&client, killed_at, promoted_at).await?;
    let notes = vec![
        "primary killed (pg_ctl stop -m immediate) under load, standby promoted \
         (pg_ctl promote); one URL names both"
            .to_owned(),
        format!(
            "gap: {gap:.1} s without a row stored (crash to the first batch on the new \
             primary; the promotion itself took {:.1} s)",
            promoted.as_secs_f64()
        ),
    ];
    stack
        .finish("postgres-failover", loads, recovered, rss, false, notes)
        .await
}

/// The server's clock, in seconds since the epoch (what `stored_at` is
/// compared with).
async fn server_clock(client: &tokio_postgres::Client) -> anyhow::Result<f64> {
    let row = client
        .query_one("SELECT EXTRACT(EPOCH FROM clock_timestamp())::float8", &[])
        .await
        .context("reading the server's clock")?;
    Ok(row.get(0))
}

/// Waits until a row is stored after `promoted_at` on the new primary, and
/// returns the longest time since `killed_at` without one.
async fn wait_row_after(
    client: &tokio_postgres::Client,
    killed_at: f64,
    promoted_at: f64,
) -> anyhow::Result<f64> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let after: i64 = client
            .query_one(
                "SELECT count(*) FROM delivery_events WHERE stored_at > to_timestamp($1)",
                &[&promoted_at],
            )
            .await?
            .get(0);
        if after > 0 {
            return Ok(longest_gap(client, killed_at - 1.0).await);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "no row stored on the new primary within 30 s of the promotion"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
