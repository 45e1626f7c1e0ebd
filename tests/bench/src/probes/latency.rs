//! The confirm-latency probe, and a bare consumer that keeps the queue empty.

use std::time::Duration;

use anyhow::Context as _;
use corral_contract::envelope::Kind;
use corral_runtime::{
    amqp::{self, Topology},
    config::AmqpSettings,
};
use futures_util::{StreamExt, stream::FuturesUnordered};
use serde::Serialize;

use corral_testkit::broker;

use super::*;

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
                let confirm = publish_as_ingress(channel, &exchange, Kind::Sms.routing_key(), body).await?;
                pending.push(Box::pin(async move {
                    (next, tokio::time::timeout(Duration::from_secs(30), confirm).await)
                }));
                sent += 1;
            }
        }
    }
    drain.stop().await;
    broker::delete_topology(&topology, &channels[0], timeout).await?;
    amqp::close(&connection, timeout, "probe done").await;
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
        amqp::close(&self.connection, Duration::from_secs(10), "drain done").await;
        self.task.abort();
    }
}
