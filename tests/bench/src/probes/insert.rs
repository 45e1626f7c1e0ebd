//! The insert and store probes: rows per second into a fresh database.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use corral_contract::envelope::Kind;
use corral_payload::{self as payload, DeliveryStatus};
use rust_decimal::Decimal;
use serde::Serialize;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use corral_testkit::{database, fixtures, unique_name};

use super::*;

/// `count` distinct, realistic webhook bodies (every failure reason, success)
/// tagged with `run` so they never collide with other runs.
pub fn bodies(run: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| body(run, i)).collect()
}

/// The `i`-th body of [`bodies`], made on demand (a million bodies need not
/// sit in memory to be published).
pub fn body(run: &str, i: usize) -> String {
    let reasons = fixtures::FAILURE_REASONS;
    let reason = reasons.get(i % (reasons.len() + 3)).copied().unwrap_or("");
    fixtures::delivery_status(
        &format!("{run}-{i:09}"),
        "2026-11-27T05:00:00.000Z",
        reason,
        &format!("{run}-order-{i}"),
    )
}

pub(super) const INSERT: &str = "
INSERT INTO delivery_events (
    fingerprint, message_id, kind, drop_id, phone_number, attempt_date, status, reason, dnc, spam,
    product_cost, compliance_fee, tts_fee, network_name, network_type, foreign_id, payload, received_at)
SELECT fingerprint, message_id, kind, drop_id, phone_number, attempt_date, status, reason, dnc, spam,
       product_cost, compliance_fee, tts_fee, network_name, network_type, foreign_id, payload::jsonb, received_at
FROM unnest($1::bytea[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::timestamptz[], $7::text[],
            $8::text[], $9::boolean[], $10::boolean[], $11::numeric[], $12::numeric[], $13::numeric[],
            $14::text[], $15::text[], $16::text[], $17::text[], $18::timestamptz[])
    AS t(fingerprint, message_id, kind, drop_id, phone_number, attempt_date, status, reason, dnc, spam,
         product_cost, compliance_fee, tts_fee, network_name, network_type, foreign_id, payload, received_at)
ON CONFLICT (fingerprint, attempt_date) DO NOTHING";

/// The whole job of storing a webhook in one statement: the event rows and
/// the `deliveries` upsert (the same statement the worker runs; here without
/// any of the worker's code around it).
pub(super) const INSERT_WITH_LATEST: &str =
    include_str!("../../../../worker/src/store/insert_events.sql");

/// What the insert probe writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InsertKind {
    /// `delivery_events` rows only.
    EventsOnly,
    /// `delivery_events` rows and the `deliveries` upsert: the same work as the worker.
    WithLatest,
}

/// Inserts `rows` rows in batches of `batch` on one connection into a fresh,
/// migrated database on the server of `server_url`, and drops it afterwards.
pub async fn insert(
    server_url: &str,
    rows: usize,
    batch: usize,
    kind: InsertKind,
) -> anyhow::Result<ProbeResult> {
    let name = unique_name("probe").replace('-', "_");
    let admin = database::connect(server_url).await;
    admin
        .batch_execute(&format!("CREATE DATABASE \"{name}\""))
        .await?;
    let server = server_url
        .rsplit_once('/')
        .map_or(server_url, |(server, _)| server);
    let url = format!("{server}/{name}");
    let result = async {
        corral_worker::db::migrate(&corral_worker::db::Target::new(
            &url,
            None,
            Duration::from_secs(30),
        )?)
        .await?;
        let client = database::connect(&url).await;
        let statement = client
            .prepare(match kind {
                InsertKind::EventsOnly => INSERT,
                InsertKind::WithLatest => INSERT_WITH_LATEST,
            })
            .await?;
        let bodies = bodies(&name, rows);
        let typed: Vec<(payload::Typed, &str)> = bodies
            .iter()
            .map(|body| Ok((payload::parse(body.as_bytes())?, body.as_str())))
            .collect::<Result<_, payload::PayloadError>>()?;
        let now = Utc::now();
        let started = Instant::now();
        let mut inserted = 0u64;
        for chunk in typed.chunks(batch) {
            inserted += insert_chunk(&client, &statement, chunk, now, kind).await?;
        }
        let what = match kind {
            InsertKind::EventsOnly => "events only",
            InsertKind::WithLatest => "events + deliveries upsert",
        };
        Ok::<_, anyhow::Error>(ProbeResult::new(
            ProbeKey::Insert { kind, batch },
            format!(
                "bare tokio-postgres UNNEST insert ({what}), {batch}-row batches, 1 connection"
            ),
            inserted,
            started.elapsed(),
        ))
    }
    .await;
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .await
        .context("dropping the probe database")?;
    result
}

