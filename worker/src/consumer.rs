//! Consuming: batches off the queue, one transaction each, acked only after commit.
//!
//! A batch closes at `CORRAL_BATCH_MAX` messages or `CORRAL_BATCH_LINGER_MS`
//! after its first message, whichever comes first. It is written by
//! [`store::write_batch`] and acknowledged with one `multiple` ack of its last
//! delivery tag, only once the transaction committed. If the database fails
//! for a transient reason, the batch is retried (with backoff) while the
//! messages stay unacknowledged in hand; they are never nacked, since every
//! requeue would count towards the quorum queue's delivery limit. If the
//! broker link dies, the loop reconnects and RabbitMQ redelivers whatever was
//! not acknowledged; rows already committed make those redeliveries duplicates.
//!
//! On shutdown the consumer is cancelled, the messages already received are
//! written and acknowledged, and only then does the connection close.

use std::{
    future::Future,
    pin::Pin,
    time::{Duration, Instant},
};

use chrono::Utc;
use corral_shared::{
    admin::Health,
    amqp::{self, AmqpError, Topology, deadline},
    config::AmqpSettings,
    envelope::Envelope,
    telemetry::metrics,
};
use deadpool_postgres::Pool;
use futures_util::{StreamExt, stream::FuturesOrdered};
use lapin::{
    Acker, Channel, Connection,
    message::Delivery,
    options::{BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicQosOptions},
    types::FieldTable,
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::store::{self, BatchOutcome, Incoming};

/// What the consumer needs to know.
#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    /// Broker and names.
    pub amqp: AmqpSettings,
    /// `basic.qos` prefetch.
    pub prefetch: u16,
    /// Batches written at once.
    pub writers: usize,
    /// Messages per batch at most.
    pub batch_max: usize,
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
    /// The broker side failed; reconnect.
    #[error(transparent)]
    Broker(#[from] AmqpError),
    /// The consumer stream reported an error or ended.
    #[error("the consumer stopped: {0}")]
    Consumer(String),
}

/// Consumes until `shutdown`, reconnecting whenever the broker link fails.
pub async fn run(
    settings: ConsumerSettings,
    pool: Pool,
    health: Health,
    shutdown: CancellationToken,
) {
    let topology = Topology::new(&settings.amqp);
    let mut backoff = amqp::reconnect_backoff(settings.amqp.reconnect_max());
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        match amqp::connect_and_declare(&settings.amqp, &topology, "corral-worker").await {
            Ok((connection, channel)) => {
                metrics::broker_connect_attempt(true);
                backoff = amqp::reconnect_backoff(settings.amqp.reconnect_max());
                let end = session(&settings, &topology, &channel, &pool, &health, &shutdown).await;
                health.set_broker(false);
                close(&connection, settings.amqp.connect_timeout()).await;
                match end {
                    SessionEnd::Drained => {
                        tracing::info!(
                            "consumer drained: every message received was committed and acknowledged"
                        );
                        return;
                    }
                    SessionEnd::DrainTimedOut(_) => {
                        tracing::warn!(error = %end, "stopping with messages uncommitted");
                        return;
                    }
                    _ => tracing::warn!(
                        error = amqp::error_chain(&end),
                        "lost the RabbitMQ link; reconnecting"
                    ),
                }
            }
            Err(err) => {
                metrics::broker_connect_attempt(false);
                tracing::warn!(
                    error = amqp::error_chain(&err),
                    "cannot connect to RabbitMQ; retrying"
                );
            }
        }
        let delay = backoff.next().unwrap_or(settings.amqp.reconnect_max());
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
    }
}

async fn close(connection: &Connection, timeout: Duration) {
    if connection.status().connected() {
        let _ = tokio::time::timeout(
            timeout,
            connection.close(200, "corral-worker closing".into()),
        )
        .await;
    }
}

/// What woke the batch loop.
#[allow(clippy::large_enum_variant)] // lives for one loop turn; boxing would allocate per message
enum Next {
    Written(Result<Written, SessionEnd>),
    Delivery(Delivery),
    LingerOver,
    Shutdown,
    DrainDeadline,
    Ended,
    Failed(lapin::Error),
}

/// A batch being written, resolving when it committed (or gave up).
type Write = Pin<Box<dyn Future<Output = Result<Written, SessionEnd>> + Send>>;

