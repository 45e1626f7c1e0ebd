//! The quarantine insert: webhooks (and whole messages) the worker cannot
//! store, kept byte for byte with why (`insert_quarantined.sql`).
//!
//! Its texts come from untrusted bytes (a routing key, serde's error quoting
//! an envelope's field), so each goes through
//! [`corral_runtime::postgres::text::storable`]. The insert is isolated like
//! the event insert, and a row PostgreSQL still refuses is kept in a last
//! resort form rather than failing, or holding, its batch: the body is
//! `bytea` and always storable; its texts become printable ASCII, the reason
//! without the body's values (the log line's form) and what was refused.

use std::{borrow::Cow, future::Future};

use chrono::{DateTime, Utc};
use corral_runtime::postgres::text::{ascii, storable};
use deadpool_postgres::{GenericClient, Transaction};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{
    QuarantineRow,
    isolate::{Rows, isolate},
};

const INSERT_QUARANTINED: &str = include_str!("insert_quarantined.sql");

/// Stores `rows` in `quarantined_webhooks` (each body once); returns how
/// many were new.
pub(super) async fn store(
    tx: &mut Transaction<'_>,
    rows: &[QuarantineRow<'_>],
) -> Result<usize, tokio_postgres::Error> {
    for row in rows {
        tracing::warn!(
            message_id = ?row.incoming.envelope.message_id,
            error = row.logged,
            "webhook quarantined; the full reason is in quarantined_webhooks.error"
        );
    }
    isolate(tx, rows, &mut Quarantine).await
}

/// One `quarantined_webhooks` row as it is bound.
struct Record<'a> {
    digest: Vec<u8>,
    message_id: Option<Uuid>,
    routing_key: Cow<'a, str>,
    body: &'a [u8],
    error: Cow<'a, str>,
    received_at: Option<DateTime<Utc>>,
}

impl<'a> Record<'a> {
    fn of(row: &'a QuarantineRow<'_>) -> Self {
        Self::with(
            row,
            storable(&row.incoming.routing_key),
            storable(&row.error),
        )
    }

    /// What is kept of a row PostgreSQL refused with `err`.
    fn last_resort(row: &'a QuarantineRow<'_>, err: &tokio_postgres::Error) -> Self {
        let code = err.code().map_or("unknown", |code| code.code());
        let refusal = err
            .as_db_error()
            .map_or_else(|| err.to_string(), |db| db.message().to_owned());
        tracing::warn!(
            message_id = ?row.incoming.envelope.message_id,
            code,
            "PostgreSQL refused a quarantine row; it is kept with its reason without values"
        );
        let error = format!(
            "{} [its full reason could not be stored: PostgreSQL refused it, SQLSTATE {code}: {refusal}]",
            row.logged
        );
        Self::with(
            row,
            Cow::Owned(ascii(&row.incoming.routing_key).into_owned()),
            Cow::Owned(ascii(&error).into_owned()),
        )
    }

    fn with(row: &'a QuarantineRow<'_>, routing_key: Cow<'a, str>, error: Cow<'a, str>) -> Self {
        let incoming = row.incoming;
        Self {
            digest: Sha256::digest(&incoming.body).to_vec(),
            message_id: incoming.envelope.message_id,
            routing_key,
            body: &incoming.body,
            error,
            received_at: incoming.envelope.received_at,
        }
    }
}

/// Quarantine rows to insert; the one PostgreSQL refuses is inserted again
/// in its last-resort form.
struct Quarantine;

impl<'r> Rows<QuarantineRow<'r>> for Quarantine {
    type Written = usize;

    fn insert<'a>(
        &'a self,
        client: &'a Transaction<'_>,
        rows: &'a [QuarantineRow<'r>],
    ) -> impl Future<Output = Result<usize, tokio_postgres::Error>> + Send + 'a {
        insert(client, rows.iter().map(Record::of).collect())
    }

    fn merge(written: &mut usize, more: usize) {
        *written += more;
    }

    fn refused<'a>(
        &'a mut self,
        tx: &'a mut Transaction<'_>,
        row: &'a QuarantineRow<'r>,
        err: tokio_postgres::Error,
    ) -> impl Future<Output = Result<usize, tokio_postgres::Error>> + Send + 'a {
        // Refused even so, nothing the message carried is left to blame (a
        // schema or constraint problem): the batch fails and is retried like
        // any other that hit one.
        insert(&*tx, vec![Record::last_resort(row, &err)])
    }
}

async fn insert(
    client: &impl GenericClient,
    rows: Vec<Record<'_>>,
) -> Result<usize, tokio_postgres::Error> {
    let statement = client.prepare_cached(INSERT_QUARANTINED).await?;
    let digests: Vec<&[u8]> = rows.iter().map(|r| r.digest.as_slice()).collect();
    let message_ids: Vec<Option<Uuid>> = rows.iter().map(|r| r.message_id).collect();
    let routing_keys: Vec<&str> = rows.iter().map(|r| &*r.routing_key).collect();
    let bodies: Vec<&[u8]> = rows.iter().map(|r| r.body).collect();
    let errors: Vec<&str> = rows.iter().map(|r| &*r.error).collect();
    let received: Vec<Option<DateTime<Utc>>> = rows.iter().map(|r| r.received_at).collect();
    let new = client
        .query(
            &statement,
            &[
                &digests,
                &message_ids,
                &routing_keys,
                &bodies,
                &errors,
                &received,
            ],
        )
        .await?;
    Ok(new.len())
}
