//! The SQS buffer: a webhook is answered 200 once SQS accepted the message
//! carrying it, several webhooks per message and several messages per call.
//!
//! Group commit as on the RabbitMQ path (`rounds`): requests queue their
//! webhooks; whenever one of `CORRAL_PUBLISH_CONCURRENCY` call slots is free,
//! the dispatcher takes everything waiting — up to 10 messages of at most
//! `CORRAL_PUBLISH_BATCH_MAX` webhooks each, the whole call at most
//! `CORRAL_SQS_MAX_MESSAGE_BYTES` — and sends it with one `SendMessageBatch`.
//! Each message is an envelope-2 body with the attributes the worker reads
//! (`corral_shared::sqs`), holding only the characters SQS takes (a body
//! with one SQS refuses goes escaped, `Charset::Sqs`). SQS answers per
//! message: a webhook is taken only when its message is among the call's
//! successful entries; a failed entry refuses its webhooks alone, a failed
//! call all of them (each then goes to the spool, or is answered 503 without
//! one).
//!
//! Readiness (`broker` in `/readyz`, `corral_broker_connected`) is whether
//! SQS answers: a `GetQueueAttributes` every few seconds (every second while
//! it does not, and at once after a call got no answer), and every call's
//! outcome. While it does not answer,
//! webhooks are refused at once rather than after a wait, as with no
//! RabbitMQ link.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use aws_sdk_sqs::{
    error::ProvideErrorMetadata as _,
    types::{SendMessageBatchRequestEntry, builders::SendMessageBatchRequestEntryBuilder},
};
use corral_shared::{
    admin::Health,
    envelope::{Charset, batch},
    error_chain,
    sqs::{self, CheckError, Queue},
    telemetry::{
        labels::{PublishFailure, SpoolCause},
        metrics,
    },
};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::{
    Buffer, InFlight, InFlightCount, Kept, Refusal, Webhook, pack,
    rounds::{Limits, Rounds, Waiting},
};
use crate::{budget::Lease, config::SQS_MESSAGE_OVERHEAD};

/// How often SQS is asked whether it answers, while it does.
const CHECK_EVERY: Duration = Duration::from_secs(5);
/// …and while it does not: webhooks are spooled (or refused) until then.
const RECHECK_EVERY: Duration = Duration::from_secs(1);

/// Why SQS did not take a webhook. Cloned to every webhook of the message
/// (or the call) it befell.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SqsError {
    /// SQS does not answer (the last check or call failed).
    #[error("SQS is not reachable: {0}")]
    Unavailable(String),
    /// Too many webhooks already await a verdict.
    #[error("too many publishes in flight")]
    Overloaded,
    /// SQS answered the call and refused this webhook's message.
    #[error("SQS refused the message ({code}): {reason}")]
    Refused {
        /// SQS's error code.
        code: String,
        /// Its message.
        reason: String,
    },
    /// The message would exceed `CORRAL_SQS_MAX_MESSAGE_BYTES`.
    #[error("the message would be {0} bytes, over CORRAL_SQS_MAX_MESSAGE_BYTES ({1})")]
    TooLarge(usize, usize),
    /// No answer within `CORRAL_PUBLISH_TIMEOUT_MS`.
    #[error("no answer from SQS within {0:?}")]
    Timeout(Duration),
    /// The buffer is closing.
    #[error("shutting down")]
    ShuttingDown,
}

impl Refusal for SqsError {
    fn failure(&self) -> PublishFailure {
        match self {
            SqsError::Unavailable(_) => PublishFailure::Unavailable,
            SqsError::Overloaded => PublishFailure::Overloaded,
            SqsError::Refused { .. } | SqsError::TooLarge(..) => PublishFailure::Nack,
            SqsError::Timeout(_) => PublishFailure::Timeout,
            SqsError::ShuttingDown => PublishFailure::ShuttingDown,
        }
    }

    fn spool_cause(&self) -> Option<SpoolCause> {
        match self {
            SqsError::Unavailable(_) => Some(SpoolCause::Unavailable),
            // Ingress's own bound on webhooks in flight.
            SqsError::Overloaded => None,
            SqsError::Refused { .. } | SqsError::TooLarge(..) => Some(SpoolCause::Nack),
            SqsError::Timeout(_) => Some(SpoolCause::Slow),
            SqsError::ShuttingDown => Some(SpoolCause::ShuttingDown),
        }
    }
}

