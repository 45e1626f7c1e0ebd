//! The provider-event insert: signed events of a type corral keeps whole,
//! once per `event_id` (`insert_provider_events.sql`).

use std::{collections::HashSet, future::Future};

use chrono::{DateTime, Utc};
use deadpool_postgres::{GenericClient, Transaction};
use uuid::Uuid;

use super::{
    ProviderRow, QuarantineRow, Stored,
    isolate::{Rows, isolate},
};

const INSERT_PROVIDER_EVENTS: &str = include_str!("insert_provider_events.sql");

/// Inserts `rows` under savepoints; the one PostgreSQL refuses goes to
/// `quarantine` with PostgreSQL's own error.
pub(super) async fn store<'r>(
    tx: &mut Transaction<'_>,
    rows: &'r [ProviderRow<'r>],
    quarantine: &mut Vec<QuarantineRow<'r>>,
) -> Result<Stored, tokio_postgres::Error> {
    isolate(tx, rows, &mut ProviderEvents { quarantine }).await
}

/// Provider events to insert, and where the one PostgreSQL refuses goes.
struct ProviderEvents<'q, 'r> {
    quarantine: &'q mut Vec<QuarantineRow<'r>>,
}

impl<'r> Rows<ProviderRow<'r>> for ProviderEvents<'_, 'r> {
    type Written = Stored;

    fn insert<'a>(
        &'a self,
        client: &'a Transaction<'_>,
        rows: &'a [ProviderRow<'r>],
    ) -> impl Future<Output = Result<Stored, tokio_postgres::Error>> + Send + 'a {
        insert(client, rows)
    }

    fn merge(written: &mut Stored, more: Stored) {
        written.merge(more);
    }

    fn refused<'a>(
        &'a mut self,
        _tx: &'a mut Transaction<'_>,
        row: &'a ProviderRow<'r>,
        err: tokio_postgres::Error,
    ) -> impl Future<Output = Result<Stored, tokio_postgres::Error>> + Send + 'a {
        self.quarantine
            .push(QuarantineRow::refused_by_postgres(row.incoming, &err));
        std::future::ready(Ok(Stored::default()))
    }
}

/// Inserts `rows` in one statement; an `event_id` already kept (or twice
/// in `rows`) is a duplicate.
pub(super) async fn insert(
    client: &impl GenericClient,
    rows: &[ProviderRow<'_>],
) -> Result<Stored, tokio_postgres::Error> {
    if rows.is_empty() {
        return Ok(Stored::default());
    }
    let statement = client.prepare_cached(INSERT_PROVIDER_EVENTS).await?;
    let event_ids: Vec<&str> = rows.iter().map(|r| r.event.event_id.as_str()).collect();
    let events: Vec<&str> = rows.iter().map(|r| r.event.event.as_str()).collect();
    let event_at: Vec<Option<DateTime<Utc>>> = rows.iter().map(|r| r.event.event_at).collect();
    let message_ids: Vec<Uuid> = rows.iter().map(|r| r.message_id).collect();
    let received: Vec<DateTime<Utc>> = rows.iter().map(|r| r.received_at).collect();
    // The body was validated as UTF-8 JSON when it was typed.
    let bodies: Vec<&str> = rows
        .iter()
        .map(|r| std::str::from_utf8(&r.incoming.body).expect("typed bodies are UTF-8"))
        .collect();
    let new = client
        .query(
            &statement,
            &[
                &event_ids,
                &events,
                &event_at,
                &message_ids,
                &received,
                &bodies,
            ],
        )
        .await?;
    let new: HashSet<String> = new.iter().map(|row| row.get(0)).collect();
    Ok(Stored {
        count: new.len(),
        ..Stored::default()
    })
}
