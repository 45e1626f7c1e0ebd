//! The publish probe: confirmed publishes per second with a fixed window in
//! flight.

use std::time::{Duration, Instant};

use corral_contract::envelope::Kind;
use corral_runtime::config::AmqpSettings;
use futures_util::{StreamExt, stream::FuturesUnordered};

use corral_testkit::broker;

use super::*;

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
                        publish_as_ingress(&channel, &exchange, Kind::Sms.routing_key(), &body)
                            .await?;
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
        broker::delete_topology(&topology, &channels[0], timeout).await?;
    }
    amqp::close(&connection, timeout, "probe done").await;
    Ok(ProbeResult::new(
        ProbeKey::Publish {
            in_flight: probe.in_flight,
            channels: probe.channels,
        },
        format!(
            "bare lapin publish, {} in flight, {} channel(s)",
            probe.in_flight, probe.channels
        ),
        confirmed,
        elapsed,
    ))
}
