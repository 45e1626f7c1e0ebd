//! Draining the PostgreSQL spool: webhooks ingress committed into
//! `spooled_webhooks` because RabbitMQ could not take them.
//!
//! Each round, in one transaction: claim up to `CORRAL_BATCH_MAX` of the
//! oldest rows no other worker holds (`DELETE … FOR UPDATE SKIP LOCKED …
//! RETURNING`), store them exactly as queued webhooks are stored (typed,
//! deduplicated by fingerprint, or quarantined), and commit. The rows leave
//! the spool in the transaction that stores them, so a crash or a failed
//! write gives them back whole, and several workers drain side by side
//! without taking the same row twice. A webhook that was spooled and also
//! published (its confirm came late) is the same fingerprint either way:
//! whichever copy commits second counts as a duplicate.
//!
//! This runs beside the queue consumer and needs no broker: while RabbitMQ is
//! down, spooled webhooks still land.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use corral_contract::envelope::{Envelope, Kind};
use corral_runtime::{
    admin::Health,
    telemetry::{
        labels::{DbErrorKind, MessageOutcome},
        metrics,
    },
};
use deadpool_postgres::Pool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{
    config::WorkerConfig,
    db,
    periodic::{self, Next, Task},
    store::{self, BatchOutcome, Incoming},
};

const CLAIM: &str = include_str!("claim.sql");
/// The spool's depth and oldest age. Counting is exact while the table is
/// small (the usual case: empty, or a short outage); past [`EXACT_UP_TO`]
/// rows it is PostgreSQL's estimate, since every worker measures every poll
/// and counting tens of millions of rows each time would load the database
/// exactly when it is busiest. The oldest row comes from the index.
const MEASURE: &str = "SELECT CASE WHEN c.reltuples > $1 THEN c.reltuples::bigint \
                            ELSE (SELECT count(*) FROM spooled_webhooks) END, \
                       COALESCE(EXTRACT(EPOCH FROM now() - \
                            (SELECT min(spooled_at) FROM spooled_webhooks))::float8, 0) \
                       FROM pg_class c WHERE c.oid = 'spooled_webhooks'::regclass";

/// Above this many rows (as PostgreSQL estimates them), the depth is the estimate.
const EXACT_UP_TO: f32 = 100_000.0;

/// The spool's settings.
#[derive(Debug, Clone, clap::Args)]
pub struct SpoolSettings {
    /// How often an empty PostgreSQL spool (`spooled_webhooks`, where ingress
    /// keeps webhooks RabbitMQ could not take) is looked at again, in
    /// milliseconds; a non-empty one is drained without pause. Also how often
    /// its depth and oldest age are measured (at least once a second).
    #[arg(long, env = "CORRAL_SPOOL_POLL_MS", default_value_t = 1_000,
          value_parser = clap::value_parser!(u64).range(10..), global = true)]
    pub spool_poll_ms: u64,
}

/// How the worker drains the spool.
#[derive(Debug, Clone)]
pub struct DrainSettings {
    /// Webhooks per transaction at most.
    pub batch_max: usize,
    /// Whether stored webhooks get a result-event outbox row.
    pub result_events: bool,
    /// Poked after a commit that stored events, when result events are on.
    pub results: crate::results::Wake,
    /// How often an empty spool is looked at again.
    pub poll: Duration,
    /// Deadline of one round.
    pub timeout: Duration,
    /// Cap of the backoff after a failed round.
    pub retry_max: Duration,
}

impl DrainSettings {
    /// The drain of `config`; `results` is poked after a commit that stored
    /// events.
    pub fn new(config: &WorkerConfig, results: crate::results::Wake) -> Self {
        Self {
            batch_max: config.batch_max as usize,
            result_events: config.results.result_events,
            results,
            poll: Duration::from_millis(config.spool.spool_poll_ms),
            timeout: config.db.timeout() * 3,
            retry_max: config.db.retry_max(),
        }
    }
}

