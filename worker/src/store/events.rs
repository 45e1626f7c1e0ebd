//! The event insert: typed webhooks into `delivery_events`, and, in the same
//! statement, `deliveries`, `suppressions`, the summary's changes and the
//! result-event outbox (`insert_events.sql`).

use std::{collections::HashSet, future::Future};

use chrono::{DateTime, Utc};
use corral_shared::{payload::DeliveryStatus, telemetry::labels::DeliveryLabels};
use deadpool_postgres::{GenericClient, Transaction};
use rust_decimal::Decimal;
use uuid::Uuid;

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
        let reason = err
            .as_db_error()
            .map_or_else(|| err.to_string(), |db| db.message().to_owned());
        // PostgreSQL's text may quote the refused value; the log gets its
        // SQLSTATE only.
        let code = err.code().map_or("unknown", |code| code.code());
        self.quarantine.push(QuarantineRow {
            incoming: row.incoming,
            error: format!("PostgreSQL refused the typed row: {reason}"),
            logged: format!("PostgreSQL refused the typed row (SQLSTATE {code})"),
        });
        std::future::ready(Ok(Stored::default()))
    }
}

pub(super) async fn insert_events(
    client: &impl GenericClient,
    rows: &[EventRow<'_>],
    results: bool,
) -> Result<Stored, tokio_postgres::Error> {
    if rows.is_empty() {
        return Ok(Stored::default());
    }
    let statement = client.prepare_cached(INSERT_EVENTS).await?;
    fn status<'a>(row: &'a EventRow<'_>) -> &'a DeliveryStatus {
        &row.typed.status
    }
    let fingerprints: Vec<&[u8]> = rows.iter().map(|r| &r.typed.fingerprint.0[..]).collect();
    let message_ids: Vec<Uuid> = rows.iter().map(|r| r.message_id).collect();
    let kinds: Vec<&str> = rows.iter().map(|r| r.kind.as_str()).collect();
    let drop_ids: Vec<&str> = rows.iter().map(|r| status(r).drop_id.as_str()).collect();
    let phones: Vec<Option<&str>> = rows
        .iter()
        .map(|r| status(r).phone_number.as_deref())
        .collect();
    let attempt_dates: Vec<DateTime<Utc>> = rows.iter().map(|r| status(r).attempt_date).collect();
    let statuses: Vec<&str> = rows.iter().map(|r| status(r).status.as_str()).collect();
    let reasons: Vec<Option<&str>> = rows.iter().map(|r| status(r).reason.as_deref()).collect();
    let dncs: Vec<Option<bool>> = rows.iter().map(|r| status(r).dnc).collect();
    let spams: Vec<Option<bool>> = rows.iter().map(|r| status(r).spam).collect();
    let product_costs: Vec<Option<Decimal>> = rows.iter().map(|r| status(r).product_cost).collect();
    let compliance_fees: Vec<Option<Decimal>> =
        rows.iter().map(|r| status(r).compliance_fee).collect();
    let tts_fees: Vec<Option<Decimal>> = rows.iter().map(|r| status(r).tts_fee).collect();
    let network_names: Vec<Option<&str>> = rows
        .iter()
        .map(|r| status(r).network_name.as_deref())
        .collect();
    let network_types: Vec<Option<&str>> = rows
        .iter()
        .map(|r| status(r).network_type.as_deref())
        .collect();
    let foreign_ids: Vec<Option<&str>> = rows
        .iter()
        .map(|r| status(r).foreign_id.as_deref())
        .collect();
    // The body was validated as UTF-8 JSON when it was typed.
    let payloads: Vec<&str> = rows
        .iter()
        .map(|r| std::str::from_utf8(&r.incoming.body).expect("typed payloads are UTF-8"))
        .collect();
    let received: Vec<DateTime<Utc>> = rows.iter().map(|r| r.received_at).collect();
    let new = client
        .query(
            &statement,
            &[
                &fingerprints,
                &message_ids,
                &kinds,
                &drop_ids,
                &phones,
                &attempt_dates,
                &statuses,
                &reasons,
                &dncs,
                &spams,
                &product_costs,
                &compliance_fees,
                &tts_fees,
                &network_names,
                &network_types,
                &foreign_ids,
                &payloads,
                &received,
                &results,
            ],
        )
        .await?;
    // A fingerprint twice in the batch is stored (and returned) once.
    let mut new: HashSet<Vec<u8>> = new.iter().map(|row| row.get::<_, Vec<u8>>(0)).collect();
    let mut stored = Stored::default();
    for row in rows {
        if new.remove(&row.typed.fingerprint.0[..]) {
            stored.count += 1;
            let status = status(row);
            stored.deliveries.add(DeliveryLabels::of(
                row.kind,
                &status.status,
                status.reason.as_deref(),
            ));
        }
    }
    Ok(stored)
}
