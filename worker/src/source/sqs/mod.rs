//! An SQS queue as a source: long polling, the visibility timeout extended
//! for as long as a message is in hand, deleted only once its batch has
//! committed.
//!
//! A poller task receives (`ReceiveMessage`, up to 10 at a time, waiting up
//! to `CORRAL_SQS_WAIT_SECS` for any) while there is [`Room`](super::budget::Room): fewer than
//! `CORRAL_PREFETCH` messages in hand, and their bytes and SQS's largest
//! message for each one asked for within `CORRAL_MAX_IN_HAND_BYTES`. It
//! hands them out through a channel, so a
//! [`Source::next`] dropped half-way (the consumer waits on several things at
//! once) loses nothing. Each message received stays in a ledger with its
//! receipt handle until it is deleted; an extender task pushes the
//! visibility timeout of every one of them back to `CORRAL_SQS_VISIBILITY_SECS`
//! before it runs out, so a batch that waits long for the database is not
//! handed to another worker meanwhile. The [`Ack`] of a delivery deletes it
//! and every delivery before it (`DeleteMessageBatch`, 10 at a time). A
//! message that could not be deleted is counted in
//! `corral_worker_ack_failures_total`; SQS hands it out again once its
//! visibility timeout runs out, and its webhooks count as duplicates. A
//! worker that dies leaves what it held to come back the same way; a message
//! received more often than the queue's redrive policy allows
//! (`maxReceiveCount`) goes to its dead-letter queue.
//!
//! SQS not answering does not end the session: the poller asks again with
//! backoff (readiness says `"broker":false` meanwhile), the extender keeps
//! trying, and what was committed is deleted once SQS answers, or comes back.
//! So [`SqsConnector`] opens a new session only after one ended some other way.
//!
//! # Layout
//!
//! - this module: the settings, the connector, the session and its ledger
//!   of receipts, the ack.
//! - `poll`: receiving while there is room, and holding what came.
//! - `visibility`: extending the messages in hand, deleting committed ones.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use corral_runtime::{
    admin::Health,
    sqs::{self, Queue},
    telemetry::metrics,
};
use futures_util::{StreamExt, stream};
use tokio::{sync::mpsc, task::JoinHandle, time::Instant};
use tokio_util::sync::CancellationToken;

use super::{
    Ack, Connector, Delivery, Source, SourceError, budget::Taken, sqs_depth::OldestReceived,
};
use poll::poll;
use visibility::{delete_chunk, extend};

/// Settings of the SQS source.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Longest wait of one `ReceiveMessage` for a message (long polling).
    pub wait: Duration,
    /// Visibility timeout given at receipt and at every extension.
    pub visibility: Duration,
    /// Messages in hand at most (received, not yet deleted).
    pub max_in_hand: usize,
    /// Bytes of messages in hand at most.
    pub max_in_hand_bytes: u64,
    /// Cap of the backoff while SQS does not answer.
    pub retry_max: Duration,
    /// Told how long each message received had waited in the queue.
    pub oldest: OldestReceived,
}

mod poll;
mod visibility;

/// Longest wait for SQS to answer a call that is not a long poll: whether
/// it is there, and a delete of committed messages.
const ANSWER_BOUND: Duration = Duration::from_secs(10);

/// Deletes in flight at once when a batch is acknowledged.
const DELETE_CALLS: usize = 8;

/// Opens receiving sessions on the queue.
#[derive(Debug)]
pub struct SqsConnector {
    /// The queue and its client.
    pub queue: Queue,
    /// How each session receives.
    pub settings: Settings,
    /// Told whether SQS answers.
    pub health: Health,
}

impl Connector for SqsConnector {
    type Source = SqsSource;
    const TRANSPORT: &'static str = "SQS";
    const COMES_BACK: &'static str =
        "SQS hands them out again once their visibility timeout runs out";

    fn queue(&self) -> &str {
        &self.queue.url
    }

    async fn open(&self, _shutdown: &CancellationToken) -> Option<Result<SqsSource, SourceError>> {
        let settings = &self.settings;
        tracing::info!(
            queue = self.queue.url,
            in_hand = settings.max_in_hand,
            in_hand_bytes = settings.max_in_hand_bytes,
            wait = ?settings.wait,
            visibility = ?settings.visibility,
            "consuming from SQS"
        );
        let source = SqsSource::start(self.queue.clone(), settings.clone(), self.health.clone());
        Some(Ok(source))
    }

    async fn close(&self, source: SqsSource) {
        drop(source);
        self.health.set_broker(false);
    }

    fn retry_max(&self) -> Duration {
        self.settings.retry_max
    }
}

