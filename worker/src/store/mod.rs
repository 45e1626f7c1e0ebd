//! Writing batches: every webhook of a batch becomes a `delivery_events` row
//! (a callback, or a signed status event), a `provider_events` row (any
//! other signed event), or is recognised as a duplicate of one, or becomes a
//! `quarantined_webhooks` row, all in one transaction, with set-based
//! statements (`UNNEST` arrays), never a statement per row.
//!
//! A batch the database refuses because of one webhook's data does not fail
//! as a whole (`isolate`): it is split in halves under savepoints until the
//! culprit is alone, and that one is quarantined with PostgreSQL's own error.
//! The quarantine insert is isolated the same way (`quarantine`), so no
//! message, whatever it holds, can fail or hold its batch.

mod events;
mod isolate;
mod prepare;
mod provider;
mod quarantine;

use std::collections::BTreeMap;

use corral_runtime::telemetry::{labels::DeliveryLabels, metrics};
use deadpool_postgres::Transaction;
use prepare::{EventRow, ProviderRow, QuarantineRow};
pub use prepare::{Prepared, prepare_all};

use crate::db::is_data_error;

/// One webhook as it came off the buffer: the envelope's, which the
/// source unpacks and the store writes.
pub use corral_contract::envelope::Incoming;

/// How the messages of a committed batch ended.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BatchOutcome {
    /// New `delivery_events` and `provider_events` rows.
    pub stored: usize,
    /// Already stored (or quarantined) before, or twice in this batch.
    pub duplicate: usize,
    /// New `quarantined_webhooks` rows.
    pub quarantined: usize,
    /// The results counted (a result of a drop counts once, whichever
    /// channel brought it first) by their metric labels.
    pub deliveries: Deliveries,
}

/// New events counted by their `corral_worker_deliveries_total` labels.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Deliveries(BTreeMap<DeliveryLabels, u64>);

impl Deliveries {
    fn add(&mut self, labels: DeliveryLabels) {
        *self.0.entry(labels).or_default() += 1;
    }

    fn merge(&mut self, other: Deliveries) {
        for (labels, count) in other.0 {
            *self.0.entry(labels).or_default() += count;
        }
    }

    /// Adds them to `corral_worker_deliveries_total`; call after the commit.
    pub fn record(&self) {
        for (labels, count) in &self.0 {
            metrics::worker_deliveries(*labels, *count);
        }
    }

    /// How many events, by labels.
    pub fn counts(&self) -> impl Iterator<Item = (DeliveryLabels, u64)> + '_ {
        self.0.iter().map(|(labels, count)| (*labels, *count))
    }
}

impl Prepared<'_> {
    fn outcome(&self, stored: Stored, quarantined: usize) -> BatchOutcome {
        BatchOutcome {
            stored: stored.count,
            duplicate: self.len - stored.count - quarantined,
            quarantined,
            deliveries: stored.deliveries,
        }
    }
}

/// New events written by one or more inserts.
#[derive(Debug, Default)]
struct Stored {
    count: usize,
    deliveries: Deliveries,
}

impl Stored {
    fn merge(&mut self, other: Stored) {
        self.count += other.count;
        self.deliveries.merge(other.deliveries);
    }
}

/// Inserts the batch's results and provider events, one statement each,
/// without savepoints: the common case.
async fn insert_all(
    tx: &Transaction<'_>,
    batch: &Prepared<'_>,
) -> Result<Stored, tokio_postgres::Error> {
    let mut stored = events::insert_events(tx, &batch.events, batch.result_events).await?;
    stored.merge(provider::insert(tx, &batch.provider).await?);
    Ok(stored)
}

