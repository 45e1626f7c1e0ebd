//! A quorum queue as a source: a consumer with a prefetch on its own
//! connection, acknowledged with `multiple` acks. The prefetch is what
//! [`budget`](super::budget) derives from the byte budget and the largest
//! message; a message larger than that is logged, since it breaks the bound.
//! [`RabbitMqConnector`] reconnects with backoff and consumes one queue per
//! session.

use std::time::Duration;

use corral_runtime::{
    amqp::{self, AmqpError, Topology, deadline},
    config::AmqpSettings,
    telemetry::metrics,
};
use futures_util::StreamExt;
use lapin::{
    Acker, Channel, Connection, Consumer,
    options::{BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicQosOptions},
    types::FieldTable,
};
use tokio_util::sync::CancellationToken;

use super::{Ack, Connector, Delivery, Source, SourceError, shards::Links, unpack};

impl From<AmqpError> for SourceError {
    fn from(err: AmqpError) -> Self {
        Self::Transport(Box::new(err))
    }
}

/// The delivery stream reported an error.
#[derive(Debug, thiserror::Error)]
#[error("the consumer failed")]
struct ConsumerFailed(#[source] lapin::Error);

/// Opens sessions on one of corral's queues, each on a new connection with
/// the topology declared.
#[derive(Debug)]
pub struct RabbitMqConnector {
    /// Broker and names.
    pub amqp: AmqpSettings,
    /// The names under the prefix.
    pub topology: Topology,
    /// The queue consumed.
    pub queue: String,
    /// Messages RabbitMQ sends before an acknowledgement.
    pub prefetch: u16,
    /// The largest message the prefetch is sized for.
    pub largest: u64,
    /// It is the queue behind the alternate exchange.
    pub unroutable: bool,
    /// Told whether the link is up; `None` for the unroutable queue and
    /// left-over shards, normally idle and so not what `/readyz` reports as
    /// the broker's health.
    pub health: Option<Links>,
}

impl Connector for RabbitMqConnector {
    type Source = RabbitMqSource;
    const TRANSPORT: &'static str = "RabbitMQ";
    const COMES_BACK: &'static str = "RabbitMQ redelivers them";

    fn queue(&self) -> &str {
        &self.queue
    }

    async fn open(
        &self,
        shutdown: &CancellationToken,
    ) -> Option<Result<RabbitMqSource, SourceError>> {
        let connected = amqp::reconnect(shutdown, &self.amqp, || {
            RabbitMqSource::connect(&self.amqp, &self.topology)
        })
        .await?;
        let consuming = connected
            .consume(&self.queue, self.prefetch, self.largest, self.unroutable)
            .await;
        if consuming.is_ok() {
            if let Some(health) = &self.health {
                health.set(true);
            }
            tracing::info!(queue = self.queue, prefetch = self.prefetch, "consuming");
        }
        Some(consuming)
    }

    async fn close(&self, source: RabbitMqSource) {
        if let Some(health) = &self.health {
            health.set(false);
        }
        source.close().await;
    }

    fn retry_max(&self) -> Duration {
        self.amqp.reconnect_max()
    }
}

/// A consumer on one of corral's queues (`<prefix>.delivery-status`, a
/// shard, or `<prefix>.unroutable`).
#[derive(Debug)]
pub struct RabbitMqSource {
    connection: Connection,
    channel: Channel,
    consumer: Consumer,
    /// Consumer tag, to cancel it at shutdown.
    tag: String,
    /// Deadline of each broker operation.
    timeout: Duration,
    /// Consuming the unroutable queue: every delivery is counted and the
    /// first one logged, since each means the topology was damaged.
    unroutable: bool,
    /// Deliveries so far in this session.
    delivered: u64,
    /// Messages RabbitMQ sends before an acknowledgement.
    prefetch: u16,
    /// The largest message the prefetch was sized for.
    largest: u64,
    /// A larger one has been logged this session.
    oversize_logged: bool,
    /// The consumer was cancelled by [`Source::stop`]: its end is the drain's.
    stopping: bool,
}

/// Acknowledges a delivery tag and every one before it on its channel.
pub struct RabbitMqAck {
    /// The delivery tag, for logs.
    tag: u64,
    acker: Acker,
    /// `CORRAL_AMQP_CONNECT_TIMEOUT_MS`, the deadline of each broker operation.
    timeout: Duration,
}

impl std::fmt::Debug for RabbitMqAck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "delivery tag {}", self.tag)
    }
}

/// A connection with the topology declared, not consuming yet.
#[derive(Debug)]
pub struct Connected {
    connection: Connection,
    channel: Channel,
    timeout: Duration,
}

