//! Limit probes: how fast the broker and the database themselves go on this
//! machine, with corral's own payloads and topology but none of its code in
//! the way. corral's throughput is reported as a ratio of these.
//!
//! - [`publish`]: a bare lapin client publishing persistent messages with
//!   publisher confirms into the same quorum queue, with a fixed window of
//!   publishes in flight.
//! - [`confirm_latency`]: the same client publishing at a fixed rate (open
//!   loop), timing each confirm from its scheduled send: the broker's own
//!   answer latency, the floor under ingress's.
//! - [`insert`]: a bare tokio-postgres client inserting the same typed rows
//!   into the same `delivery_events` table (same indexes) with one set-based
//!   `INSERT … SELECT FROM unnest(…) ON CONFLICT DO NOTHING` per batch.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use corral_shared::{
    amqp::{self, Topology},
    config::AmqpSettings,
    envelope,
    payload::{self, DeliveryStatus},
};
use futures_util::{StreamExt, stream::FuturesUnordered};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use rust_decimal::Decimal;
use serde::Serialize;
use uuid::Uuid;

use crate::fixtures;

/// What a probe measured.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct ProbeResult {
    /// What was measured, e.g. `publish 64 in flight, 4 channels`.
    pub name: String,
    /// Operations completed (messages confirmed, rows inserted).
    pub count: u64,
    /// Wall time of the measurement.
    pub seconds: f64,
    /// `count / seconds`.
    pub per_second: f64,
}

impl ProbeResult {
    fn new(name: String, count: u64, elapsed: Duration) -> Self {
        let seconds = elapsed.as_secs_f64();
        Self {
            name,
            count,
            seconds,
            per_second: count as f64 / seconds,
        }
    }
}

/// Settings of the publish probe.
#[derive(Debug, Clone)]
pub struct PublishProbe {
    /// Broker and prefix (the probe declares corral's topology under it).
    pub amqp: AmqpSettings,
    /// Confirm-mode channels used round-robin.
    pub channels: usize,
    /// Publishes awaiting a confirm at once.
    pub in_flight: usize,
    /// How long to publish.
    pub duration: Duration,
    /// The body to publish.
    pub body: Vec<u8>,
    /// Delete the queue afterwards (false to leave the messages for a worker).
    pub delete_after: bool,
}

/// A connection to the broker of `settings` with corral's topology declared
/// and `count` channels in confirm mode: a bare publisher's set-up.
pub async fn confirm_channels(
    settings: &AmqpSettings,
    count: usize,
) -> anyhow::Result<(lapin::Connection, Vec<lapin::Channel>, Topology)> {
    let topology = Topology::new(settings);
    let (connection, first) =
        amqp::connect_and_declare(settings, &topology, "corral-probe").await?;
    let mut channels = vec![first];
    while channels.len() < count {
        channels.push(connection.create_channel().await?);
    }
    for channel in &channels {
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
    }
    Ok((connection, channels, topology))
}

/// One publish as ingress makes it: persistent, mandatory, with a fresh
/// message id and `x-received-at` (the channel must be in confirm mode).
pub async fn publish_as_ingress(
    channel: &lapin::Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
) -> lapin::Result<lapin::PublisherConfirm> {
    channel
        .basic_publish(
            exchange.into(),
            routing_key.into(),
            BasicPublishOptions {
                mandatory: true,
                immediate: false,
            },
            body,
            envelope::properties(Uuid::now_v7(), Utc::now()),
        )
        .await
}

