//! The data lifecycle: `delivery_events` is partitioned by UTC day of
//! `attempt_date`, the provider's time (migration V7), and one worker at a
//! time (an advisory lock) keeps its partitions: a week of days made ahead,
//! and, with `CORRAL_RETENTION`, the days past it dropped whole
//! ([`partitions`]) and every other growing table pruned by the same
//! horizon in small batches ([`prune`]).
//!
//! Partitioning is PostgreSQL's own (declarative, by range) kept by this
//! small task rather than pg_partman: the extension is not in every
//! PostgreSQL corral runs on (Debian's server packages it apart, managed
//! services and operator images vary), and the task is tested here against
//! the same PostgreSQL as everything else.
//!
//! An event whose day has no partition (older than the oldest day kept, or
//! more than [`AHEAD`] in the future) is refused by PostgreSQL, and the
//! batch's split isolates it into `quarantined_webhooks` like any other
//! refused webhook, counted in `corral_worker_events_unpartitioned_total`:
//! never lost, and `quarantine reprocess` stores it once its day exists.

pub mod partitions;
pub mod prepare;
pub mod prune;

use std::time::Duration;

use chrono::{DateTime, Utc};
use corral_runtime::telemetry::{labels::PrunedTable, metrics};
use tokio_postgres::{Client, error::SqlState};
use tokio_util::sync::CancellationToken;

use crate::{
    db::Target,
    periodic::{self, Next, Task},
};

/// Arbitrary constant naming the advisory lock the maintenance runs under,
/// so one worker at a time does it (the others skip the round).
pub const LOCK: i64 = 0x636f_7272_616c_4c43; // "corralLC"

/// How far ahead of the clock partitions exist: provider times a little
/// ahead of ours, and a maintenance failing for days, both still land in one.
pub const AHEAD: Duration = Duration::from_secs(7 * 24 * 3600);

/// How often the maintenance runs; creating and dropping are idempotent, so
/// a round after a failed one or a restart just does what is left.
const PERIOD: Duration = Duration::from_secs(15 * 60);

/// The data lifecycle's settings.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct LifecycleSettings {
    /// How long data is kept, by each event's provider time (e.g. `400d`):
    /// older days of delivery_events are dropped with their result-event
    /// outbox rows, and deliveries, provider_events and quarantined_webhooks
    /// rows past it are deleted. Unset: everything is kept.
    #[arg(long, env = "CORRAL_RETENTION", value_parser = parse_retention, global = true)]
    pub retention: Option<Duration>,

    /// How long the hourly summary (delivery_summary) is kept, by its hour
    /// (e.g. `1000d`). Unset: kept, whatever CORRAL_RETENTION.
    #[arg(long, env = "CORRAL_SUMMARY_RETENTION", value_parser = parse_retention, global = true)]
    pub summary_retention: Option<Duration>,
}

/// A retention: a duration (`400d`, `2years`) of at least a day, the size
/// of a partition (a shorter one would drop the day being written).
pub fn parse_retention(text: &str) -> Result<Duration, String> {
    let retention = humantime::parse_duration(text).map_err(|err| err.to_string())?;
    if retention < Duration::from_secs(24 * 3600) {
        return Err(format!(
            "{text} is shorter than a day, the smallest retention"
        ));
    }
    Ok(retention)
}

/// What one maintenance round did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Maintained {
    /// Day partitions created.
    pub created: i32,
    /// Partitions dropped (their names).
    pub dropped: Vec<String>,
    /// Rows deleted, by table.
    pub pruned: Vec<(PrunedTable, u64)>,
}

/// One maintenance round as of `now` (the clock is the caller's, so a test
/// can run many days in a moment): partitions made up to [`AHEAD`], then,
/// with a retention, everything older than `now - retention` dropped or
/// deleted. `None` when another session holds [`LOCK`].
pub async fn maintain(
    client: &mut Client,
    now: DateTime<Utc>,
    settings: &LifecycleSettings,
) -> Result<Option<Maintained>, tokio_postgres::Error> {
    let locked: bool = client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&LOCK])
        .await?
        .get(0);
    if !locked {
        return Ok(None);
    }
    let done = round(client, now, settings).await;
    // A session lock: released here whatever happened (the session may be
    // a long-lived one), and with the session if that is what failed.
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&LOCK])
        .await;
    let done = done?;
    unlocked?;
    Ok(Some(done))
}

async fn round(
    client: &mut Client,
    now: DateTime<Utc>,
    settings: &LifecycleSettings,
) -> Result<Maintained, tokio_postgres::Error> {
    let horizon = settings.retention.map(|keep| now - keep);
    let mut done = Maintained {
        created: partitions::add(client, now, horizon).await?,
        ..Maintained::default()
    };
    if let Some(horizon) = horizon {
        let (dropped, outbox) = partitions::drop_behind(client, horizon).await?;
        done.dropped = dropped;
        done.pruned
            .push((PrunedTable::DeliveryResultsOutbox, outbox));
        for table in prune::BY_RETENTION {
            done.pruned
                .push((table, prune::older_than(client, table, horizon).await?));
        }
    }
    if let Some(keep) = settings.summary_retention {
        let table = PrunedTable::DeliverySummary;
        done.pruned
            .push((table, prune::older_than(client, table, now - keep).await?));
    }
    Ok(done)
}

impl Maintained {
    /// Adds the round to the metrics and the log.
    fn record(&self) {
        metrics::worker_partitions_dropped(self.dropped.len() as u64);
        for (table, rows) in &self.pruned {
            metrics::worker_pruned_rows(*table, *rows);
        }
        if self.created > 0 || !self.dropped.is_empty() || self.pruned.iter().any(|p| p.1 > 0) {
            tracing::info!(
                created = self.created,
                dropped = ?self.dropped,
                pruned = ?self.pruned,
                "data lifecycle: partitions kept, old data removed"
            );
        }
    }
}

/// Whether PostgreSQL refused a row because no partition holds its time.
pub fn is_unpartitioned(err: &tokio_postgres::Error) -> bool {
    err.code() == Some(&SqlState::CHECK_VIOLATION)
        && err
            .as_db_error()
            .is_some_and(|db| db.message().starts_with("no partition of relation"))
}

/// Runs the maintenance every [`PERIOD`] until `shutdown`, on a connection
/// of its own (outside the pool: `DETACH … CONCURRENTLY` and the batches
/// may outlast the pool's statement deadline).
pub async fn maintain_every(
    target: Target,
    settings: LifecycleSettings,
    shutdown: CancellationToken,
) {
    let task = Task::new(
        "data lifecycle",
        PERIOD,
        "could not keep delivery_events' partitions or prune old data; retrying",
    )
    .with_backoff(Duration::from_secs(60));
    let (target, settings) = (&target, &settings);
    task.run(&shutdown, move || async move {
        let round = async {
            let mut client = target.connect().await?;
            let done = maintain(&mut client, Utc::now(), settings).await?;
            // Every worker, the one that kept them or not, shows the days.
            let ahead = partitions::days_ahead(&client, Utc::now()).await?;
            anyhow::Ok((done, ahead))
        };
        let (done, ahead) = periodic::within(PERIOD, round).await?;
        metrics::worker_event_days_ahead(ahead as f64);
        match done {
            Some(done) => done.record(),
            None => tracing::debug!("another worker is keeping the partitions"),
        }
        Ok::<_, String>(Next::Wait)
    })
    .await;
}
