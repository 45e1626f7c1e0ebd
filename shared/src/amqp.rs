//! RabbitMQ: connecting with deadlines, the topology, and reconnect backoff.
//!
//! The client library can hang when a connection dies under it, so every
//! broker operation here runs under [`deadline`]. Both binaries declare the
//! whole topology idempotently each time they (re)connect, so whichever
//! starts first creates it and a broker that lost it gets it back.

use std::{future::Future, str::FromStr, time::Duration};

use backon::{BackoffBuilder, ExponentialBuilder};
use lapin::{
    Channel, Connection, ConnectionProperties, ExchangeKind,
    options::{
        ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
        QueueDeleteOptions,
    },
    tcp::OwnedTLSConfig,
    types::{AMQPValue, FieldTable, LongString, ShortString},
    uri::{AMQPScheme, AMQPUri},
};

use crate::config::AmqpSettings;

/// What can go wrong talking to the broker.
#[derive(Debug, thiserror::Error)]
pub enum AmqpError {
    /// `CORRAL_AMQP_URL` does not parse; a configuration error, not retried.
    #[error("invalid AMQP URL: {0}")]
    InvalidUrl(String),
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
    /// `CORRAL_AMQP_CA_FILE` is set but cannot be used.
    #[error("CORRAL_AMQP_CA_FILE {path}: {reason}")]
    CaFile {
        /// The file.
        path: String,
        /// What is wrong with it.
        reason: String,
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

/// Parses `CORRAL_AMQP_URL`; binaries call it at start so a typo fails fast
/// instead of looking like an unreachable broker.
pub fn parse_url(url: &str) -> Result<AMQPUri, AmqpError> {
    AMQPUri::from_str(url).map_err(AmqpError::InvalidUrl)
}

/// Checks the URL and the CA file together at start: a CA file next to a
/// plain `amqp://` URL would otherwise be silently ignored.
pub fn check_settings(settings: &AmqpSettings) -> Result<(), AmqpError> {
    let uri = parse_url(&settings.url)?;
    if let Some(path) = &settings.ca_file {
        if uri.scheme != AMQPScheme::AMQPS {
            return Err(AmqpError::CaFile {
                path: path.display().to_string(),
                reason:
                    "set, but CORRAL_AMQP_URL is not amqps://: use amqps:// (or unset the CA file)"
                        .into(),
            });
        }
        tls_config(settings)?;
    }
    Ok(())
}

/// The client's TLS settings: the CA file's certificates (if any) on top of
/// the system's roots; the server's certificate and host name are verified.
fn tls_config(settings: &AmqpSettings) -> Result<OwnedTLSConfig, AmqpError> {
    let cert_chain = match &settings.ca_file {
        None => None,
        Some(path) => Some(
            crate::config::read_ca_bundle(path)
                .map_err(|reason| AmqpError::CaFile {
                    path: path.display().to_string(),
                    reason,
                })?
                .pem,
        ),
    };
    Ok(OwnedTLSConfig {
        identity: None,
        cert_chain,
    })
}

/// Connects to the broker named by `settings`, with the heartbeat and the
/// connect deadline applied. `name` shows in the management UI.
pub async fn connect(settings: &AmqpSettings, name: &str) -> Result<Connection, AmqpError> {
    let mut uri = parse_url(&settings.url)?;
    if uri.query.heartbeat.is_none() {
        uri.query.heartbeat = Some(settings.heartbeat_secs);
    }
    let timeout = settings.connect_timeout();
    let address = format!("{}:{}", uri.authority.host, uri.authority.port);
    // Each failed `Connection::connect` leaves memory behind in the client
    // library; a plain TCP probe first keeps a long outage from growing the
    // process while the port is closed.
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(&address)).await {
        Ok(Ok(_probe)) => {}
        Ok(Err(source)) => return Err(AmqpError::Unreachable { address, source }),
        Err(_) => {
            return Err(AmqpError::Timeout {
                operation: "TCP connect",
                timeout,
            });
        }
    }
    let properties =
        ConnectionProperties::default().with_connection_name(LongString::from(name.to_owned()));
    let tls = tls_config(settings)?;
    let runtime = lapin::runtime::default_runtime().map_err(|source| AmqpError::Broker {
        operation: "connection",
        source,
    })?;
    deadline(
        "connection",
        timeout,
        Connection::connect_uri_with_config(uri, properties, tls, runtime),
    )
    .await
}

/// The names corral uses on the broker, all under one prefix.
#[derive(Debug, Clone)]
pub struct Topology {
    /// `CORRAL_AMQP_PREFIX`: keeps tests and tenants apart on one broker.
    prefix: String,
    /// `x-delivery-limit` of the main queue.
    delivery_limit: u32,
}

impl Topology {
    /// The topology for `settings`.
    pub fn new(settings: &AmqpSettings) -> Self {
        Self {
            prefix: settings.prefix.clone(),
            delivery_limit: settings.delivery_limit,
        }
    }

    /// Topic exchange webhooks are published to.
    pub fn exchange(&self) -> String {
        format!("{}.webhooks", self.prefix)
    }

