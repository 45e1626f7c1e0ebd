//! The event insert: typed results into `delivery_events`, and, in the same
//! statement, `deliveries`, `suppressions`, the summary's changes and the
//! result-event outbox (`insert_events.sql`).

use std::{collections::HashMap, future::Future};

use corral_payload::DeliveryStatus;
use corral_runtime::telemetry::{labels::DeliveryLabels, metrics};
use deadpool_postgres::{GenericClient, Transaction};
use tokio_postgres::types::ToSql;

use super::{
    EventRow, QuarantineRow, Stored,
    isolate::{Rows, isolate},
};

const INSERT_EVENTS: &str = include_str!("insert_events.sql");

/// Inserts `rows` under savepoints; the one PostgreSQL refuses goes to
/// `quarantine` with PostgreSQL's own error.
pub(super) async fn store<'r>(
    tx: &mut Transaction<'_>,
    rows: &'r [EventRow<'r>],
    results: bool,
    quarantine: &mut Vec<QuarantineRow<'r>>,
) -> Result<Stored, tokio_postgres::Error> {
    isolate(
        tx,
        rows,
        &mut Events {
            results,
            quarantine,
        },
    )
    .await
}

/// Typed rows to insert; the one PostgreSQL refuses goes to `quarantine`
/// with PostgreSQL's own error.
struct Events<'q, 'r> {
    /// Whether each new event also gets a result-event outbox row.
    results: bool,
    /// Where a refused row goes.
    quarantine: &'q mut Vec<QuarantineRow<'r>>,
}

impl<'r> Rows<EventRow<'r>> for Events<'_, 'r> {
    type Written = Stored;

    fn insert<'a>(
        &'a self,
        client: &'a Transaction<'_>,
        rows: &'a [EventRow<'r>],
    ) -> impl Future<Output = Result<Stored, tokio_postgres::Error>> + Send + 'a {
        insert_events(client, rows, self.results)
    }

    fn merge(written: &mut Stored, more: Stored) {
        written.merge(more);
    }

    fn refused<'a>(
        &'a mut self,
        _tx: &'a mut Transaction<'_>,
        row: &'a EventRow<'r>,
        err: tokio_postgres::Error,
    ) -> impl Future<Output = Result<Stored, tokio_postgres::Error>> + Send + 'a {
        if crate::lifecycle::is_unpartitioned(&err) {
            metrics::worker_event_unpartitioned();
        }
        self.quarantine
            .push(QuarantineRow::refused_by_postgres(row.incoming, &err));
        std::future::ready(Ok(Stored::default()))
    }
}

/// One parameter array of the insert: `value` of every row.
fn column<'a, T: ToSql + Sync + Send + 'a>(
    rows: &'a [EventRow<'_>],
    value: impl Fn(&'a EventRow<'_>) -> T,
) -> Box<dyn ToSql + Sync + Send + 'a> {
    Box::new(rows.iter().map(value).collect::<Vec<T>>())
}

/// The statement's parameters, in its order: the columns, then whether to
/// write result events.
fn parameters<'a>(
    rows: &'a [EventRow<'_>],
    results: &'a bool,
) -> Vec<Box<dyn ToSql + Sync + Send + 'a>> {
    fn s<'a>(row: &'a EventRow<'_>) -> &'a DeliveryStatus {
        &row.typed.status
    }
    vec![
        column(rows, |r| &r.typed.fingerprint.0[..]),
        column(rows, |r| r.message_id),
        column(rows, |r| r.kind.as_str()),
        column(rows, |r| s(r).drop_id.as_str()),
        column(rows, |r| s(r).phone_number.as_deref()),
        column(rows, |r| s(r).attempt_date),
        column(rows, |r| s(r).status.as_str()),
        column(rows, |r| s(r).reason.as_deref()),
        column(rows, |r| s(r).dnc),
        column(rows, |r| s(r).spam),
        column(rows, |r| s(r).product_cost),
        column(rows, |r| s(r).compliance_fee),
        column(rows, |r| s(r).tts_fee),
        column(rows, |r| s(r).network_name.as_deref()),
        column(rows, |r| s(r).network_type.as_deref()),
        column(rows, |r| s(r).foreign_id.as_deref()),
        // The body was validated as UTF-8 JSON when it was typed.
        column(rows, |r| {
            std::str::from_utf8(&r.incoming.body).expect("typed payloads are UTF-8")
        }),
        column(rows, |r| r.received_at),
        column(rows, |r| s(r).reason_code),
        column(rows, |r| s(r).caller_id.as_deref()),
        column(rows, |r| s(r).contact_id.as_deref()),
        column(rows, |r| s(r).team_id.as_deref()),
        column(rows, |r| s(r).campaign_id.as_deref()),
        column(rows, |r| s(r).session_id.as_deref()),
        column(rows, |r| s(r).log_id.as_deref()),
        column(rows, |r| s(r).product_code.as_deref()),
        column(rows, |r| s(r).quantity),
        column(rows, |r| s(r).proof_of_delivery_url.as_deref()),
        column(rows, |r| s(r).receipt_ready_at),
        column(rows, |r| s(r).event_id.as_deref()),
        column(rows, |r| s(r).event.as_deref()),
        Box::new(results),
    ]
}

/// Inserts `rows` in one statement; returns how many were new, and the
/// results they counted (a result of a drop counts once, whichever channel
/// brought it first).
pub(super) async fn insert_events(
    client: &impl GenericClient,
    rows: &[EventRow<'_>],
    results: bool,
) -> Result<Stored, tokio_postgres::Error> {
    if rows.is_empty() {
        return Ok(Stored::default());
    }
    let statement = client.prepare_cached(INSERT_EVENTS).await?;
    let parameters = parameters(rows, &results);
    let parameters: Vec<&(dyn ToSql + Sync)> = parameters
        .iter()
        .map(|p| p.as_ref() as &(dyn ToSql + Sync))
        .collect();
    let new = client.query(&statement, &parameters).await?;
    // A fingerprint twice in the batch is stored (and returned) once.
    let mut new: HashMap<Vec<u8>, bool> = new
        .iter()
        .map(|row| (row.get::<_, Vec<u8>>(0), row.get::<_, bool>(1)))
        .collect();
    let mut stored = Stored::default();
    for row in rows {
        let Some(counts) = new.remove(&row.typed.fingerprint.0[..]) else {
            continue;
        };
        stored.count += 1;
        if counts {
            let status = &row.typed.status;
            stored.deliveries.add(DeliveryLabels::of(
                row.kind,
                &status.status,
                status.reason.as_deref(),
                status.reason_code,
            ));
        }
    }
    Ok(stored)
}
