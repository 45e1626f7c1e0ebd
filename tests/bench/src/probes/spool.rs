//! The spool probe: the bare multi-row INSERT the spool makes, on one
//! connection, with nothing of ingress around it.

use std::time::{Duration, Instant};

use chrono::Utc;
use corral_contract::spool::INSERT;
use uuid::Uuid;

use corral_testkit::{database, unique_name};

use super::*;

/// Inserts `rows` spool rows (the realistic bodies of [`body`]) in statements
/// of `batch` rows, one after another on one connection, each its own
/// transaction with `synchronous_commit` on — what one spool connection does
/// with rounds of `batch` webhooks — into a fresh, migrated database.
pub async fn spool_insert(rows: usize, batch: usize) -> anyhow::Result<ProbeResult> {
    let db = migrated_database().await?;
    let client = database::connect(&db.url).await;
    client.batch_execute("SET synchronous_commit = on").await?;
    let statement = client.prepare(INSERT).await?;
    let name = unique_name("spool-probe");
    let bodies: Vec<Vec<u8>> = (0..rows).map(|i| body(&name, i).into_bytes()).collect();
    let now = Utc::now();
    let started = Instant::now();
    let mut inserted = 0;
    for chunk in bodies.chunks(batch) {
        let ids: Vec<Uuid> = chunk.iter().map(|_| Uuid::now_v7()).collect();
        let kinds: Vec<&str> = chunk.iter().map(|_| "sms").collect();
        let bodies: Vec<&[u8]> = chunk.iter().map(Vec::as_slice).collect();
        let received: Vec<_> = chunk.iter().map(|_| now).collect();
        inserted += client
            .execute(&statement, &[&ids, &kinds, &bodies, &received])
            .await?;
    }
    let elapsed = started.elapsed();
    drop(db);
    Ok(ProbeResult::new(
        ProbeKey::SpoolInsert { batch },
        format!(
            "bare spool INSERT (UNNEST, synchronous_commit on), {batch}-row batches, 1 connection"
        ),
        inserted,
        elapsed.max(Duration::from_micros(1)),
    ))
}