/// Settings of the SQS buffer.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Bound on webhooks awaiting a verdict.
    pub max_in_flight: u32,
    /// `SendMessageBatch` calls awaiting their answer at once.
    pub concurrency: usize,
    /// Webhooks per message at most.
    pub batch_max: usize,
    /// Bytes per message, and per call, at most.
    pub max_message_bytes: usize,
    /// Longest wait for an in-flight slot.
    pub in_flight_wait: Duration,
    /// Deadline of a call (and of the request).
    pub publish_timeout: Duration,
    /// How long a call that is not full waits for more webhooks.
    pub linger: Duration,
    /// Message groups, with a FIFO queue; `None` for a standard one.
    pub fifo_groups: Option<u16>,
}

/// Shared handle; clone freely.
#[derive(Clone, Debug)]
pub struct Sqs {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    queue: Queue,
    settings: Settings,
    /// Whether SQS answered the last check or call.
    reachable: AtomicBool,
    /// Wakes the check at once when a call found SQS gone.
    recheck: Notify,
    permits: Arc<Semaphore>,
    in_flight: Arc<InFlightCount>,
    sender: mpsc::UnboundedSender<Queued>,
    slots: Arc<Semaphore>,
    health: Health,
    shutdown: CancellationToken,
    publishing: TaskTracker,
}

impl Inner {
    /// Records whether SQS answers; says so when that changes.
    fn set_reachable(&self, reachable: bool, why: Option<&str>) {
        if self.reachable.swap(reachable, Ordering::SeqCst) != reachable {
            if reachable {
                tracing::info!(queue = self.queue.url, "SQS answers");
            } else {
                tracing::warn!(
                    queue = self.queue.url,
                    error = why.unwrap_or("unknown"),
                    "SQS does not answer; until it does webhooks go to the spool, or get 503 \
                     without one"
                );
            }
        }
        self.health.set_broker(reachable);
    }
}

/// A webhook waiting for a call, with its request's reply.
#[derive(Debug)]
struct Queued {
    webhook: Webhook,
    /// Its entry's bytes at most, reckoned once (it reads the body).
    size: usize,
    /// Its message group, with a FIFO queue.
    group: u16,
    lease: Lease,
    reply: oneshot::Sender<Verdict>,
}

type Verdict = Result<Duration, SqsError>;

impl Waiting for Queued {
    fn abandoned(&self) -> bool {
        self.reply.is_closed()
    }

    fn size(&self) -> usize {
        self.size
    }
}

impl Buffer for Sqs {
    type Error = SqsError;

    async fn keep(&self, webhook: Webhook, lease: Lease) -> Result<Kept, SqsError> {
        let inner = &self.inner;
        let timeout = inner.settings.publish_timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let wait = inner.settings.in_flight_wait.min(timeout);
        let _permit = match tokio::time::timeout(wait, inner.permits.clone().acquire_owned()).await
        {
            Ok(Ok(permit)) => permit,
            Ok(Err(_closed)) => return Err(SqsError::ShuttingDown),
            Err(_elapsed) => return Err(SqsError::Overloaded),
        };
        if !inner.reachable.load(Ordering::SeqCst) {
            return Err(SqsError::Unavailable(
                "the last check or call did not get an answer".into(),
            ));
        }
        let _in_flight = InFlight::enter(&inner.in_flight);
        let (reply, verdict) = oneshot::channel();
        // Once the dispatcher has stopped, the entry is dropped with its
        // reply, which reads as shutting down.
        let group = inner
            .settings
            .fifo_groups
            .map_or(0, |groups| group_of(&webhook.body, groups));
        let _closed = inner.sender.send(Queued {
            size: batch::entry_len_for(Charset::Sqs, &webhook.body),
            webhook,
            group,
            lease,
            reply,
        });
        match tokio::time::timeout_at(deadline, verdict).await {
            Ok(Ok(verdict)) => verdict.map(Kept::Published),
            Ok(Err(_dropped)) => Err(SqsError::ShuttingDown),
            Err(_elapsed) => Err(SqsError::Timeout(timeout)),
        }
    }
}