/// A receiving session on one queue.
#[derive(Debug)]
pub struct SqsSource {
    deliveries: mpsc::UnboundedReceiver<Delivery<SqsAck>>,
    ledger: Arc<Ledger>,
    /// Stops receiving; what was received still comes out.
    stop: CancellationToken,
    poller: JoinHandle<()>,
    extender: JoinHandle<()>,
}

/// Deletes a delivery and every one received before it.
pub struct SqsAck {
    /// The delivery's place in the order of receipt.
    seq: u64,
    ledger: Arc<Ledger>,
}

impl std::fmt::Debug for SqsAck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SQS delivery {}", self.seq)
    }
}

/// The messages in hand, by order of receipt.
#[derive(Debug)]
struct Ledger {
    queue: Queue,
    settings: Settings,
    held: Mutex<BTreeMap<u64, Held>>,
    next_seq: AtomicU64,
    /// The session has ended: its receipts are left to run out.
    closed: AtomicBool,
    /// The poller waits for room: nothing more comes until a delete.
    starved: AtomicBool,
}

/// A message in hand.
#[derive(Debug)]
struct Held {
    receipt: String,
    /// When SQS hands it out again unless it is extended first.
    visible_at: Instant,
    /// Its room in hand, given back once it is deleted.
    _room: Taken,
}

impl Settings {
    /// The visibility timeout, as SQS takes it.
    fn visibility_secs(&self) -> i32 {
        i32::try_from(self.visibility.as_secs()).unwrap_or(i32::MAX)
    }
}

impl Ledger {
    fn held(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Held>> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl SqsSource {
    /// Starts receiving from `queue`; readiness follows whether SQS answers.
    pub fn start(queue: Queue, settings: Settings, health: Health) -> Self {
        let ledger = Arc::new(Ledger {
            queue,
            settings,
            held: Mutex::new(BTreeMap::new()),
            next_seq: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            starved: AtomicBool::new(false),
        });
        let (sender, deliveries) = mpsc::unbounded_channel();
        let stop = CancellationToken::new();
        let poller = tokio::spawn(poll(ledger.clone(), sender, health, stop.clone()));
        let extender = tokio::spawn(extend(ledger.clone()));
        Self {
            deliveries,
            ledger,
            stop,
            poller,
            extender,
        }
    }
}

impl Drop for SqsSource {
    fn drop(&mut self) {
        // What is still held runs out and comes back, to this worker's next
        // session or another worker.
        self.ledger.closed.store(true, Ordering::SeqCst);
        self.poller.abort();
        self.extender.abort();
    }
}

impl Source for SqsSource {
    type Ack = SqsAck;

    async fn next(&mut self) -> Option<Result<Delivery<SqsAck>, SourceError>> {
        self.deliveries.recv().await.map(Ok)
    }

    /// It counts bytes: see [`Room`](crate::source::budget::Room).
    fn limit(&self) -> Option<usize> {
        None
    }

    fn saturated(&self, _in_hand: usize) -> bool {
        self.deliveries.is_empty() && self.ledger.starved.load(Ordering::SeqCst)
    }

    async fn stop(&mut self) -> Result<(), SourceError> {
        // A long poll in flight is dropped: a message SQS was handing over
        // right then comes back once its visibility timeout runs out.
        self.stop.cancel();
        Ok(())
    }
}

impl Ack for SqsAck {
    async fn ack(self) -> Result<(), SourceError> {
        let ledger = &self.ledger;
        let taken: Vec<(u64, Held)> = {
            let mut held = ledger.held();
            let later = held.split_off(&(self.seq + 1));
            std::mem::replace(&mut *held, later).into_iter().collect()
        };
        let chunks: Vec<Vec<(u64, String)>> = taken
            .chunks(sqs::BATCH_ENTRIES)
            .map(|chunk| {
                chunk
                    .iter()
                    .map(|(seq, held)| (*seq, held.receipt.clone()))
                    .collect()
            })
            .collect();
        let undeleted: usize = stream::iter(chunks)
            .map(|chunk| delete_chunk(ledger.clone(), chunk, ANSWER_BOUND))
            .buffer_unordered(DELETE_CALLS)
            .collect::<Vec<usize>>()
            .await
            .into_iter()
            .sum();
        // Their room in hand, now that they are gone (or left to come back).
        drop(taken);
        for _ in 0..undeleted {
            metrics::worker_ack_failed();
        }
        // Not an error for the session: an undeleted message comes back by
        // itself, and ending the session would only send back more.
        Ok(())
    }

    fn usable(&self) -> bool {
        !self.ledger.closed.load(Ordering::SeqCst)
    }
}
