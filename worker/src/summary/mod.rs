//! The hourly summary of outcomes and spend: per hour of `attempt_date`
//! (UTC), kind, status and reason, the events and the exact sums of
//! `product_cost`, `compliance_fee` and `tts_fee` (migration V4).
//!
//! Each batch appends its share for its newly stored events to
//! `delivery_summary_changes`, in the statement that stores them (appends
//! only, so concurrent writers never wait on each other's rows). Every
//! `CORRAL_SUMMARY_ROLLUP_MS` one worker folds those rows into
//! `delivery_summary` ([`roll_up`]); the exact totals at any moment are the
//! two tables added together, which is what [`report`] reads.
//!
//! The roll-up moves rows (DELETE … RETURNING, then upsert, in one
//! transaction) rather than reading events past a watermark on a timestamp
//! such as `delivery_events.stored_at`: that is its transaction's start time
//! (`now()`), and transactions commit out of order, so a row stamped before
//! the watermark can become visible after the roll-up passed it, and would
//! never be counted. A DELETE sees exactly the committed rows, and a deleted
//! row cannot be moved again.

pub mod report;

use std::time::Duration;

use deadpool_postgres::Pool;
use tokio_util::sync::CancellationToken;

use crate::periodic::{self, Next, Task};

const ROLL_UP: &str = include_str!("roll_up.sql");

/// Arbitrary constant naming the advisory lock a roll-up runs under, so one
/// worker at a time does it (the others skip the round). Not needed for
/// exactness (a change row is deleted once whoever deletes it), but two
/// roll-ups at once would only wait on each other's rows.
pub const ROLL_UP_LOCK: i64 = 0x636f_7272_616c_5355; // "corralSU"

/// Change rows one roll-up transaction moves at most.
pub const ROLL_UP_CHUNK: i64 = 20_000;

/// The summary's settings.
#[derive(Debug, Clone, clap::Args)]
pub struct SummarySettings {
    /// How often the worker folds the summary's changes
    /// (`delivery_summary_changes`) into `delivery_summary`, in milliseconds;
    /// one worker at a time does it.
    #[arg(long, env = "CORRAL_SUMMARY_ROLLUP_MS", default_value_t = 5_000,
          value_parser = clap::value_parser!(u64).range(100..=3_600_000), global = true)]
    pub summary_rollup_ms: u64,
}

impl SummarySettings {
    /// Roll-up interval.
    pub fn rollup(&self) -> Duration {
        Duration::from_millis(self.summary_rollup_ms)
    }
}

/// What one roll-up did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RolledUp {
    /// Rows of `delivery_summary_changes` moved.
    pub changes: i64,
    /// Rows of `delivery_summary` inserted or added to, counted once per
    /// transaction that wrote them.
    pub rows: i64,
}

/// Folds the committed rows of `delivery_summary_changes` into
/// `delivery_summary`, at most `chunk` of them per transaction, until a
/// transaction finds fewer. `None` when another session holds the roll-up
/// lock (its round does the work).
pub async fn roll_up(
    client: &mut tokio_postgres::Client,
    chunk: i64,
) -> Result<Option<RolledUp>, tokio_postgres::Error> {
    let mut total = RolledUp::default();
    loop {
        let tx = client.transaction().await?;
        let locked: bool = tx
            .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&ROLL_UP_LOCK])
            .await?
            .get(0);
        if !locked {
            return Ok((total.changes > 0).then_some(total));
        }
        let row = tx.query_one(ROLL_UP, &[&chunk]).await?;
        tx.commit().await?;
        let changes: i64 = row.get("changes");
        total.changes += changes;
        total.rows += row.get::<_, i64>("rows");
        if changes < chunk {
            return Ok(Some(total));
        }
    }
}

/// Rolls the summary up every `every` until `shutdown` (a round in progress
/// finishes first). A failed round is logged and tried again at the next
/// tick: its transaction rolled back, so its change rows are still there.
pub async fn roll_up_every(
    every: Duration,
    timeout: Duration,
    pool: Pool,
    shutdown: CancellationToken,
) {
    let pool = &pool;
    let task = Task::new(
        "summary roll-up",
        every,
        "could not roll the summary up; retrying at the next tick (its changes stay)",
    );
    task.run(&shutdown, move || async move {
        let round = async {
            let mut client = pool.get().await?;
            anyhow::Ok(roll_up(&mut client, ROLL_UP_CHUNK).await?)
        };
        match periodic::within(timeout, round).await? {
            Some(done) => tracing::debug!(
                changes = done.changes,
                rows = done.rows,
                "summary rolled up"
            ),
            None => tracing::debug!("another worker is rolling the summary up"),
        }
        Ok::<_, String>(Next::Wait)
    })
    .await;
}
