//! Limit probes: how fast the broker and the database themselves go on this
//! machine, with corral's own payloads and topology but none of its code in
//! the way. corral's throughput is reported as a ratio of these.
//!
//! - [`publish`](fn@publish): a bare lapin client publishing persistent messages with
//!   publisher confirms into the same quorum queue, with a fixed window of
//!   publishes in flight.
//! - [`confirm_latency`]: the same client publishing at a fixed rate (open
//!   loop), timing each confirm from its scheduled send: the broker's own
//!   answer latency, the floor under ingress's.
//! - [`serve_http_ceiling`]: a bare actix-web server with ingress's routes
//!   that reads each body and answers 200, no broker: the HTTP ceiling.
//! - [`insert`](fn@insert): a bare tokio-postgres client inserting the same typed rows
//!   into the same `delivery_events` table (same indexes) with one set-based
//!   `INSERT … SELECT FROM unnest(…) ON CONFLICT DO NOTHING` per batch.
//!
//! # Layout
//!
//! - `http`: The HTTP ceiling server.
//! - [`insert`](mod@insert): The insert and store probes: rows per second into a fresh
//!   database.
//! - [`latency`]: The confirm-latency probe, and a bare consumer that keeps the
//!   queue empty.
//! - [`publish`](mod@publish): The publish probe: confirmed publishes per second with a
//!   fixed window in flight.

mod http;
mod insert;
mod latency;
mod publish;
mod spool;

pub use self::{http::*, insert::*, latency::*, publish::*, spool::*};

use std::time::Duration;

use chrono::Utc;
use corral_contract::envelope;
use corral_runtime::{
    amqp::{self, Topology},
    config::AmqpSettings,
};
use lapin::options::ConfirmSelectOptions;
use serde::Serialize;
use uuid::Uuid;

/// Which probe, with its settings: what the report looks results up by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(tag = "probe", rename_all = "snake_case")]
pub enum ProbeKey {
    /// [`publish`](fn@publish).
    Publish {
        /// Publishes awaiting a confirm at once.
        in_flight: usize,
        /// Confirm-mode channels.
        channels: usize,
    },
    /// [`insert`](fn@insert).
    Insert {
        /// What is written.
        kind: InsertKind,
        /// Rows per statement.
        batch: usize,
    },
    /// [`store`].
    Store {
        /// Rows per batch.
        batch: usize,
    },
    /// [`spool_insert`].
    SpoolInsert {
        /// Rows per statement.
        batch: usize,
    },
}

/// What a probe measured.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct ProbeResult {
    /// Which probe; absent in results written before probes had keys.
    #[serde(default)]
    pub key: Option<ProbeKey>,
    /// What was measured, for people, e.g. `publish 64 in flight, 4 channels`.
    pub name: String,
    /// Operations completed (messages confirmed, rows inserted).
    pub count: u64,
    /// Wall time of the measurement.
    pub seconds: f64,
    /// `count / seconds`.
    pub per_second: f64,
}

impl ProbeResult {
    fn new(key: ProbeKey, name: String, count: u64, elapsed: Duration) -> Self {
        let seconds = elapsed.as_secs_f64();
        Self {
            key: Some(key),
            name,
            count,
            seconds,
            per_second: count as f64 / seconds,
        }
    }
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
    amqp::publish_mandatory(
        channel,
        exchange.into(),
        routing_key.into(),
        body,
        amqp::properties(&envelope::Metadata::single(Uuid::now_v7(), Utc::now())),
    )
    .await
}
