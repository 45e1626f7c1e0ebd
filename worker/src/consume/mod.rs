//! Consuming: batches off the source, one transaction each, acknowledged only
//! after commit.
//!
//! A batch closes at `CORRAL_BATCH_MAX` webhooks or `CORRAL_BATCH_LINGER_MS`
//! after its first message, whichever comes first. It holds whole AMQP
//! messages only (an envelope-2 message carries several webhooks, and one
//! large message may take a batch past `CORRAL_BATCH_MAX` alone), so a
//! message is never split across transactions. It is written by
//! [`store::write_batch`](crate::store::write_batch) and acknowledged with
//! the ack of its last delivery, only once the transaction committed. If the
//! database fails for a transient reason, the batch is retried (with backoff)
//! while the messages stay unacknowledged in hand; they are never nacked,
//! since every requeue would count towards the quorum queue's delivery limit.
//! If the broker link dies, the loop reconnects and RabbitMQ redelivers
//! whatever was not acknowledged; rows already committed make those
//! redeliveries duplicates.
//!
//! On shutdown the source is stopped, the messages already received are
//! written and acknowledged, and only then does the connection close.
//!
//! # Layout
//!
//! - this module: the settings and the reconnect loop around sessions.
//! - `batcher`: one session: filling batches, writing several at once,
//!   acknowledging them in order, draining at shutdown.
//! - `write`: one batch from its deliveries to its acknowledgement.

mod batcher;
mod write;

use std::time::Duration;

use corral_shared::{
    admin::Health,
    amqp::{self, Topology},
    config::AmqpSettings,
    error_chain, retry,
};
use deadpool_postgres::Pool;
use tokio_util::sync::CancellationToken;

use crate::source::{
    SourceError,
    budget::Prefetch,
    rabbitmq::RabbitMqSource,
    sqs::{self, SqsSource},
};

/// What the consumer needs to know.
#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    /// Broker and names.
    pub amqp: AmqpSettings,
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
    /// down); they stay unacknowledged and RabbitMQ redelivers them.
    #[error("shutdown deadline passed with {0} messages uncommitted; RabbitMQ will redeliver them")]
    DrainTimedOut(usize),
    /// The source failed; reconnect.
    #[error(transparent)]
    Source(#[from] SourceError),
}

/// Consumes until `shutdown`, reconnecting whenever the broker link fails:
/// the main queue, and beside it the queue of webhooks the exchange could
/// not route (its alternate exchange), so those land in the database too.
pub async fn run(
    settings: ConsumerSettings,
    pool: Pool,
    health: Health,
    shutdown: CancellationToken,
) {
    let topology = Topology::new(&settings.amqp);
    let main = Queue {
        name: topology.queue(),
        unroutable: false,
    };
    let unroutable = Queue {
        name: topology.unroutable_queue(),
        unroutable: true,
    };
    tokio::join!(
        consume_queue(&settings, &topology, main, &pool, &health, &shutdown),
        consume_queue(&settings, &topology, unroutable, &pool, &health, &shutdown),
    );
}

/// Consumes the SQS queue until `shutdown`. SQS not answering does not end
/// a session (the source asks again with backoff), so a new one starts only
/// after one ended some other way.
pub async fn run_sqs(
    settings: ConsumerSettings,
    queue: corral_shared::sqs::Queue,
    source: sqs::Settings,
    pool: Pool,
    health: Health,
    shutdown: CancellationToken,
) {
    tracing::info!(
        queue = queue.url,
        in_hand = source.max_in_hand,
        in_hand_bytes = source.max_in_hand_bytes,
        wait = ?source.wait,
        visibility = ?source.visibility,
        writers = settings.writers,
        "consuming from SQS"
    );
    loop {
        let mut session = SqsSource::start(queue.clone(), source.clone(), health.clone());
        let end = batcher::session(&settings, &mut session, &pool, &health, &shutdown).await;
        drop(session);
        health.set_broker(false);
        match end {
            SessionEnd::Drained => {
                tracing::info!(
                    "consumer drained: every message received was committed and deleted"
                );
                return;
            }
            SessionEnd::DrainTimedOut(_) => {
                tracing::warn!(error = %end, "stopping with messages uncommitted; SQS hands them out again once their visibility timeout runs out");
                return;
            }
            SessionEnd::Source(_) => tracing::warn!(
                error = error_chain(&end),
                "the SQS session ended; starting another"
            ),
        }
        retry::pause(&shutdown, settings.db_retry_max).await;
    }
}

/// A queue the worker consumes.
#[derive(Debug)]
struct Queue {
    name: String,
    /// The queue behind the alternate exchange. Normally idle, so its link
    /// is not what `/readyz` reports as the broker's health.
    unroutable: bool,
}

async fn consume_queue(
    settings: &ConsumerSettings,
    topology: &Topology,
    queue: Queue,
    pool: &Pool,
    health: &Health,
    shutdown: &CancellationToken,
) {
    let set_broker = |up: bool| {
        if !queue.unroutable {
            health.set_broker(up);
        }
    };
    let prefetch = if queue.unroutable {
        settings.prefetch.unroutable
    } else {
        settings.prefetch.main
    };
    loop {
        let connected = amqp::reconnect(shutdown, &settings.amqp, || {
            RabbitMqSource::connect(&settings.amqp, topology)
        })
        .await;
        let Some(connected) = connected else { return };
        let end = match connected
            .consume(
                &queue.name,
                prefetch,
                settings.largest_message,
                queue.unroutable,
            )
            .await
        {
            Ok(mut source) => {
                set_broker(true);
                tracing::info!(
                    queue = queue.name,
                    prefetch,
                    writers = settings.writers,
                    "consuming"
                );
                let end = batcher::session(settings, &mut source, pool, health, shutdown).await;
                set_broker(false);
                source.close().await;
                end
            }
            Err(err) => SessionEnd::Source(err),
        };
        match end {
            SessionEnd::Drained => {
                tracing::info!(
                    queue = queue.name,
                    "consumer drained: every message received was committed and acknowledged"
                );
                return;
            }
            SessionEnd::DrainTimedOut(_) => {
                tracing::warn!(queue = queue.name, error = %end, "stopping with messages uncommitted");
                return;
            }
            SessionEnd::Source(_) => tracing::warn!(
                queue = queue.name,
                error = error_chain(&end),
                "lost the RabbitMQ link; reconnecting"
            ),
        }
        retry::pause(shutdown, settings.amqp.reconnect_max()).await;
    }
}