/// One consuming session on one channel.
///
/// Up to `CORRAL_DB_WRITERS` batches are written at once (each on its own
/// pooled connection, so PostgreSQL works on them in parallel while the next
/// batch fills), but acknowledged strictly in delivery order: a `multiple`
/// ack of a batch's last tag then never covers a message of a batch that has
/// not committed yet.
async fn session(
    settings: &ConsumerSettings,
    topology: &Topology,
    channel: &Channel,
    pool: &Pool,
    health: &Health,
    shutdown: &CancellationToken,
) -> SessionEnd {
    let timeout = settings.amqp.connect_timeout();
    if let Err(err) = deadline(
        "setting the prefetch",
        timeout,
        channel.basic_qos(settings.prefetch, BasicQosOptions::default()),
    )
    .await
    {
        return err.into();
    }
    let tag = format!(
        "corral-worker-{}-{}",
        std::process::id(),
        uuid::Uuid::now_v7().simple()
    );
    let mut consumer = match deadline(
        "starting the consumer",
        timeout,
        channel.basic_consume(
            topology.queue().into(),
            tag.as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
    {
        Ok(consumer) => consumer,
        Err(err) => return err.into(),
    };
    health.set_broker(true);
    tracing::info!(
        queue = topology.queue(),
        prefetch = settings.prefetch,
        writers = settings.writers,
        "consuming"
    );

    let mut writes: FuturesOrdered<Write> = FuturesOrdered::new();
    let mut batch: Vec<Delivery> = Vec::with_capacity(settings.batch_max);
    let mut linger_until: Option<tokio::time::Instant> = None;
    let mut flush = false;
    let mut drain_deadline: Option<tokio::time::Instant> = None;
    // Tells batches already being written when the drain must end, so a
    // write stuck on a dead database cannot outlive CORRAL_SHUTDOWN_TIMEOUT_MS.
    let (drain_tx, drain_rx) = watch::channel(None);
    let mut ended: Option<SessionEnd> = None;
    // Messages in batches being written or waiting for their ack.
    let mut held = 0usize;
    loop {
        let ready =
            !batch.is_empty() && (batch.len() >= settings.batch_max || flush || ended.is_some());
        if ready && writes.len() < settings.writers {
            held += batch.len();
            metrics::worker_in_hand(held);
            let deliveries = std::mem::replace(&mut batch, Vec::with_capacity(settings.batch_max));
            writes.push_back(Box::pin(write(
                settings.clone(),
                deliveries,
                pool.clone(),
                health.clone(),
                drain_rx.clone(),
            )));
            linger_until = None;
            flush = false;
            continue;
        }
        if batch.is_empty()
            && writes.is_empty()
            && let Some(end) = ended
        {
            return end;
        }
        let taking = ended.is_none() && batch.len() < settings.batch_max;
        let next = tokio::select! {
            biased;
            Some(written) = writes.next(), if !writes.is_empty() => Next::Written(written),
            () = shutdown.cancelled(), if drain_deadline.is_none() => Next::Shutdown,
            () = sleep_until(drain_deadline), if drain_deadline.is_some() && ended.is_none() => Next::DrainDeadline,
            () = sleep_until(linger_until), if linger_until.is_some() && !ready => Next::LingerOver,
            item = consumer.next(), if taking => match item {
                Some(Ok(delivery)) => Next::Delivery(delivery),
                Some(Err(err)) => Next::Failed(err),
                None => Next::Ended,
            },
        };
        match next {
            Next::Written(Ok(written)) => {
                held -= written.size;
                metrics::worker_in_hand(held);
                if let Err(end) = acknowledge(settings, written).await {
                    return end;
                }
            }
            Next::Written(Err(end)) => return end,
            Next::Delivery(delivery) => {
                if linger_until.is_none() {
                    linger_until = Some(tokio::time::Instant::now() + settings.batch_linger);
                }
                batch.push(delivery);
            }
            Next::LingerOver => flush = true,
            Next::Shutdown => {
                // Stop new deliveries; the ones already received still come
                // through the stream, which then ends.
                drain_deadline = Some(tokio::time::Instant::now() + settings.shutdown_timeout);
                drain_tx.send_replace(drain_deadline);
                health.start_draining();
                tracing::info!(
                    in_hand = batch.len() + held,
                    "draining: cancelling the consumer"
                );
                if let Err(err) = deadline(
                    "cancelling the consumer",
                    timeout,
                    channel.basic_cancel(tag.as_str().into(), BasicCancelOptions::default()),
                )
                .await
                {
                    tracing::warn!(
                        error = amqp::error_chain(&err),
                        "could not cancel the consumer"
                    );
                }
            }
            // The stream did not end by itself; what is in hand still gets
            // its attempt.
            Next::DrainDeadline => {
                let uncommitted = held + batch.len();
                return if uncommitted == 0 {
                    SessionEnd::Drained
                } else {
                    SessionEnd::DrainTimedOut(uncommitted)
                };
            }
            Next::Ended => {
                ended = Some(if drain_deadline.is_some() {
                    SessionEnd::Drained
                } else {
                    SessionEnd::Consumer("RabbitMQ cancelled the consumer (queue deleted?)".into())
                });
            }
            Next::Failed(err) => ended = Some(SessionEnd::Consumer(amqp::error_chain(&err))),
        }
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// A committed batch, waiting for its turn to be acknowledged.
struct Written {
    size: usize,
    /// Delivery tag of the batch's last message, acked with `multiple`.
    tag: u64,
    acker: Acker,
    outcome: BatchOutcome,
    write_time: Duration,
    /// When ingress received each message, for the end-to-end histogram.
    received: Vec<chrono::DateTime<Utc>>,
}

/// Writes one batch, retrying transient database failures with backoff
/// while its messages stay unacknowledged — until it commits, or until the
/// shutdown drain's deadline (when one is set) passes.
async fn write(
    settings: ConsumerSettings,
    batch: Vec<Delivery>,
    pool: Pool,
    health: Health,
    drain: watch::Receiver<Option<tokio::time::Instant>>,
) -> Result<Written, SessionEnd> {
    let size = batch.len();
    tokio::select! {
        written = write_until_committed(&settings, batch, &pool, &health) => written,
        () = drain_deadline_passed(drain) => Err(SessionEnd::DrainTimedOut(size)),
    }
}

async fn drain_deadline_passed(mut drain: watch::Receiver<Option<tokio::time::Instant>>) {
    loop {
        let deadline = *drain.borrow_and_update();
        if let Some(at) = deadline {
            tokio::time::sleep_until(at).await;
            return;
        }
        if drain.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

async fn write_until_committed(
    settings: &ConsumerSettings,
    batch: Vec<Delivery>,
    pool: &Pool,
    health: &Health,
) -> Result<Written, SessionEnd> {
    let size = batch.len();
    let mut last: Option<(u64, Acker)> = None;
    let mut messages = Vec::with_capacity(size);
    for delivery in batch {
        last = Some((delivery.delivery_tag, delivery.acker));
        messages.push(Incoming {
            envelope: Envelope::read(&delivery.properties),
            routing_key: delivery.routing_key.to_string(),
            body: delivery.data,
        });
    }
    let (tag, acker) = last.expect("a batch is never empty");

    let mut backoff = amqp::reconnect_backoff(settings.db_retry_max);
    let started = Instant::now();
    let outcome: BatchOutcome = loop {
        let attempt = tokio::time::timeout(settings.db_timeout * 3, async {
            let mut client = pool.get().await.map_err(|err| err.to_string())?;
            store::write_batch(&mut client, &messages)
                .await
                .map_err(|err| amqp::error_chain(&err))
        })
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {:?}", settings.db_timeout * 3)));
        match attempt {
            Ok(outcome) => {
                health.set_database(true);
                break outcome;
            }
            Err(error) => {
                health.set_database(false);
                metrics::worker_db_error("transient");
                tracing::warn!(
                    error,
                    messages = size,
                    "batch not committed; retrying (nothing acknowledged)"
                );
                if !acker.usable() {
                    // The channel died: RabbitMQ will redeliver these elsewhere.
                    return Err(SessionEnd::Consumer(
                        "channel closed while the batch was retried".into(),
                    ));
                }
                tokio::time::sleep(backoff.next().unwrap_or(settings.db_retry_max)).await;
            }
        }
    };
    Ok(Written {
        size,
        tag,
        acker,
        outcome,
        write_time: started.elapsed(),
        received: messages
            .iter()
            .filter_map(|m| m.envelope.received_at)
            .collect(),
    })
}

/// Acknowledges a committed batch and records its metrics.
async fn acknowledge(settings: &ConsumerSettings, written: Written) -> Result<(), SessionEnd> {
    let Written {
        size,
        tag,
        acker,
        outcome,
        write_time,
        received,
    } = written;
    let acked = deadline(
        "acknowledging a batch",
        settings.amqp.connect_timeout(),
        acker.ack(BasicAckOptions { multiple: true }),
    )
    .await;
    let committed_at = Utc::now();
    metrics::worker_batch(size, write_time);
    metrics::worker_messages("stored", outcome.stored);
    metrics::worker_messages("duplicate", outcome.duplicate);
    metrics::worker_messages("quarantined", outcome.quarantined);
    for received_at in received {
        let seconds = (committed_at - received_at).num_microseconds().unwrap_or(0) as f64 / 1e6;
        metrics::worker_end_to_end(seconds.max(0.0));
    }
    tracing::debug!(size, tag, ?outcome, ?write_time, "batch committed");
    match acked {
        Ok(true) => Ok(()),
        Ok(false) => {
            metrics::worker_ack_failed();
            Err(SessionEnd::Consumer(
                "the channel closed before the ack; the batch will be redelivered as duplicates"
                    .into(),
            ))
        }
        Err(err) => {
            metrics::worker_ack_failed();
            Err(err.into())
        }
    }
}
