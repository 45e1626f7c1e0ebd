//! The result-event relay: a worker with `CORRAL_RESULT_EVENTS=true`
//! publishing into a durable quorum queue bound to
//! `<prefix>.delivery-results` (as a customer's service binds one). Either
//! alone, emptying a pre-filled outbox with its main queue empty, or while
//! the worker drains a pre-filled main queue and so fills the outbox itself
//! (the burst the relay must keep up with).

use std::time::{Duration, Instant};

use corral_runtime::{
    amqp,
    telemetry::metrics::{WORKER_MESSAGES, WORKER_RESULT_EVENTS_PUBLISHED},
};
use corral_testkit::{
    broker, config, database,
    process::{Process, ProcessConfig},
    unique_name,
};
use lapin::{
    options::{QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions},
    types::{AMQPValue, FieldTable},
};
use serde::Serialize;

use crate::probes;

use super::{runs::prefill, sampler::Sampler};

const TIMEOUT: Duration = Duration::from_secs(30);

/// Webhooks per message of the drain's pre-fill, as a coalescing ingress packs them.
const PREFILL_BATCH: usize = 100;

/// Stored events with their outbox rows, as the worker's batch statement
/// writes them: one typical SMS success each, distinct fingerprints.
const FILL: &str = "
INSERT INTO delivery_events (fingerprint, message_id, kind, drop_id, phone_number, attempt_date,
    status, reason, dnc, spam, product_cost, compliance_fee, tts_fee, foreign_id, payload,
    received_at)
SELECT decode(md5('relay-' || i), 'hex'), gen_random_uuid(), 'sms', 'relay-' || i,
       '+15552224444', now(), 'success', NULL, false, false, 0.099, 0.0029, 0,
       'order-' || i, '{}'::jsonb, now()
FROM generate_series(1, $1::bigint) AS i";
const FILL_OUTBOX: &str = "
INSERT INTO delivery_results_outbox (event_id, attempt_date, latest, suppressions, new_suppressions)
SELECT id, attempt_date, true, '{}', '{}' FROM delivery_events ORDER BY id";

/// What one relay run measured.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct RelayRun {
    /// Events published in all.
    pub events: usize,
    /// Whether the worker stored them meanwhile (else the outbox was pre-filled).
    pub draining: bool,
    /// Seconds from the first confirmed round to the last.
    pub seconds: f64,
    /// Events confirmed and deleted per second over those seconds.
    pub events_per_sec: f64,
    /// Draining: webhooks stored per second, from start to the last.
    pub stored_per_sec: Option<f64>,
    /// Draining: events published by the time the last webhook was stored.
    pub published_while_storing: Option<usize>,
    /// CPU of the worker, % of one core.
    pub cpu_percent: f64,
    /// Events the bound queue holds at the end: `events` when each was
    /// published once.
    pub queued: u32,
}

/// Publishes `events` result events: from a pre-filled outbox, or, with
/// `drain`, from the webhooks of a pre-filled main queue as the worker stores
/// them; the worker gets `env` besides.
pub async fn relay_run(
    events: usize,
    drain: bool,
    env: &[(String, String)],
) -> anyhow::Result<RelayRun> {
    measure(events, drain, true, env).await
}

/// The drain of [`relay_run`] with result events off: the same pre-fill,
/// database and worker settings, timed by the webhooks stored alone (its
/// `events_per_sec` is 0), so the two divide into what events cost a drain.
pub async fn drain_without_events(events: usize) -> anyhow::Result<RelayRun> {
    let off = [("CORRAL_RESULT_EVENTS".to_owned(), "false".to_owned())];
    measure(events, true, false, &off).await
}

