//! The tables that are not partitioned, pruned past a horizon in batches
//! of [`BATCH`] rows, each its own short transaction on an index of the
//! time it is pruned by (migration V7), so writers never wait long and
//! VACUUM reclaims the space as it goes.

use chrono::{DateTime, Utc};
use corral_runtime::telemetry::labels::PrunedTable;
use tokio_postgres::Client;

/// Rows one DELETE removes at most.
pub const BATCH: i64 = 5_000;

/// The tables pruned by `CORRAL_RETENTION` (the outbox goes with the
/// partitions, the summary by its own horizon).
pub const BY_RETENTION: [PrunedTable; 3] = [
    PrunedTable::Deliveries,
    PrunedTable::ProviderEvents,
    PrunedTable::QuarantinedWebhooks,
];

/// The column `table` is pruned by, each indexed for it (migration V7).
fn time_column(table: PrunedTable) -> &'static str {
    match table {
        // A drop's row holds its latest event's time: older, and so are all.
        PrunedTable::Deliveries => "attempt_date",
        PrunedTable::ProviderEvents => "stored_at",
        PrunedTable::QuarantinedWebhooks => "quarantined_at",
        PrunedTable::DeliverySummary => "hour",
        // Before the partition of their events is dropped (`partitions`).
        PrunedTable::DeliveryResultsOutbox => "attempt_date",
    }
}

/// One batch's DELETE for `table` (its label is the table's name): $1 the
/// horizon, $2 the batch. A row is named by its ctid (a TID scan): one whose
/// key a writer changes meanwhile (a newer event for a drop) is skipped, not
/// deleted.
fn batch_delete(table: PrunedTable) -> String {
    let (name, column) = (table.as_str(), time_column(table));
    format!(
        "DELETE FROM {name} WHERE ctid = ANY(ARRAY(
             SELECT ctid FROM {name} WHERE {column} < $1 LIMIT $2))"
    )
}

/// Deletes `table`'s rows older than `horizon`, batch after batch until one
/// comes back short; returns how many.
pub async fn older_than(
    client: &Client,
    table: PrunedTable,
    horizon: DateTime<Utc>,
) -> Result<u64, tokio_postgres::Error> {
    let statement = client.prepare(&batch_delete(table)).await?;
    let mut deleted = 0;
    loop {
        let batch = client.execute(&statement, &[&horizon, &BATCH]).await?;
        deleted += batch;
        if batch < BATCH as u64 {
            return Ok(deleted);
        }
    }
}
