//! Isolating the row PostgreSQL refuses: a set-based insert that fails on
//! one row's data is tried again in halves, each under a savepoint, until
//! the culprit is alone, so one bad row never fails (or holds) its batch.
//! What then becomes of the culprit is the caller's: an event is
//! quarantined, a quarantine row is kept in its last-resort form.

use std::{future::Future, pin::Pin};

use corral_runtime::telemetry::{labels::DbErrorKind, metrics};
use deadpool_postgres::Transaction;

use crate::db::is_data_error;

/// Rows of type `T` that one statement inserts, and what happens to the one
/// row PostgreSQL refuses.
pub(super) trait Rows<T>: Send {
    /// What the inserts wrote, added up.
    type Written: Default + Send;

    /// Inserts `rows` in one statement.
    fn insert<'a>(
        &'a self,
        client: &'a Transaction<'_>,
        rows: &'a [T],
    ) -> impl Future<Output = Result<Self::Written, tokio_postgres::Error>> + Send + 'a;

    /// Adds what another insert wrote.
    fn merge(written: &mut Self::Written, more: Self::Written);

    /// Deals with `row`, which PostgreSQL refused alone with `err`.
    fn refused<'a>(
        &'a mut self,
        tx: &'a mut Transaction<'_>,
        row: &'a T,
        err: tokio_postgres::Error,
    ) -> impl Future<Output = Result<Self::Written, tokio_postgres::Error>> + Send + 'a;
}

/// Inserts `rows` under a savepoint; on a data error, splits them in halves
/// until the culprit is alone and hands it to [`Rows::refused`]. Any other
/// error is the caller's (the batch is retried unchanged).
pub(super) fn isolate<'t, T: Sync, R: Rows<T>>(
    tx: &'t mut Transaction<'_>,
    rows: &'t [T],
    what: &'t mut R,
) -> Pin<Box<dyn Future<Output = Result<R::Written, tokio_postgres::Error>> + Send + 't>> {
    Box::pin(async move {
        if rows.is_empty() {
            return Ok(R::Written::default());
        }
        let savepoint = tx.savepoint("corral_rows").await?;
        match what.insert(&savepoint, rows).await {
            Ok(written) => {
                savepoint.commit().await?;
                Ok(written)
            }
            Err(err) if is_data_error(&err) => {
                // Counted per refused insert (the catalogue's `kind="data"`);
                // without it a batch split was invisible to operators.
                metrics::worker_db_error(DbErrorKind::Data);
                savepoint.rollback().await?;
                if let [row] = rows {
                    return what.refused(tx, row, err).await;
                }
                let (left, right) = rows.split_at(rows.len() / 2);
                let mut written = isolate(tx, left, what).await?;
                R::merge(&mut written, isolate(tx, right, what).await?);
                Ok(written)
            }
            Err(err) => Err(err),
        }
    })
}