/// Publishes for `probe.duration` and reports confirmed messages per second.
pub async fn publish(probe: &PublishProbe) -> anyhow::Result<ProbeResult> {
    let timeout = probe.amqp.connect_timeout();
    let (connection, channels, topology) = confirm_channels(&probe.amqp, probe.channels).await?;
    // One task per channel, each keeping its share of the window full, so
    // publishing is as parallel as the client allows.
    let exchange = topology.exchange();
    let started = Instant::now();
    let window = probe.in_flight.div_ceil(channels.len());
    let mut tasks = tokio::task::JoinSet::new();
    for channel in channels.clone() {
        let (exchange, body, duration) = (exchange.clone(), probe.body.clone(), probe.duration);
        tasks.spawn(async move {
            let mut pending = FuturesUnordered::new();
            let mut confirmed = 0u64;
            while started.elapsed() < duration {
                while pending.len() < window {
                    let confirm =
                        publish_as_ingress(&channel, &exchange, "dropcowboy.sms", &body).await?;
                    pending.push(confirm);
                }
                if let Some(confirmation) = pending.next().await {
                    anyhow::ensure!(confirmation?.is_ack(), "the broker nacked a probe publish");
                    confirmed += 1;
                }
            }
            while let Some(confirmation) = pending.next().await {
                anyhow::ensure!(confirmation?.is_ack(), "the broker nacked a probe publish");
                confirmed += 1;
            }
            Ok::<_, anyhow::Error>(confirmed)
        });
    }
    let mut confirmed = 0u64;
    while let Some(done) = tasks.join_next().await {
        confirmed += done??;
    }
    let elapsed = started.elapsed();
    if probe.delete_after {
        topology.delete(&channels[0], timeout).await?;
    }
    let _ = connection.close(200, "probe done".into()).await;
    Ok(ProbeResult::new(
        format!(
            "bare lapin publish, {} in flight, {} channel(s)",
            probe.in_flight, probe.channels
        ),
        confirmed,
        elapsed,
    ))
}

/// What the confirm-latency probe measured.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct LatencyProbe {
    /// Fixed publish rate, per second.
    pub rate: f64,
    /// Publishes measured (after the warm-up).
    pub measured: u64,
    /// Scheduled send → confirm, median, in milliseconds.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
}

/// Publishes at `rate` per second for `warmup + duration` over 4 confirm
/// channels (as ingress does), a [`Drain`] keeping the queue empty, and reports the confirm
/// latency of the publishes scheduled after the warm-up, measured from their
/// scheduled send time so a stalled broker cannot hide its stalls.
pub async fn confirm_latency(
    amqp: &AmqpSettings,
    rate: f64,
    warmup: Duration,
    duration: Duration,
    body: &[u8],
) -> anyhow::Result<LatencyProbe> {
    let timeout = amqp.connect_timeout();
    let (connection, channels, topology) = confirm_channels(amqp, 4).await?;
    // A queue that grows is a different broker: RabbitMQ 3.10 slows down as a
    // quorum queue deepens, so keep it drained as the worker would.
    let drain = Drain::start(amqp).await?;
    let exchange = topology.exchange();
    let interval = Duration::from_secs_f64(1.0 / rate);
    let total = ((warmup + duration).as_secs_f64() * rate) as u32;
    let started = tokio::time::Instant::now();
    let measure_from = started + warmup;
    let mut histogram =
        hdrhistogram::Histogram::<u64>::new(3).context("creating the latency histogram")?;
    type Timed = (
        tokio::time::Instant,
        Result<lapin::Result<lapin::Confirmation>, tokio::time::error::Elapsed>,
    );
    let mut pending: FuturesUnordered<futures_util::future::BoxFuture<'static, Timed>> =
        FuturesUnordered::new();
    let mut sent = 0u32;
    while sent < total || !pending.is_empty() {
        let next = started + interval * sent;
        tokio::select! {
            biased;
            Some((scheduled, confirmation)) = pending.next() => {
                let confirmation = confirmation
                    .context("a probe confirm took over 30 s")??;
                anyhow::ensure!(confirmation.is_ack(), "the broker nacked a probe publish");
                if scheduled >= measure_from {
                    let micros = u64::try_from(scheduled.elapsed().as_micros()).unwrap_or(u64::MAX);
                    // `record` grows the histogram; `saturating_record` would clamp to its first range.
                    histogram.record(micros.max(1)).context("recording a latency")?;
                }
            }
            () = tokio::time::sleep_until(next), if sent < total => {
                let channel = &channels[sent as usize % channels.len()];
                let confirm = publish_as_ingress(channel, &exchange, "dropcowboy.sms", body).await?;
                pending.push(Box::pin(async move {
                    (next, tokio::time::timeout(Duration::from_secs(30), confirm).await)
                }));
                sent += 1;
            }
        }
    }
    drain.stop().await;
    topology.delete(&channels[0], timeout).await?;
    let _ = connection.close(200, "probe done".into()).await;
    let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    Ok(LatencyProbe {
        rate,
        measured: histogram.len(),
        p50_ms: ms(0.5),
        p99_ms: ms(0.99),
        p999_ms: ms(0.999),
    })
}

