//! An SQS queue as a source: long polling, the visibility timeout extended
//! for as long as a message is in hand, deleted only once its batch has
//! committed.
//!
//! A poller task receives (`ReceiveMessage`, up to 10 at a time, waiting up
//! to `CORRAL_SQS_WAIT_SECS` for any) while there is [`Room`]: fewer than
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

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use aws_sdk_sqs::{
    error::DisplayErrorContext,
    types::{
        ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry, Message,
        MessageSystemAttributeName,
    },
};
use corral_shared::{
    admin::Health,
    retry,
    sqs::{self, Queue},
    telemetry::metrics,
};
use futures_util::{StreamExt, stream};
use tokio::{sync::mpsc, task::JoinHandle, time::Instant};
use tokio_util::sync::CancellationToken;

use super::{
    Ack, Connector, Delivery, Source, SourceError,
    budget::{Reservation, Room, SQS_LARGEST_MESSAGE, Taken},
    sqs_depth::OldestReceived,
    unpack,
};

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

    /// It counts bytes: see [`Room`].
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

/// Receives while there is room, until stopped.
async fn poll(
    ledger: Arc<Ledger>,
    sender: mpsc::UnboundedSender<Delivery<SqsAck>>,
    health: Health,
    stop: CancellationToken,
) {
    let room = Room::new(
        ledger.settings.max_in_hand,
        ledger.settings.max_in_hand_bytes,
        SQS_LARGEST_MESSAGE,
    );
    let mut delays = retry::delays(ledger.settings.retry_max);
    let mut answering = false;
    loop {
        if !answering {
            // A silent path (no answer, no error) must not hold the poller
            // past the check's bound: it asks again after the pause.
            let check = tokio::time::timeout(ANSWER_BOUND, sqs::check(&ledger.queue));
            let checked = tokio::select! {
                () = stop.cancelled() => return,
                checked = check => checked.unwrap_or_else(|_elapsed| {
                    Err(sqs::CheckError::Unreachable(format!("no answer within {ANSWER_BOUND:?}")))
                }),
            };
            if let Err(err) = checked {
                health.set_broker(false);
                tracing::warn!(queue = ledger.queue.url, error = %err, "SQS does not answer; asking again");
                if pause(&stop, delays.next()).await {
                    return;
                }
                continue;
            }
            answering = true;
            delays = retry::delays(ledger.settings.retry_max);
            health.set_broker(true);
            tracing::info!(queue = ledger.queue.url, "receiving from SQS");
        }
        let mut permits = Vec::with_capacity(sqs::BATCH_ENTRIES);
        let Some(first) = reserve(&ledger, &room, &stop).await else {
            return;
        };
        permits.push(first);
        permits.extend(std::iter::from_fn(|| room.try_reserve()).take(sqs::BATCH_ENTRIES - 1));
        let received = tokio::select! {
            () = stop.cancelled() => return,
            received = receive(&ledger, permits.len()) => received,
        };
        match received {
            Ok(messages) => {
                for (message, permit) in messages.into_iter().zip(permits.drain(..)) {
                    let Some(delivery) = hold(&ledger, message, permit) else {
                        continue;
                    };
                    if sender.send(delivery).is_err() {
                        return;
                    }
                }
            }
            Err(why) => {
                answering = false;
                health.set_broker(false);
                tracing::warn!(queue = ledger.queue.url, error = %why, "ReceiveMessage failed");
                if pause(&stop, delays.next()).await {
                    return;
                }
            }
        }
    }
}

/// Room for one message, waiting (and saying so) when there is none; `None`
/// when stopped meanwhile.
async fn reserve(ledger: &Ledger, room: &Room, stop: &CancellationToken) -> Option<Reservation> {
    if let Some(reservation) = room.try_reserve() {
        return Some(reservation);
    }
    ledger.starved.store(true, Ordering::SeqCst);
    let reserved = tokio::select! {
        () = stop.cancelled() => None,
        reservation = room.reserve() => Some(reservation),
    };
    ledger.starved.store(false, Ordering::SeqCst);
    reserved
}

/// Waits `delay` (or a second); `true` when stopped meanwhile.
async fn pause(stop: &CancellationToken, delay: Option<Duration>) -> bool {
    tokio::select! {
        () = stop.cancelled() => true,
        () = tokio::time::sleep(delay.unwrap_or(Duration::from_secs(1))) => false,
    }
}

/// One long poll for up to `count` messages.
async fn receive(ledger: &Ledger, count: usize) -> Result<Vec<Message>, String> {
    let settings = &ledger.settings;
    let call = ledger
        .queue
        .client
        .receive_message()
        .queue_url(&ledger.queue.url)
        .max_number_of_messages(count as i32)
        .wait_time_seconds(settings.wait.as_secs() as i32)
        .visibility_timeout(visibility_secs(settings))
        .message_attribute_names("All")
        .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
        .send();
    // The SDK has no deadline of its own on a call; SQS answers a long poll
    // by its wait at the latest.
    let bound = settings.wait + Duration::from_secs(10);
    match tokio::time::timeout(bound, call).await {
        Ok(Ok(output)) => Ok(output.messages.unwrap_or_default()),
        Ok(Err(err)) => Err(DisplayErrorContext(&err).to_string()),
        Err(_elapsed) => Err(format!("no answer within {bound:?}")),
    }
}

fn visibility_secs(settings: &Settings) -> i32 {
    i32::try_from(settings.visibility.as_secs()).unwrap_or(i32::MAX)
}

