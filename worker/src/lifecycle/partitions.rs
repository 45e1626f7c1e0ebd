//! `delivery_events`' partitions: days made ahead, days past the retention
//! dropped whole. Dropping a day is a catalogue change, however many rows
//! it holds: no DELETE, no dead rows for VACUUM, no WAL per row for the
//! standbys to replay.

use chrono::{DateTime, Utc};
use corral_runtime::telemetry::labels::PrunedTable;
use tokio_postgres::Client;

use super::{AHEAD, prune};
use crate::db::quote_ident;

/// Creates the days missing from the newest partition to `now` + [`AHEAD`]
/// (none ending before `horizon`); returns how many.
pub async fn add(
    client: &Client,
    now: DateTime<Utc>,
    horizon: Option<DateTime<Utc>>,
) -> Result<i32, tokio_postgres::Error> {
    let until = now + AHEAD;
    let row = client
        .query_one(
            "SELECT delivery_events_add_days(coalesce($1::timestamptz, '-infinity'), $2::timestamptz)",
            &[&horizon, &until],
        )
        .await?;
    Ok(row.get(0))
}

/// Drops every partition whose events are all older than `horizon`, oldest
/// first, each after deleting the result-event outbox rows of its events
/// (which could never be published without them); returns the partitions
/// dropped and the outbox rows deleted.
///
/// `DETACH … CONCURRENTLY` takes no lock a writer waits for (hence no
/// DEFAULT partition, which forbids it); the detached table is then dropped
/// alone. A detach interrupted half way is finalized by the next round, and
/// a table detached but not yet dropped is dropped.
pub async fn drop_behind(
    client: &Client,
    horizon: DateTime<Utc>,
) -> Result<(Vec<String>, u64), tokio_postgres::Error> {
    let expired = client
        .query(
            "SELECT name, upper, detaching FROM delivery_event_partitions
             WHERE upper <= $1 ORDER BY upper",
            &[&horizon],
        )
        .await?;
    let (mut dropped, mut outbox) = (Vec::new(), 0);
    for partition in expired {
        let name: String = partition.get("name");
        let upper: DateTime<Utc> = partition.get("upper");
        outbox += prune::older_than(client, PrunedTable::DeliveryResultsOutbox, upper).await?;
        let how = if partition.get("detaching") {
            "FINALIZE"
        } else {
            "CONCURRENTLY"
        };
        let table = quote_ident(&name);
        client
            .batch_execute(&format!(
                "ALTER TABLE delivery_events DETACH PARTITION {table} {how}"
            ))
            .await?;
        client.batch_execute(&format!("DROP TABLE {table}")).await?;
        dropped.push(name);
    }
    dropped.extend(drop_detached(client).await?);
    Ok((dropped, outbox))
}

/// Drops the tables a round detached and did not get to drop: ours by
/// name, and no partition any more. (A day is created and attached in one
/// transaction, so a committed table of that name outside the partitioned
/// table was detached.)
async fn drop_detached(client: &Client) -> Result<Vec<String>, tokio_postgres::Error> {
    let orphans = client
        .query(
            "SELECT c.relname::text FROM pg_class c
             JOIN pg_class p ON p.oid = 'delivery_events'::regclass
                            AND p.relnamespace = c.relnamespace
             WHERE c.relkind = 'r' AND NOT c.relispartition
               AND c.relname ~ '^delivery_events_(legacy|[0-9]{8})$'",
            &[],
        )
        .await?;
    let mut dropped = Vec::new();
    for orphan in orphans {
        let name: String = orphan.get(0);
        client
            .batch_execute(&format!("DROP TABLE {}", quote_ident(&name)))
            .await?;
        dropped.push(name);
    }
    Ok(dropped)
}

/// Whole days after `now`'s day (UTC) that have a partition.
pub async fn days_ahead(client: &Client, now: DateTime<Utc>) -> Result<i64, tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT coalesce(floor(extract(epoch FROM
                        max(upper) - date_trunc('day', $1::timestamptz, 'UTC')) / 86400) - 1, 0)::bigint
             FROM delivery_event_partitions",
            &[&now],
        )
        .await?;
    Ok(row.get(0))
}