/// Drains the spool until `shutdown` (finishing the round in progress), and
/// keeps `corral_worker_spool_depth` / `_oldest_seconds` current.
pub async fn drain(
    settings: DrainSettings,
    pool: Pool,
    health: Health,
    shutdown: CancellationToken,
) {
    let (settings, pool, health) = (&settings, &pool, &health);
    let draining = Task::new(
        "spool drain",
        settings.poll,
        "could not drain the spool; retrying (its rows stay there)",
    )
    .with_backoff(settings.retry_max);
    let taking = draining.run(&shutdown, move || async move {
        let taken = periodic::within(settings.timeout, round(settings, pool)).await;
        health.set_database(taken.is_ok());
        if taken.is_err() {
            metrics::worker_db_error(DbErrorKind::Transient);
        }
        // A full round: more are probably waiting.
        taken.map(|taken| {
            if taken >= settings.batch_max {
                Next::Again
            } else {
                Next::Wait
            }
        })
    });
    let measuring = Task::measure("spool depth", settings.poll.max(Duration::from_secs(1)));
    let measuring = measuring.run(&shutdown, move || async move {
        let (depth, oldest) = db::backlog(pool, MEASURE, EXACT_UP_TO, settings.timeout).await?;
        metrics::worker_spool(depth, oldest);
        Ok::<_, String>(Next::Wait)
    });
    tokio::join!(taking, measuring);
}

/// Why a round did not commit.
#[derive(Debug, thiserror::Error)]
enum RoundError {
    /// No pooled connection.
    #[error("no database connection: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    /// A statement or the COMMIT failed.
    #[error("the spool round failed: {0}")]
    Database(#[from] tokio_postgres::Error),
}

/// One transaction: claim, store, commit. Returns how many rows it took.
async fn round(settings: &DrainSettings, pool: &Pool) -> Result<usize, RoundError> {
    let mut client = pool.get().await?;
    let mut tx = client.transaction().await?;
    let limit = i64::try_from(settings.batch_max).unwrap_or(i64::MAX);
    let rows = tx.query(CLAIM, &[&limit]).await?;
    if rows.is_empty() {
        return Ok(0);
    }
    let started = Instant::now();
    let incoming: Vec<Incoming> = rows
        .iter()
        .map(|row| {
            let kind: &str = row.get("kind");
            let message_id: Uuid = row.get("message_id");
            let received_at: DateTime<Utc> = row.get("received_at");
            Incoming {
                body: row.get("body"),
                // The table's CHECK allows only the kinds there are; were
                // another there, its name would be a routing key of no kind,
                // which the store quarantines.
                routing_key: Kind::from_name(kind)
                    .map_or(kind, |kind| kind.routing_key())
                    .to_owned(),
                envelope: Envelope {
                    message_id: Some(message_id),
                    received_at: Some(received_at),
                },
            }
        })
        .collect();
    let prepared = store::prepare_all(&incoming).with_result_events(settings.result_events);
    let outcome = store::write_within(&mut tx, &prepared).await?;
    // The claim deleted rows, so this COMMIT waits for synchronous standbys
    // like any other write.
    db::commit(tx, true).await?;
    if outcome.stored > 0 {
        settings.results.poke();
    }
    record(&incoming, &outcome, started.elapsed());
    Ok(incoming.len())
}

fn record(incoming: &[Incoming], outcome: &BatchOutcome, write: Duration) {
    let committed_at = Utc::now();
    metrics::worker_spool_drained(incoming.len());
    metrics::worker_batch(incoming.len(), write);
    metrics::worker_messages(MessageOutcome::Stored, outcome.stored);
    metrics::worker_messages(MessageOutcome::Duplicate, outcome.duplicate);
    metrics::worker_messages(MessageOutcome::Quarantined, outcome.quarantined);
    outcome.deliveries.record();
    for received_at in incoming.iter().filter_map(|m| m.envelope.received_at) {
        let seconds = (committed_at - received_at).num_microseconds().unwrap_or(0) as f64 / 1e6;
        metrics::worker_end_to_end(seconds.max(0.0));
    }
    tracing::debug!(
        webhooks = incoming.len(),
        ?outcome,
        "spooled webhooks stored"
    );
}