impl Sqs {
    /// Starts the dispatcher and the check of the queue. `shutdown` stops
    /// both; cancel it through [`Sqs::close`].
    pub fn start(
        queue: Queue,
        settings: Settings,
        health: Health,
        shutdown: CancellationToken,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (sender, receiver) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            queue,
            reachable: AtomicBool::new(false),
            recheck: Notify::new(),
            permits: Arc::new(Semaphore::new(settings.max_in_flight as usize)),
            in_flight: Arc::default(),
            slots: Arc::new(Semaphore::new(settings.concurrency)),
            settings,
            sender,
            health,
            shutdown,
            publishing: TaskTracker::new(),
        });
        inner.publishing.spawn(dispatch(inner.clone(), receiver));
        let watcher = tokio::spawn(watch(inner.clone()));
        (Self { inner }, watcher)
    }

    /// Sends what is still queued, waits (bounded) for the calls in flight,
    /// and stops checking.
    pub async fn close(&self, timeout: Duration) {
        self.inner.shutdown.cancel();
        self.inner.publishing.close();
        let _ = tokio::time::timeout(timeout, self.inner.publishing.wait()).await;
        self.inner.health.set_broker(false);
    }
}

/// Asks SQS whether it answers, until shutdown.
async fn watch(inner: Arc<Inner>) {
    loop {
        let checked =
            tokio::time::timeout(inner.settings.publish_timeout, sqs::check(&inner.queue))
                .await
                .unwrap_or_else(|_| {
                    Err(CheckError::Unreachable(format!(
                        "no answer within {:?}",
                        inner.settings.publish_timeout
                    )))
                });
        let pause = match &checked {
            Ok(()) => {
                inner.set_reachable(true, None);
                CHECK_EVERY
            }
            Err(err) => {
                inner.set_reachable(false, Some(&err.to_string()));
                RECHECK_EVERY
            }
        };
        inner.health.broker_attempted();
        tokio::select! {
            () = inner.shutdown.cancelled() => return,
            () = tokio::time::sleep(pause) => {}
            () = inner.recheck.notified() => {}
        }
    }
}

/// Forms calls from the queue until shutdown; then sends what is still
/// queued and ends.
async fn dispatch(inner: Arc<Inner>, queue: mpsc::UnboundedReceiver<Queued>) {
    let settings = &inner.settings;
    let mut rounds = Rounds::new(queue, limits(settings));
    while let Some(first) = rounds.first(&inner.shutdown).await {
        // Lingering counts from the first webhook's turn, so time spent
        // waiting for a free slot (SQS slow) is not added to it.
        let until = tokio::time::Instant::now() + settings.linger;
        let Ok(slot) = inner.slots.clone().acquire_owned().await else {
            return;
        };
        let round = rounds.gather(first, until, &inner.shutdown).await;
        if !round.is_empty() {
            inner.publishing.spawn(send(inner.clone(), round, slot));
        }
    }
}

/// A call's limits: up to 10 messages, their bodies and attributes within
/// the byte limit together. Room for every message's own overhead is kept
/// aside, unless the limit is so small that a call carries one message.
fn limits(settings: &Settings) -> Limits {
    let messages = if settings.max_message_bytes >= sqs::BATCH_ENTRIES * 4096 {
        sqs::BATCH_ENTRIES
    } else {
        1
    };
    Limits {
        count: settings.batch_max * messages,
        bytes: settings.max_message_bytes - (messages - 1) * SQS_MESSAGE_OVERHEAD,
        overhead: SQS_MESSAGE_OVERHEAD,
    }
}

/// One message of a call: its webhooks' replies and leases.
struct Outgoing {
    replies: Vec<oneshot::Sender<Verdict>>,
    /// The bodies' leases: the SDK holds a copy of the body until the call
    /// has ended.
    _leases: Vec<Lease>,
}

/// Sends one round (one `SendMessageBatch`; with a FIFO queue, whose
/// messages hold one group each, one per 10 messages, in turn) and answers
/// each request.
async fn send(inner: Arc<Inner>, mut round: Vec<Queued>, slot: OwnedSemaphorePermit) {
    let settings = &inner.settings;
    let fifo = settings.fifo_groups.is_some();
    if fifo {
        // Stable: a group's webhooks keep their order of arrival.
        round.sort_by_key(|queued| queued.group);
    }
    let mut messages: Vec<Vec<Queued>> = Vec::new();
    for queued in round {
        match messages.last_mut() {
            Some(last)
                if last.len() < settings.batch_max && (!fifo || last[0].group == queued.group) =>
            {
                last.push(queued);
            }
            _ => messages.push(vec![queued]),
        }
    }
    let mut calls: Vec<Vec<(SendMessageBatchRequestEntryBuilder, Outgoing)>> = Vec::new();
    for message in messages {
        let Some(entry) = entry(settings, message) else {
            continue;
        };
        match calls.last_mut() {
            Some(last) if last.len() < sqs::BATCH_ENTRIES => last.push(entry),
            _ => calls.push(vec![entry]),
        }
    }
    for call in calls {
        let (entries, outgoing) = call
            .into_iter()
            .enumerate()
            .map(|(i, (entry, outgoing))| {
                let entry = entry.id(i.to_string()).build();
                (entry.expect("id and body are set"), outgoing)
            })
            .unzip();
        send_call(&inner, entries, outgoing).await;
    }
    drop(slot);
}