/// A bare consumer keeping corral's queue (under a prefix) empty the way the
/// worker reads it (prefetch 2,000, acknowledgements of many at once) but
/// storing nothing: the least a worker could cost the broker.
#[derive(Debug)]
pub struct Drain {
    connection: lapin::Connection,
    task: tokio::task::JoinHandle<()>,
}

impl Drain {
    /// Starts consuming the queue of `amqp`'s prefix (declaring the topology).
    pub async fn start(amqp: &AmqpSettings) -> anyhow::Result<Self> {
        /// Deliveries per acknowledgement (`multiple`), as a batch would be.
        const ACK_EVERY: u64 = 100;
        let topology = Topology::new(amqp);
        let (connection, channel) =
            amqp::connect_and_declare(amqp, &topology, "corral-probe-drain").await?;
        channel
            .basic_qos(2_000, lapin::options::BasicQosOptions::default())
            .await?;
        let mut consumer = channel
            .basic_consume(
                topology.queue().as_str().into(),
                "corral-probe-drain".into(),
                lapin::options::BasicConsumeOptions::default(),
                lapin::types::FieldTable::default(),
            )
            .await?;
        let task = tokio::spawn(async move {
            while let Some(Ok(delivery)) = consumer.next().await {
                if delivery.delivery_tag % ACK_EVERY == 0 {
                    let multiple = lapin::options::BasicAckOptions { multiple: true };
                    if channel
                        .basic_ack(delivery.delivery_tag, multiple)
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            }
        });
        Ok(Self { connection, task })
    }

    /// Stops consuming.
    pub async fn stop(self) {
        let _ = self.connection.close(200, "drain done".into()).await;
        self.task.abort();
    }
}

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

const INSERT: &str = "
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
ON CONFLICT (fingerprint) DO NOTHING";

/// The whole job of storing a webhook in one statement: the event rows and
/// the `deliveries` upsert (the same statement the worker runs; here without
/// any of the worker's code around it).
const INSERT_WITH_LATEST: &str = include_str!("../../worker/src/store/insert_events.sql");

/// What the insert probe writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    let name = crate::unique_name("probe").replace('-', "_");
    let admin = crate::database::connect(server_url).await;
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
        let client = crate::database::connect(&url).await;
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
            inserted += insert_chunk(&client, &statement, chunk, now).await?;
        }
        let what = match kind {
            InsertKind::EventsOnly => "events only",
            InsertKind::WithLatest => "events + deliveries upsert",
        };
        Ok::<_, anyhow::Error>(ProbeResult::new(
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

async fn insert_chunk(
    client: &tokio_postgres::Client,
    statement: &tokio_postgres::Statement,
    chunk: &[(payload::Typed, &str)],
    now: DateTime<Utc>,
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
    Ok(client
        .execute(
            statement,
            &[
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
            ],
        )
        .await?)
}

/// corral's own write path without the broker: `store::write_batch` on one
/// pooled connection, `rows` rows in batches of `batch`, into a fresh database.
/// The gap between this and [`insert`] is the price of corral's statement
/// (typing, fingerprints, the `deliveries` upsert); the gap between this and
/// the worker draining a queue is the price of consuming and acknowledging.
pub async fn store(server_url: &str, rows: usize, batch: usize) -> anyhow::Result<ProbeResult> {
    let db = crate::database::TestDatabase::migrated().await;
    let _ = server_url;
    let pool = corral_worker::db::pool(
        &corral_worker::db::Target::new(&db.url, None, Duration::from_secs(30))?,
        1,
    )?;
    let mut client = pool.get().await?;
    let name = crate::unique_name("store");
    let messages: Vec<corral_worker::store::Incoming> = (0..rows)
        .map(|i| corral_worker::store::Incoming {
            body: body(&name, i).into_bytes(),
            routing_key: "dropcowboy.sms".into(),
            envelope: corral_shared::envelope::Envelope {
                message_id: Some(Uuid::now_v7()),
                received_at: Some(Utc::now()),
            },
        })
        .collect();
    let started = Instant::now();
    let mut stored = 0u64;
    for chunk in messages.chunks(batch) {
        stored += corral_worker::store::write_batch(&mut client, chunk)
            .await?
            .stored as u64;
    }
    Ok(ProbeResult::new(
        format!("corral store::write_batch, {batch}-row batches, 1 connection"),
        stored,
        started.elapsed(),
    ))
}
