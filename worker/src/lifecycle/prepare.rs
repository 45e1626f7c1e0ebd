//! What migration V7 needs that could take long on a large table, done
//! before it by `corral-worker migrate` (and a worker's start) with locks
//! the writers do not wait for: the CHECK that proves the legacy
//! partition's bound, validated by a scan under SHARE UPDATE EXCLUSIVE, and
//! the indexes V7 needs, built CONCURRENTLY. V7 then only renames and
//! attaches. Each step is idempotent, so an interrupted run is run again.

use chrono::{DateTime, Utc};
use tokio_postgres::Client;

/// Indexes V7 finds ready (it creates them itself, under its lock, where
/// this did not run): UNIQUE or not, name, and what it indexes.
const INDEXES: [(&str, &str, &str); 5] = [
    (
        "UNIQUE",
        "delivery_events_legacy_fingerprint_attempt_key",
        "delivery_events (fingerprint, attempt_date)",
    ),
    (
        "UNIQUE",
        "delivery_events_legacy_id_attempt_key",
        "delivery_events (id, attempt_date)",
    ),
    (
        "",
        "deliveries_attempt_date_idx",
        "deliveries (attempt_date)",
    ),
    (
        "",
        "provider_events_stored_at_idx",
        "provider_events (stored_at)",
    ),
    (
        "",
        "quarantined_webhooks_quarantined_at_idx",
        "quarantined_webhooks (quarantined_at)",
    ),
];

/// The legacy partition's bound: midnight UTC two days past the newest
/// event or now, whichever is later, so events keep landing below it until
/// V7 runs. Read (a scan, under ACCESS SHARE) before the constraint is
/// added, so the ACCESS EXCLUSIVE lock of adding it lasts only that.
const BOUND: &str = "
SELECT date_trunc('day', greatest(now(), max(attempt_date)), 'UTC') + interval '48 hours'
FROM delivery_events";

/// Adds the bound's CHECK, NOT VALID: no scan under the lock. Re-made on
/// every run, so a run long after an interrupted one does not keep an old
/// bound.
async fn add_bound(client: &Client) -> Result<(), tokio_postgres::Error> {
    let bound: DateTime<Utc> = client.query_one(BOUND, &[]).await?.get(0);
    let existing = client
        .query_opt(
            "SELECT FROM pg_constraint WHERE conrelid = 'delivery_events'::regclass
                 AND conname = 'delivery_events_legacy_bound'",
            &[],
        )
        .await?;
    if existing.is_some() {
        client
            .batch_execute(
                "ALTER TABLE delivery_events DROP CONSTRAINT delivery_events_legacy_bound",
            )
            .await?;
    }
    client
        .batch_execute(&format!(
            "ALTER TABLE delivery_events ADD CONSTRAINT delivery_events_legacy_bound
                 CHECK (attempt_date < '{}') NOT VALID",
            bound.to_rfc3339()
        ))
        .await
}

/// Prepares V7 when it is the next migration (the database is at V6);
/// returns whether it did.
pub async fn before_v7(client: &Client) -> Result<bool, tokio_postgres::Error> {
    let at_v6 = client
        .query_one(
            "SELECT to_regclass('refinery_schema_history') IS NOT NULL
                    AND (SELECT relkind = 'r' FROM pg_class
                         WHERE oid = to_regclass('delivery_events')) IS TRUE",
            &[],
        )
        .await?
        .get::<_, bool>(0)
        && client
            .query_one("SELECT max(version) = 6 FROM refinery_schema_history", &[])
            .await?
            .get::<_, Option<bool>>(0)
            .unwrap_or(false);
    if !at_v6 {
        return Ok(false);
    }
    tracing::info!("preparing migration V7 (partitioned delivery_events); writers go on");
    add_bound(client).await?;
    client
        .batch_execute(
            "ALTER TABLE delivery_events VALIDATE CONSTRAINT delivery_events_legacy_bound",
        )
        .await?;
    for (unique, name, on) in INDEXES {
        // An interrupted concurrent build leaves an invalid index behind.
        let invalid = client
            .query_opt(
                "SELECT FROM pg_index WHERE indexrelid = to_regclass($1) AND NOT indisvalid",
                &[&name],
            )
            .await?;
        if invalid.is_some() {
            client
                .batch_execute(&format!("DROP INDEX CONCURRENTLY {name}"))
                .await?;
        }
        client
            .batch_execute(&format!(
                "CREATE {unique} INDEX CONCURRENTLY IF NOT EXISTS {name} ON {on}"
            ))
            .await?;
    }
    Ok(true)
}