/// One message's entry, or `None` when its webhooks were refused already
/// (too large, or not UTF-8).
fn entry(
    settings: &Settings,
    message: Vec<Queued>,
) -> Option<(SendMessageBatchRequestEntryBuilder, Outgoing)> {
    let group = message[0].group;
    let (id, packed) = pack(message.iter().map(|q| &q.webhook), Charset::Sqs);
    let mut replies = Vec::with_capacity(message.len());
    let mut leases = Vec::with_capacity(message.len());
    for queued in message {
        replies.push(queued.reply);
        leases.push(queued.lease);
    }
    let size = packed.body.len() + sqs::ATTRIBUTES_MAX;
    if size > settings.max_message_bytes {
        answer(
            replies,
            &Err(SqsError::TooLarge(size, settings.max_message_bytes)),
        );
        return None;
    }
    // Ingress packs only bodies it checked are UTF-8 JSON.
    let Ok(body) = String::from_utf8(packed.body) else {
        answer(
            replies,
            &Err(SqsError::Refused {
                code: "corral".into(),
                reason: "the message is not UTF-8".into(),
            }),
        );
        return None;
    };
    let mut entry = SendMessageBatchRequestEntry::builder()
        .message_body(body)
        .set_message_attributes(Some(sqs::attributes(
            id,
            packed.routing_key,
            batch::CONTENT_TYPE,
        )));
    if settings.fifo_groups.is_some() {
        // The message's own id: a call sent again after a lost answer is
        // taken once (SQS deduplicates for 5 minutes).
        entry = entry
            .message_group_id(format!("corral-{group}"))
            .message_deduplication_id(id.to_string());
    }
    metrics::ingress_publish_batch(replies.len());
    Some((
        entry,
        Outgoing {
            replies,
            _leases: leases,
        },
    ))
}

/// The message group of a webhook: its `phone_number`'s, so one number's
/// webhooks share one; a body without one goes to group 0.
fn group_of(body: &[u8], groups: u16) -> u16 {
    #[derive(serde::Deserialize)]
    struct Recipient<'a> {
        #[serde(borrow, default)]
        phone_number: Option<std::borrow::Cow<'a, str>>,
    }
    let number = serde_json::from_slice::<Recipient<'_>>(body)
        .ok()
        .and_then(|recipient| recipient.phone_number);
    number.map_or(0, |number| {
        u16::try_from(crc32fast::hash(number.as_bytes()) % u32::from(groups)).unwrap_or(0)
    })
}