    /// Quorum queue the worker consumes.
    pub fn queue(&self) -> String {
        format!("{}.delivery-status", self.prefix)
    }

    /// Exchange the main queue dead-letters to.
    pub fn dead_letter_exchange(&self) -> String {
        format!("{}.dead-letter", self.prefix)
    }

    /// Queue holding dead-lettered messages until an operator replays them.
    pub fn dead_letter_queue(&self) -> String {
        format!("{}.dead-letter", self.prefix)
    }

    /// Arguments of the main queue. Any difference from an existing queue of
    /// the same name makes the broker refuse the declaration
    /// (PRECONDITION_FAILED), which [`Topology::declare`] reports as such.
    fn queue_arguments(&self) -> FieldTable {
        let mut args = FieldTable::default();
        args.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
        args.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongLongInt(i64::from(self.delivery_limit)),
        );
        args.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(self.dead_letter_exchange().into()),
        );
        // At-least-once dead-lettering keeps a message in the source queue until
        // the dead-letter queue has confirmed it; RabbitMQ requires
        // reject-publish overflow for it.
        args.insert(
            "x-dead-letter-strategy".into(),
            AMQPValue::LongString("at-least-once".into()),
        );
        args.insert(
            "x-overflow".into(),
            AMQPValue::LongString("reject-publish".into()),
        );
        args
    }

    /// Declares exchanges, queues and bindings; idempotent.
    pub async fn declare(&self, channel: &Channel, timeout: Duration) -> Result<(), AmqpError> {
        let durable_exchange = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        let durable_queue = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        let mut quorum = FieldTable::default();
        quorum.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );

        deadline(
            "declaring the dead-letter exchange",
            timeout,
            channel.exchange_declare(
                self.dead_letter_exchange().into(),
                ExchangeKind::Fanout,
                durable_exchange,
                FieldTable::default(),
            ),
        )
        .await?;
        deadline(
            "declaring the dead-letter queue",
            timeout,
            channel.queue_declare(self.dead_letter_queue().into(), durable_queue, quorum),
        )
        .await?;
        deadline(
            "binding the dead-letter queue",
            timeout,
            channel.queue_bind(
                self.dead_letter_queue().into(),
                self.dead_letter_exchange().into(),
                ShortString::from(""),
                QueueBindOptions::default(),
                FieldTable::default(),
            ),
        )
        .await?;
        deadline(
            "declaring the webhooks exchange",
            timeout,
            channel.exchange_declare(
                self.exchange().into(),
                ExchangeKind::Topic,
                durable_exchange,
                FieldTable::default(),
            ),
        )
        .await?;
        deadline(
            "declaring the delivery-status queue",
            timeout,
            channel.queue_declare(self.queue().into(), durable_queue, self.queue_arguments()),
        )
        .await?;
        deadline(
            "binding the delivery-status queue",
            timeout,
            channel.queue_bind(
                self.queue().into(),
                self.exchange().into(),
                "dropcowboy.#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            ),
        )
        .await?;
        Ok(())
    }

    /// Deletes everything [`Topology::declare`] made (tests and teardown).
    pub async fn delete(&self, channel: &Channel, timeout: Duration) -> Result<(), AmqpError> {
        for queue in [self.queue(), self.dead_letter_queue()] {
            deadline(
                "deleting a queue",
                timeout,
                channel.queue_delete(queue.into(), QueueDeleteOptions::default()),
            )
            .await?;
        }
        for exchange in [self.exchange(), self.dead_letter_exchange()] {
            deadline(
                "deleting an exchange",
                timeout,
                channel.exchange_delete(exchange.into(), ExchangeDeleteOptions::default()),
            )
            .await?;
        }
        Ok(())
    }
}

/// Connects, opens a channel and declares the topology: what both binaries do
/// on every (re)connect.
pub async fn connect_and_declare(
    settings: &AmqpSettings,
    topology: &Topology,
    name: &str,
) -> Result<(Connection, Channel), AmqpError> {
    let timeout = settings.connect_timeout();
    let connection = connect(settings, name).await?;
    let declared = async {
        let channel = deadline("opening a channel", timeout, connection.create_channel()).await?;
        topology.declare(&channel, timeout).await?;
        Ok::<_, AmqpError>(channel)
    }
    .await;
    match declared {
        Ok(channel) => Ok((connection, channel)),
        Err(err) => {
            // Do not leave a half-set-up connection open on the broker.
            let _ =
                tokio::time::timeout(timeout, connection.close(200, "setup failed".into())).await;
            Err(err)
        }
    }
}

/// Delays between reconnect attempts: 100 ms doubling up to `max`, jittered so
/// many replicas do not reconnect in lock-step, and never giving up.
pub fn reconnect_backoff(max: Duration) -> impl Iterator<Item = Duration> + Send {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(max)
        .with_jitter()
        .without_max_times()
        .build()
}

/// Reads a whole error chain into one line, for logs.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut line = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        line.push_str(": ");
        line.push_str(&cause.to_string());
        source = cause.source();
    }
    line
}