pub(super) async fn insert_chunk(
    client: &tokio_postgres::Client,
    statement: &tokio_postgres::Statement,
    chunk: &[(payload::Typed, &str)],
    now: DateTime<Utc>,
    kind: InsertKind,
) -> anyhow::Result<u64> {
    fn s<'a>(row: &'a (payload::Typed, &str)) -> &'a DeliveryStatus {
        &row.0.status
    }
    let fingerprints: Vec<&[u8]> = chunk.iter().map(|r| &r.0.fingerprint.0[..]).collect();
    let ids: Vec<Uuid> = chunk.iter().map(|_| Uuid::now_v7()).collect();
    let kinds: Vec<&str> = chunk.iter().map(|_| "sms").collect();
    let drop_ids: Vec<&str> = chunk.iter().map(|r| s(r).drop_id.as_str()).collect();
    let phones: Vec<Option<&str>> = chunk.iter().map(|r| s(r).phone_number.as_deref()).collect();
    let dates: Vec<DateTime<Utc>> = chunk.iter().map(|r| s(r).attempt_date).collect();
    let statuses: Vec<&str> = chunk.iter().map(|r| s(r).status.as_str()).collect();
    let reasons: Vec<Option<&str>> = chunk.iter().map(|r| s(r).reason.as_deref()).collect();
    let dncs: Vec<Option<bool>> = chunk.iter().map(|r| s(r).dnc).collect();
    let spams: Vec<Option<bool>> = chunk.iter().map(|r| s(r).spam).collect();
    let costs: Vec<Option<Decimal>> = chunk.iter().map(|r| s(r).product_cost).collect();
    let fees: Vec<Option<Decimal>> = chunk.iter().map(|r| s(r).compliance_fee).collect();
    let tts: Vec<Option<Decimal>> = chunk.iter().map(|r| s(r).tts_fee).collect();
    let names: Vec<Option<&str>> = chunk.iter().map(|r| s(r).network_name.as_deref()).collect();
    let types: Vec<Option<&str>> = chunk.iter().map(|r| s(r).network_type.as_deref()).collect();
    let foreign: Vec<Option<&str>> = chunk.iter().map(|r| s(r).foreign_id.as_deref()).collect();
    let payloads: Vec<&str> = chunk.iter().map(|r| r.1).collect();
    let received: Vec<DateTime<Utc>> = chunk.iter().map(|_| now).collect();
    // The worker's statement also takes the signed events' columns (none of
    // them in a callback) and whether to write result events (off here).
    let no_ints: Vec<Option<i32>> = vec![None; chunk.len()];
    let no_texts: Vec<Option<&str>> = vec![None; chunk.len()];
    let no_times: Vec<Option<DateTime<Utc>>> = vec![None; chunk.len()];
    let signed: [&(dyn ToSql + Sync); 14] = [
        &no_ints, &no_texts, &no_texts, &no_texts, &no_texts, &no_texts, &no_texts, &no_texts,
        &no_ints, &no_texts, &no_times, &no_texts, &no_texts, &false,
    ];
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![
        &fingerprints,
        &ids,
        &kinds,
        &drop_ids,
        &phones,
        &dates,
        &statuses,
        &reasons,
        &dncs,
        &spams,
        &costs,
        &fees,
        &tts,
        &names,
        &types,
        &foreign,
        &payloads,
        &received,
    ];
    if kind == InsertKind::WithLatest {
        params.extend(signed);
    }
    Ok(client.execute(statement, &params).await?)
}

/// corral's own write path without the broker: `store::write_batch` on one
/// pooled connection, `rows` rows in batches of `batch`, into a fresh database.
/// The gap between this and [`insert`](fn@insert) is the price of corral's statement
/// (typing, fingerprints, the `deliveries` upsert); the gap between this and
/// the worker draining a queue is the price of consuming and acknowledging.
pub async fn store(server_url: &str, rows: usize, batch: usize) -> anyhow::Result<ProbeResult> {
    let db = migrated_database().await?;
    let _ = server_url;
    let pool = corral_worker::db::pool(
        &corral_worker::db::Target::new(&db.url, None, Duration::from_secs(30))?,
        1,
    )?;
    let mut client = pool.get().await?;
    let name = unique_name("store");
    let messages: Vec<corral_worker::store::Incoming> = (0..rows)
        .map(|i| corral_worker::store::Incoming {
            body: body(&name, i).into_bytes(),
            routing_key: Kind::Sms.routing_key().into(),
            envelope: corral_contract::envelope::Envelope {
                message_id: Some(Uuid::now_v7()),
                received_at: Some(Utc::now()),
            },
        })
        .collect();
    let started = Instant::now();
    let mut stored = 0u64;
    for chunk in messages.chunks(batch) {
        let prepared = corral_worker::store::prepare_all(chunk);
        stored += corral_worker::store::write_batch(&mut client, &prepared)
            .await?
            .stored as u64;
    }
    Ok(ProbeResult::new(
        ProbeKey::Store { batch },
        format!("corral store::write_batch, {batch}-row batches, 1 connection"),
        stored,
        started.elapsed(),
    ))
}

/// A fresh database of the benchmark's own, with corral's schema (applied by
/// the worker's own migrations, as at a worker's start).
pub async fn migrated_database() -> anyhow::Result<database::TestDatabase> {
    let db = database::TestDatabase::new().await;
    let target = corral_worker::db::Target::new(&db.url, None, Duration::from_secs(30))?;
    corral_worker::db::migrate(&target).await?;
    Ok(db)
}