/// Sends one `SendMessageBatch` and answers each of its messages' requests.
async fn send_call(
    inner: &Inner,
    entries: Vec<SendMessageBatchRequestEntry>,
    outgoing: Vec<Outgoing>,
) {
    let settings = &inner.settings;
    if entries.is_empty() {
        return;
    }
    let started = Instant::now();
    let call = inner
        .queue
        .client
        .send_message_batch()
        .queue_url(&inner.queue.url)
        .set_entries(Some(entries))
        .send();
    let sent = match tokio::time::timeout(settings.publish_timeout, call).await {
        Err(_elapsed) => Err(SqsError::Timeout(settings.publish_timeout)),
        // SQS answered, and refused this call (a message over the queue's
        // MaximumMessageSize, say): these webhooks are refused, and SQS is
        // still there for the next.
        Ok(Err(err))
            if err
                .as_service_error()
                .is_some_and(|e| !is_transient(e.code())) =>
        {
            let service = err.as_service_error().expect("checked");
            Err(SqsError::Refused {
                code: service.code().unwrap_or("unknown").to_owned(),
                reason: service.message().unwrap_or("no message").to_owned(),
            })
        }
        Ok(Err(err)) => Err(match sqs::classify(&err) {
            CheckError::Refused { code, reason } => SqsError::Refused { code, reason },
            CheckError::Unreachable(why) => {
                inner.set_reachable(false, Some(&why));
                // Asked again now rather than at the next tick: a blip the
                // SDK's own retries did not outlast need not refuse webhooks
                // for seconds.
                inner.recheck.notify_one();
                SqsError::Unavailable(why)
            }
        }),
        Ok(Ok(output)) => Ok(output),
    };
    let output = match sent {
        Ok(output) => output,
        Err(err) => {
            tracing::debug!(error = error_chain(&err), "SendMessageBatch failed");
            for message in outgoing {
                answer(message.replies, &Err(err.clone()));
            }
            return;
        }
    };
    inner.set_reachable(true, None);
    let elapsed = started.elapsed();
    let mut verdicts: Vec<Option<Verdict>> = vec![None; outgoing.len()];
    for ok in output.successful() {
        if let Some(verdict) = ok
            .id()
            .parse::<usize>()
            .ok()
            .and_then(|i| verdicts.get_mut(i))
        {
            *verdict = Some(Ok(elapsed));
        }
    }
    for failed in output.failed() {
        if let Some(verdict) = failed
            .id()
            .parse::<usize>()
            .ok()
            .and_then(|i| verdicts.get_mut(i))
        {
            tracing::warn!(
                code = failed.code(),
                sender_fault = failed.sender_fault(),
                reason = failed.message().unwrap_or(""),
                "SQS refused a message of a SendMessageBatch; its webhooks go to the spool, or \
                 get 503 without one"
            );
            *verdict = Some(Err(SqsError::Refused {
                code: failed.code().to_owned(),
                reason: failed.message().unwrap_or("no message").to_owned(),
            }));
        }
    }
    for (message, verdict) in outgoing.into_iter().zip(verdicts) {
        // An entry SQS named in neither list was not taken.
        let verdict = verdict.unwrap_or_else(|| {
            Err(SqsError::Refused {
                code: "missing".into(),
                reason: "SQS's answer named this message neither successful nor failed".into(),
            })
        });
        answer(message.replies, &verdict);
    }
}

/// Error codes by which SQS says to try later: it is there, and cannot now.
fn is_transient(code: Option<&str>) -> bool {
    matches!(
        code,
        None | Some(
            "ThrottlingException"
                | "RequestThrottled"
                | "ServiceUnavailable"
                | "InternalFailure"
                | "InternalError"
                | "KmsThrottled"
        )
    )
}

fn answer(replies: Vec<oneshot::Sender<Verdict>>, verdict: &Verdict) {
    for reply in replies {
        let _gone = reply.send(verdict.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(max_message_bytes: usize) -> Settings {
        Settings {
            max_in_flight: 10,
            concurrency: 1,
            batch_max: 128,
            max_message_bytes,
            in_flight_wait: Duration::from_millis(1),
            publish_timeout: Duration::from_secs(1),
            linger: Duration::ZERO,
            fifo_groups: None,
        }
    }

    #[test]
    fn one_number_always_has_one_group_and_numbers_spread_over_all() {
        let body = |number: &str| format!(r#"{{"drop_id":"d","phone_number":"{number}"}}"#);
        let first = group_of(body("+15552224444").as_bytes(), 16);
        assert_eq!(group_of(body("+15552224444").as_bytes(), 16), first);
        // An escaped spelling of the same number is the same number.
        let escaped = r#"{"phone_number":"\u002b15552224444"}"#;
        assert_eq!(group_of(escaped.as_bytes(), 16), first);
        let groups: std::collections::BTreeSet<u16> = (0..1000)
            .map(|n| group_of(body(&format!("+1555{n:07}")).as_bytes(), 16))
            .collect();
        assert_eq!(groups.len(), 16);
        assert!(groups.iter().all(|group| *group < 16));
        assert_eq!(group_of(br#"{"drop_id":"d"}"#, 16), 0);
        assert_eq!(group_of(br#"{"phone_number":5}"#, 16), 0);
    }

    #[test]
    fn a_call_of_ten_messages_stays_within_the_byte_limit_with_every_overhead() {
        let limits = limits(&settings(262_144));
        assert_eq!(limits.count, 1280);
        // The round's size counts one message's overhead; the nine others
        // were kept aside.
        assert!(limits.bytes + 9 * SQS_MESSAGE_OVERHEAD <= 262_144);
    }

    #[test]
    fn a_small_limit_sends_one_message_per_call() {
        let limits = limits(&settings(2048));
        assert_eq!(limits.count, 128);
        assert_eq!(limits.bytes, 2048);
    }
}
