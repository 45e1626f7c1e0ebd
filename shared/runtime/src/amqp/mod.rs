//! RabbitMQ: connecting with deadlines, the topology, publishing with
//! confirms, and closing.
//!
//! The client library can hang when a connection dies under it, so every
//! broker operation here runs under [`deadline`]. Both binaries declare the
//! whole topology idempotently each time they (re)connect, so whichever
//! starts first creates it and a broker that lost it gets it back.
//!
//! # Layout
//!
//! - `brokers`: the list of broker URLs, parsed, and the rotation over it.
//! - `connect`: URL and TLS checks, connecting, reconnecting until shutdown,
//!   closing.
//! - `topology`: the names under `CORRAL_AMQP_PREFIX` and their declaration.
//! - `shards`: the queue(s) behind the webhooks exchange, `CORRAL_AMQP_QUEUES`.
//! - `publish`: a mandatory publish and what its confirm means.
//! - `properties`: the envelope's metadata as AMQP properties and headers,
//!   and back (the AMQP edge of the transport-neutral contract).

mod brokers;
mod connect;
mod properties;
mod publish;
mod shards;
mod topology;

use std::{future::Future, time::Duration};

pub use brokers::{Rotation, parse_url, parse_urls};
pub use connect::{check_settings, close, connect, connect_and_declare, reconnect};
pub use properties::{metadata, properties, result_properties};
pub use publish::{
    PublishOutcomeError, Refused, check_confirmation, check_confirmations, publish_confirmed,
    publish_mandatory,
};
pub use shards::{MAX_QUEUES, SHARD_HEADER, ShardPicker};
pub use topology::Topology;

use crate::config::CaBundleError;

/// What can go wrong talking to the broker.
#[derive(Debug, thiserror::Error)]
pub enum AmqpError {
    /// `CORRAL_AMQP_URL` (or an entry of its list) does not parse; a
    /// configuration error, not retried.
    #[error("invalid CORRAL_AMQP_URL{} {url}: {reason}", brokers::entry_note(.entry, .of))]
    InvalidUrl {
        /// The URL, its password replaced by `***`.
        url: String,
        /// The parser's reason, the URL in it redacted likewise.
        reason: String,
        /// Which entry of the list, from 1.
        entry: usize,
        /// How many entries the list has.
        of: usize,
    },
    /// The broker did not answer within the deadline.
    #[error("RabbitMQ did not answer {operation} within {timeout:?}")]
    Timeout {
        /// What we were waiting for.
        operation: &'static str,
        /// The deadline that passed.
        timeout: Duration,
    },
    /// The TCP port refused or could not be reached.
    #[error("cannot reach RabbitMQ at {address}")]
    Unreachable {
        /// `host:port`, without credentials.
        address: String,
        /// The socket error.
        #[source]
        source: std::io::Error,
    },
    /// `CORRAL_AMQP_CA_FILE` cannot be read as a CA bundle.
    #[error("CORRAL_AMQP_CA_FILE {path}")]
    CaFile {
        /// The file.
        path: String,
        /// What is wrong with it.
        #[source]
        source: CaBundleError,
    },
    /// `CORRAL_AMQP_CA_FILE` is set next to a plain `amqp://` URL, where it
    /// would be silently ignored.
    #[error(
        "CORRAL_AMQP_CA_FILE {path} is set, but CORRAL_AMQP_URL is not amqps://: use amqps:// \
         (or unset the CA file)"
    )]
    CaFileWithoutTls {
        /// The file.
        path: String,
    },
    /// The broker or the client library reported an error.
    #[error("RabbitMQ refused {operation}")]
    Broker {
        /// What we tried.
        operation: &'static str,
        /// The library's error, with the broker's reply text where there is one.
        #[source]
        source: lapin::Error,
    },
}

impl AmqpError {
    /// Whether the broker refused a declaration because the entity exists
    /// with other properties or arguments (PRECONDITION_FAILED, 406).
    pub fn is_precondition_failed(&self) -> bool {
        self.is_reply(406)
    }

    /// Whether the broker found no such queue or exchange (NOT_FOUND, 404).
    pub fn is_not_found(&self) -> bool {
        self.is_reply(404)
    }

    fn is_reply(&self, code: u16) -> bool {
        matches!(
            self,
            AmqpError::Broker { source, .. }
                if matches!(source.kind(), lapin::ErrorKind::ProtocolError(err) if err.get_id() == code)
        )
    }
}

/// Runs a broker operation under a deadline, naming it in the error.
pub async fn deadline<T>(
    operation: &'static str,
    timeout: Duration,
    fut: impl Future<Output = lapin::Result<T>>,
) -> Result<T, AmqpError> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(source)) => Err(AmqpError::Broker { operation, source }),
        Err(_) => Err(AmqpError::Timeout { operation, timeout }),
    }
}