/// Inserts the batch's results and provider events under savepoints; a row
/// PostgreSQL refuses goes to `quarantine` with PostgreSQL's own error.
async fn store_all<'r>(
    tx: &mut Transaction<'_>,
    batch: &'r Prepared<'r>,
    quarantine: &mut Vec<QuarantineRow<'r>>,
) -> Result<Stored, tokio_postgres::Error> {
    let mut stored = events::store(tx, &batch.events, batch.result_events, quarantine).await?;
    stored.merge(provider::store(tx, &batch.provider, quarantine).await?);
    Ok(stored)
}

/// Writes one batch, typed by [`prepare_all`], in one transaction and commits
/// it. On `Err` nothing was committed and nothing may be acknowledged; a
/// retry passes the same `batch` again.
pub async fn write_batch(
    client: &mut deadpool_postgres::Client,
    batch: &Prepared<'_>,
) -> Result<BatchOutcome, tokio_postgres::Error> {
    // What PostgreSQL refuses is added to these for this attempt only.
    let mut quarantined = batch.refused.clone();
    // The common case needs no savepoint: insert the whole batch. Only when
    // PostgreSQL refuses its data is the transaction rolled back and the
    // batch written again, split under savepoints to isolate the culprit.
    let mut tx = client.transaction().await?;
    let stored = match insert_all(&tx, batch).await {
        Ok(stored) => stored,
        Err(err) if is_data_error(&err) => {
            tx.rollback().await?;
            tx = client.transaction().await?;
            store_all(&mut tx, batch, &mut quarantined).await?
        }
        Err(err) => return Err(err),
    };
    let new_quarantined = quarantine::store(&mut tx, &quarantined).await?;
    crate::db::commit(tx, stored.count + new_quarantined > 0).await?;
    Ok(batch.outcome(stored, new_quarantined))
}

/// Writes one batch, typed by [`prepare_all`], into a transaction the caller
/// holds and commits: for webhooks it claimed in that same transaction (the
/// spool's rows), which a rollback would hand back. The webhook the database
/// refuses is isolated under savepoints, as in [`write_batch`], without
/// ever rolling the caller's transaction back.
pub async fn write_within(
    tx: &mut Transaction<'_>,
    batch: &Prepared<'_>,
) -> Result<BatchOutcome, tokio_postgres::Error> {
    let mut quarantined = batch.refused.clone();
    let stored = store_all(tx, batch, &mut quarantined).await?;
    let new_quarantined = quarantine::store(tx, &quarantined).await?;
    Ok(batch.outcome(stored, new_quarantined))
}

/// What [`store_in`] did with a set of messages.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StoredIn {
    /// New rows and duplicates; `quarantined` is always 0 here, the messages
    /// that could not be stored are in `refused` instead.
    pub outcome: BatchOutcome,
    /// The messages that still cannot be stored: index in the input, and why
    /// (the typing error, or PostgreSQL's refusal).
    pub refused: Vec<(usize, String)>,
}

/// Types and stores `messages` in the caller's transaction exactly as
/// [`write_batch`] does (same SQL, same split on a data error), but hands the
/// messages it cannot store back to the caller instead of quarantining them:
/// `corral-worker quarantine reprocess` re-types rows that already are in
/// `quarantined_webhooks` and decides itself what happens to them.
pub async fn store_in(
    tx: &mut Transaction<'_>,
    messages: &[Incoming],
    result_events: bool,
) -> Result<StoredIn, tokio_postgres::Error> {
    let batch = prepare_all(messages).with_result_events(result_events);
    let mut refused = batch.refused.clone();
    let stored = store_all(tx, &batch, &mut refused).await?;
    let refused: Vec<(usize, String)> = refused
        .into_iter()
        .map(|row| {
            let index = messages
                .iter()
                .position(|message| std::ptr::eq(message, row.incoming))
                .expect("a refused row is one of the messages");
            (index, row.error)
        })
        .collect();
    Ok(StoredIn {
        outcome: BatchOutcome {
            stored: stored.count,
            duplicate: messages.len() - stored.count - refused.len(),
            quarantined: 0,
            deliveries: stored.deliveries,
        },
        refused,
    })
}