impl RabbitMqSource {
    /// Connects and declares the topology.
    pub async fn connect(
        settings: &AmqpSettings,
        topology: &Topology,
    ) -> Result<Connected, SourceError> {
        let (connection, channel) =
            amqp::connect_and_declare(settings, topology, "corral-worker").await?;
        Ok(Connected {
            connection,
            channel,
            timeout: settings.connect_timeout(),
        })
    }

    /// Closes the connection; RabbitMQ gives back whatever was not acknowledged.
    pub async fn close(self) {
        amqp::close(&self.connection, self.timeout, "corral-worker closing").await;
    }
}

impl Connected {
    /// Starts consuming `queue` with `prefetch`, sized for messages of at
    /// most `largest` bytes (`unroutable`: it is the queue behind the
    /// alternate exchange); on failure the connection is closed.
    pub async fn consume(
        self,
        queue: &str,
        prefetch: u16,
        largest: u64,
        unroutable: bool,
    ) -> Result<RabbitMqSource, SourceError> {
        let Self {
            connection,
            channel,
            timeout,
        } = self;
        match consume(&channel, queue, prefetch, timeout).await {
            Ok((consumer, tag)) => Ok(RabbitMqSource {
                connection,
                channel,
                consumer,
                tag,
                timeout,
                unroutable,
                delivered: 0,
                prefetch,
                largest,
                oversize_logged: false,
                stopping: false,
            }),
            Err(err) => {
                amqp::close(&connection, timeout, "corral-worker closing").await;
                Err(err.into())
            }
        }
    }
}

async fn consume(
    channel: &Channel,
    queue: &str,
    prefetch: u16,
    timeout: Duration,
) -> Result<(Consumer, String), amqp::AmqpError> {
    deadline(
        "setting the prefetch",
        timeout,
        channel.basic_qos(prefetch, BasicQosOptions::default()),
    )
    .await?;
    let tag = format!(
        "corral-worker-{}-{}",
        std::process::id(),
        uuid::Uuid::now_v7().simple()
    );
    let consumer = deadline(
        "starting the consumer",
        timeout,
        channel.basic_consume(
            queue.into(),
            tag.as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        ),
    )
    .await?;
    Ok((consumer, tag))
}

impl Source for RabbitMqSource {
    type Ack = RabbitMqAck;

    async fn next(&mut self) -> Option<Result<Delivery<RabbitMqAck>, SourceError>> {
        let delivery = match self.consumer.next().await {
            Some(Ok(delivery)) => delivery,
            Some(Err(err)) => {
                return Some(Err(SourceError::Transport(Box::new(ConsumerFailed(err)))));
            }
            None if self.stopping => return None,
            None => {
                return Some(Err(SourceError::Closed(
                    "RabbitMQ cancelled the consumer (queue deleted?)",
                )));
            }
        };
        self.delivered += 1;
        if delivery.data.len() as u64 > self.largest && !self.oversize_logged {
            self.oversize_logged = true;
            tracing::warn!(
                bytes = delivery.data.len(),
                largest = self.largest,
                "a message is larger than CORRAL_PUBLISH_BATCH_MAX_BYTES and \
                 CORRAL_MAX_BODY_BYTES allow: the prefetch, sized for those, no longer keeps \
                 the messages in hand within CORRAL_MAX_IN_HAND_BYTES (do the worker's \
                 settings match ingress's?)"
            );
        }
        if self.unroutable {
            metrics::worker_unroutable();
            if self.delivered == 1 {
                tracing::warn!(
                    "webhooks are arriving through the unroutable queue: the webhooks exchange \
                     could not route them to the main queue (was it or its binding deleted?). \
                     They are stored all the same; the next reconnect declares the queue and \
                     binding again"
                );
            }
        }
        Some(Ok(Delivery {
            contents: unpack::contents(
                &amqp::metadata(&delivery.properties),
                delivery.routing_key.as_str(),
                delivery.data,
            ),
            ack: RabbitMqAck {
                tag: delivery.delivery_tag,
                acker: delivery.acker,
                timeout: self.timeout,
            },
        }))
    }

    fn limit(&self) -> Option<usize> {
        Some(usize::from(self.prefetch))
    }

    async fn stop(&mut self) -> Result<(), SourceError> {
        self.stopping = true;
        deadline(
            "cancelling the consumer",
            self.timeout,
            self.channel
                .basic_cancel(self.tag.as_str().into(), BasicCancelOptions::default()),
        )
        .await?;
        Ok(())
    }
}

impl Ack for RabbitMqAck {
    async fn ack(self) -> Result<(), SourceError> {
        let acked = deadline(
            "acknowledging a batch",
            self.timeout,
            self.acker.ack(BasicAckOptions { multiple: true }),
        )
        .await?;
        if acked {
            Ok(())
        } else {
            Err(SourceError::Closed(
                "the channel closed before the ack; the batch will be redelivered as duplicates",
            ))
        }
    }

    fn usable(&self) -> bool {
        self.acker.usable()
    }
}