/// Puts a received message in the ledger and makes its delivery; `None`
/// for one without a receipt handle (SQS always sends one).
fn hold(ledger: &Arc<Ledger>, message: Message, room: Reservation) -> Option<Delivery<SqsAck>> {
    let receipt = message.receipt_handle()?.to_owned();
    let size = message.body().map_or(0, str::len) + receipt.len() + sqs::ATTRIBUTES_MAX;
    if let Some(sent) = sqs::sent_at_millis(&message) {
        ledger.settings.oldest.received(sent);
    }
    let (metadata, routing_key) = sqs::metadata(&message);
    let body = message.body.unwrap_or_default().into_bytes();
    let seq = ledger.next_seq.fetch_add(1, Ordering::SeqCst);
    ledger.held().insert(
        seq,
        Held {
            receipt,
            visible_at: Instant::now() + ledger.settings.visibility,
            _room: room.keep(size),
        },
    );
    Some(Delivery {
        contents: unpack::contents(&metadata, &routing_key, body),
        ack: SqsAck {
            seq,
            ledger: ledger.clone(),
        },
    })
}

/// Pushes back the visibility timeout of every message in hand before it
/// runs out.
async fn extend(ledger: Arc<Ledger>) {
    let visibility = ledger.settings.visibility;
    let period = (visibility / 4).max(Duration::from_millis(100));
    loop {
        tokio::time::sleep(period).await;
        let now = Instant::now();
        let due: Vec<(u64, String)> = ledger
            .held()
            .iter()
            .filter(|(_, held)| held.visible_at.saturating_duration_since(now) < visibility / 2)
            .map(|(seq, held)| (*seq, held.receipt.clone()))
            .collect();
        let chunks: Vec<Vec<(u64, String)>> =
            due.chunks(sqs::BATCH_ENTRIES).map(<[_]>::to_vec).collect();
        stream::iter(chunks)
            .map(|chunk| extend_chunk(ledger.clone(), chunk, period))
            .buffer_unordered(DELETE_CALLS)
            .collect::<()>()
            .await;
    }
}

/// Extends the visibility timeout of up to 10 messages in hand.
async fn extend_chunk(ledger: Arc<Ledger>, chunk: Vec<(u64, String)>, bound: Duration) {
    let visibility = ledger.settings.visibility;
    let entries = chunk
        .iter()
        .map(|(seq, receipt)| {
            ChangeMessageVisibilityBatchRequestEntry::builder()
                .id(seq.to_string())
                .receipt_handle(receipt)
                .visibility_timeout(visibility_secs(&ledger.settings))
                .build()
                .expect("id and receipt are set")
        })
        .collect();
    let sent = Instant::now();
    let call = ledger
        .queue
        .client
        .change_message_visibility_batch()
        .queue_url(&ledger.queue.url)
        .set_entries(Some(entries))
        .send();
    match tokio::time::timeout(bound, call).await {
        Ok(Ok(output)) => {
            let mut held = ledger.held();
            for ok in output.successful() {
                if let Some(entry) = ok.id().parse().ok().and_then(|seq: u64| held.get_mut(&seq)) {
                    entry.visible_at = sent + visibility;
                }
            }
            drop(held);
            for failed in output.failed() {
                tracing::warn!(
                    code = failed.code(),
                    reason = failed.message().unwrap_or(""),
                    "could not extend a message's visibility timeout; if it runs out the \
                     message comes back, and is then stored once"
                );
            }
        }
        Ok(Err(err)) => tracing::warn!(
            messages = chunk.len(),
            error = %DisplayErrorContext(&err),
            "could not extend visibility timeouts; messages whose timeout runs out come back, \
             and are then stored once"
        ),
        Err(_elapsed) => tracing::warn!(
            messages = chunk.len(),
            "no answer to a visibility extension within {bound:?}"
        ),
    }
}

/// Deletes up to 10 committed messages; how many SQS did not delete.
async fn delete_chunk(ledger: Arc<Ledger>, chunk: Vec<(u64, String)>, timeout: Duration) -> usize {
    let entries = chunk
        .iter()
        .map(|(seq, receipt)| {
            DeleteMessageBatchRequestEntry::builder()
                .id(seq.to_string())
                .receipt_handle(receipt)
                .build()
                .expect("id and receipt are set")
        })
        .collect();
    let call = ledger
        .queue
        .client
        .delete_message_batch()
        .queue_url(&ledger.queue.url)
        .set_entries(Some(entries))
        .send();
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(output)) => {
            for failed in output.failed() {
                tracing::warn!(
                    code = failed.code(),
                    reason = failed.message().unwrap_or(""),
                    "SQS did not delete a committed message; it comes back once its visibility \
                     timeout runs out, and its webhooks count as duplicates"
                );
            }
            output.failed().len()
        }
        Ok(Err(err)) => {
            tracing::warn!(
                messages = chunk.len(),
                error = %DisplayErrorContext(&err),
                "DeleteMessageBatch failed; the committed messages come back once their \
                 visibility timeout runs out, and their webhooks count as duplicates"
            );
            chunk.len()
        }
        Err(_elapsed) => {
            tracing::warn!(
                messages = chunk.len(),
                "no answer to DeleteMessageBatch within {timeout:?}; the committed messages may \
                 come back, and their webhooks then count as duplicates"
            );
            chunk.len()
        }
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
