//! Consuming: batches off the source, one transaction each, acknowledged only
//! after commit.
//!
//! A batch closes at `CORRAL_BATCH_MAX` webhooks or `CORRAL_BATCH_LINGER_MS`
//! after its first message, whichever comes first. It holds whole
//! messages only (an envelope-2 message carries several webhooks, and one
//! large message may take a batch past `CORRAL_BATCH_MAX` alone), so a
//! message is never split across transactions. It is written by
//! [`store::write_batch`](crate::store::write_batch) and acknowledged with
//! the ack of its last delivery, only once the transaction committed. If the
//! database fails for a transient reason, the batch is retried (with backoff)
//! while the messages stay unacknowledged in hand; they are never nacked,
//! since every requeue would count towards the quorum queue's delivery limit.
//! If the link to the buffer dies, the loop opens a new session and the
//! buffer gives back whatever was not acknowledged (RabbitMQ redelivers it,
//! SQS hands it out once its visibility timeout runs out); rows already
//! committed make those redeliveries duplicates.
//!
//! On shutdown the source is stopped, the messages already received are
//! written and acknowledged, and only then does the session close.
//!
//! # Layout
//!
//! - this module: the settings and the one loop of sessions, whatever the
//!   transport ([`Connector`]).
//! - `batcher`: one session: filling batches, writing several at once,
//!   acknowledging them in order, draining at shutdown.
//! - `write`: one batch from its deliveries to its acknowledgement.

mod batcher;
mod write;

use std::time::Duration;

use corral_runtime::{admin::Health, config::AmqpSettings, error_chain, retry};
use deadpool_postgres::Pool;
use futures_util::future::join_all;
use tokio_util::sync::CancellationToken;

use crate::source::{
    Connector, SourceError, Transport, budget::Prefetch, shards::Consumers, sqs::SqsConnector,
};

/// What the consumer needs to know.
#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    /// Broker and names, with `CORRAL_BUFFER=rabbitmq`.
    pub amqp: AmqpSettings,
    /// How the SQS source receives, with `CORRAL_BUFFER=sqs`.
    pub sqs: crate::source::sqs::Settings,
    /// The `basic.qos` prefetch of each consumer.
    pub prefetch: Prefetch,
    /// `CORRAL_PREFETCH`: a prefetch below it is the byte budget's.
    pub prefetch_cap: u16,
    /// The largest message the prefetch is sized for.
    pub largest_message: u64,
    /// Batches written at once.
    pub writers: usize,
    /// Whether stored webhooks get a result-event outbox row.
    pub result_events: bool,
    /// Poked after a commit that stored events, when result events are on.
    pub results: crate::results::Wake,
    /// Webhooks per batch at most, unless one message holds more.
    pub batch_max: usize,
    /// Bytes of bodies per batch at most, unless one message holds more.
    pub batch_max_bytes: usize,
    /// How long a batch waits for more messages after its first.
    pub batch_linger: Duration,
    /// Cap of the database retry backoff.
    pub db_retry_max: Duration,
    /// Overall deadline of one batch write attempt.
    pub db_timeout: Duration,
    /// Bound on finishing the messages in hand at shutdown.
    pub shutdown_timeout: Duration,
}

/// Why a consuming session ended.
#[derive(Debug, thiserror::Error)]
enum SessionEnd {
    /// Shutdown finished cleanly: everything received was committed and acked.
    #[error("drained")]
    Drained,
    /// Shutdown's deadline passed with messages still in hand (the database is
    /// down); they stay unacknowledged and the buffer gives them out again.
    #[error("shutdown deadline passed with {0} messages uncommitted")]
    DrainTimedOut(usize),
    /// The source failed; reconnect.
    #[error(transparent)]
    Source(#[from] SourceError),
}

/// Consumes `transport` until `shutdown`, opening a new session whenever
/// one fails. With RabbitMQ: the main queue (each of its shards), and beside
/// it the queue of webhooks the exchange could not route (its alternate
/// exchange), so those land in the database too; with SQS, the queue.
pub async fn run(
    transport: Transport,
    settings: ConsumerSettings,
    pool: Pool,
    health: Health,
    shutdown: CancellationToken,
) {
    tracing::info!(writers = settings.writers, "consumer starting");
    match transport {
        Transport::RabbitMq => {
            let consumers = Consumers {
                amqp: &settings.amqp,
                prefetch: settings.prefetch,
                largest: settings.largest_message,
                health: &health,
            };
            let Some(queues) = consumers.connectors(&shutdown).await else {
                return;
            };
            join_all(
                queues
                    .iter()
                    .map(|queue| consume(queue, &settings, &pool, &health, &shutdown)),
            )
            .await;
        }
        Transport::Sqs(queue) => {
            let connector = SqsConnector {
                queue,
                settings: settings.sqs.clone(),
                health: health.clone(),
            };
            consume(&connector, &settings, &pool, &health, &shutdown).await;
        }
    }
}

/// The one consuming loop: sessions from `connector` until shutdown has
/// drained one, or its deadline passed.
async fn consume<C: Connector>(
    connector: &C,
    settings: &ConsumerSettings,
    pool: &Pool,
    health: &Health,
    shutdown: &CancellationToken,
) {
    let queue = connector.queue();
    loop {
        let Some(opened) = connector.open(shutdown).await else {
            return;
        };
        let end = match opened {
            Ok(mut source) => {
                let end = batcher::session(settings, &mut source, pool, health, shutdown).await;
                connector.close(source).await;
                end
            }
            Err(err) => SessionEnd::Source(err),
        };
        match end {
            SessionEnd::Drained => {
                tracing::info!(
                    queue,
                    "consumer drained: every message received was committed and acknowledged"
                );
                return;
            }
            SessionEnd::DrainTimedOut(_) => {
                tracing::warn!(
                    queue,
                    error = %end,
                    "stopping with messages uncommitted; {}",
                    C::COMES_BACK
                );
                return;
            }
            SessionEnd::Source(_) => tracing::warn!(
                queue,
                error = error_chain(&end),
                "lost the {} session; opening another",
                C::TRANSPORT
            ),
        }
        retry::pause(shutdown, connector.retry_max()).await;
    }
}