async fn measure(
    events: usize,
    drain: bool,
    events_on: bool,
    env: &[(String, String)],
) -> anyhow::Result<RelayRun> {
    let prefix = unique_name("bench");
    let db = probes::migrated_database().await?;
    fill(&db, &prefix, events, drain).await?;
    let settings = config::amqp(prefix.clone());
    let topology = amqp::Topology::new(&settings);
    let (connection, channel) =
        amqp::connect_and_declare(&settings, &topology, "corral-bench").await?;
    let queue = format!("{prefix}.results.bench");
    bind_quorum_queue(&channel, &topology, &queue).await?;

    let mut config = ProcessConfig::worker(&db.url, &prefix)
        .env("CORRAL_RESULT_EVENTS", "true")
        .env("CORRAL_DB_POOL_SIZE", "4")
        .env("CORRAL_LOG", "warn");
    for (key, value) in env {
        config = config.env(key, value.clone());
    }
    let mut worker = Process::start(config).await;
    let sampler = Sampler::start(worker.pid());
    let timed = time_relay(&worker, events, drain, events_on).await;
    let (cpu_percent, _) = sampler.finish();
    worker.terminate(TIMEOUT).await;
    let queued = channel
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await?;
    amqp::close(&connection, TIMEOUT, "bench done").await;
    broker::delete_prefix(&prefix).await;
    let timed = timed?;
    Ok(RelayRun {
        events,
        draining: drain,
        seconds: timed.seconds,
        events_per_sec: timed.published as f64 / timed.seconds.max(f64::EPSILON),
        stored_per_sec: timed.stored_at.map(|at| events as f64 / at),
        published_while_storing: timed.published_while_storing,
        cpu_percent,
        queued,
    })
}

/// `events` webhooks in the main queue (`drain`), else stored events with
/// their outbox rows.
async fn fill(
    db: &database::TestDatabase,
    prefix: &str,
    events: usize,
    drain: bool,
) -> anyhow::Result<()> {
    let filled = Instant::now();
    let what = if drain {
        prefill(prefix, events, Some(PREFILL_BATCH)).await?;
        "webhooks queued"
    } else {
        let client = db.client().await;
        client.execute(FILL, &[&(events as i64)]).await?;
        client.execute(FILL_OUTBOX, &[]).await?;
        client.batch_execute("VACUUM ANALYZE").await?;
        "events in the outbox"
    };
    let seconds = filled.elapsed().as_secs_f64();
    eprintln!("bench: {events} {what} in {seconds:.1} s");
    Ok(())
}

/// A durable quorum queue bound to the result events' exchange.
async fn bind_quorum_queue(
    channel: &lapin::Channel,
    topology: &amqp::Topology,
    queue: &str,
) -> anyhow::Result<()> {
    topology.declare_delivery_results(channel, TIMEOUT).await?;
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            arguments,
        )
        .await?;
    channel
        .queue_bind(
            queue.into(),
            topology.delivery_results().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok(())
}

/// What [`time_relay`] saw.
struct Timed {
    /// Events published after the first round was seen.
    published: usize,
    /// Seconds they took.
    seconds: f64,
    /// Seconds from the start to the last webhook stored (draining).
    stored_at: Option<f64>,
    published_while_storing: Option<usize>,
}

/// Follows the worker's own counters every 50 ms (a `count(*)` of the
/// outbox that often would compete with the relay for the same two cores)
/// until `events` are published, or with `events_on` false, stored.
async fn time_relay(
    worker: &Process,
    events: usize,
    drain: bool,
    events_on: bool,
) -> anyhow::Result<Timed> {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(1800);
    let stored_series = format!(r#"{WORKER_MESSAGES}{{outcome="stored"}}"#);
    let mut first: Option<(usize, Instant)> = None;
    let mut stored_at = None;
    loop {
        let (published, stored) = if worker.is_ready().await {
            let metrics = worker.metrics().await;
            let published = metrics.get(WORKER_RESULT_EVENTS_PUBLISHED) as usize;
            (published, metrics.get(&stored_series) as usize)
        } else {
            (0, 0)
        };
        if drain && stored_at.is_none() && stored >= events {
            stored_at = Some((started.elapsed().as_secs_f64(), published));
        }
        if published > 0 && first.is_none() {
            first = Some((published, Instant::now()));
        }
        if !events_on && let Some((at, _)) = stored_at {
            return Ok(Timed {
                published: 0,
                seconds: at,
                stored_at: Some(at),
                published_while_storing: Some(0),
            });
        }
        if let Some((at_first, since)) = first
            && published >= events
        {
            return Ok(Timed {
                published: published - at_first,
                seconds: since.elapsed().as_secs_f64(),
                stored_at: stored_at.map(|(at, _)| at),
                published_while_storing: stored_at.map(|(_, published)| published),
            });
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the worker did not {} {events} in 30 minutes ({published} published, {stored} stored)",
            if events_on {
                "publish the events of"
            } else {
                "store"
            }
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
