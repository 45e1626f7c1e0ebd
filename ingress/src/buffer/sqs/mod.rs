//! The SQS buffer: a webhook is answered 200 once SQS accepted the message
//! carrying it, several webhooks per message and several messages per call.
//!
//! Group commit as on the RabbitMQ path (the same engine): requests queue their
//! webhooks; whenever one of `CORRAL_PUBLISH_CONCURRENCY` call slots is free,
//! the dispatcher takes everything waiting — up to 10 messages of at most
//! `CORRAL_PUBLISH_BATCH_MAX` webhooks each, the whole call at most
//! `CORRAL_SQS_MAX_MESSAGE_BYTES` — and sends it with one `SendMessageBatch`.
//! Each message is an envelope-2 body with the attributes the worker reads
//! (`corral_runtime::sqs`), holding only the characters SQS takes (a body
//! with one SQS refuses goes escaped, `Charset::Sqs`). SQS answers per
//! message: a webhook is taken only when its message is among the call's
//! successful entries; a failed entry refuses its webhooks alone, a failed
//! call all of them (each then goes to the spool, or is answered 503 without
//! one).
//!
//! Readiness (`broker` in `/readyz`, `corral_broker_connected`) is whether
//! SQS answers: a `GetQueueAttributes` every few seconds (every second while
//! it does not, and at once after a call got no answer), and every call's
//! outcome. While it does not answer, webhooks are refused at once rather
//! than after a wait, as with no RabbitMQ link.
//!
//! # Layout
//!
//! - this module: the handle, its refusals, the check of the queue.
//! - `send`: the sink: a round's messages and calls, and SQS's answer to
//!   each.

mod send;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use corral_runtime::{
    admin::Health,
    sqs::{self, CheckError, Queue},
    telemetry::labels::{PublishFailure, SpoolCause},
};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{
    Buffer, Kept, Publishing, Refusal, Webhook,
    engine::{Engine, Stopped},
};
use crate::budget::Lease;

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

impl From<Stopped> for SqsError {
    fn from(stopped: Stopped) -> Self {
        match stopped {
            Stopped::Overloaded => SqsError::Overloaded,
            Stopped::Timeout(timeout) => SqsError::Timeout(timeout),
            Stopped::ShuttingDown => SqsError::ShuttingDown,
        }
    }
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
    /// The bounds both primaries share (a send is one `SendMessageBatch`).
    pub publishing: Publishing,
    /// Webhooks per message at most.
    pub batch_max: usize,
    /// Bytes per message, and per call, at most.
    pub max_message_bytes: usize,
    /// How long a call that is not full waits for more webhooks.
    pub linger: Duration,
    /// Message groups, with a FIFO queue; `None` for a standard one.
    pub fifo_groups: Option<u16>,
}

/// Shared handle; clone freely.
#[derive(Clone, Debug)]
pub struct Sqs {
    engine: Engine<Endpoint>,
    endpoint: Arc<Endpoint>,
}

/// The queue as the sink and the check share it.
#[derive(Debug)]
struct Endpoint {
    queue: Queue,
    settings: Settings,
    /// Whether SQS answered the last check or call.
    reachable: AtomicBool,
    /// Wakes the check at once when a call found SQS gone.
    recheck: Notify,
    health: Health,
    shutdown: CancellationToken,
}

impl Endpoint {
    fn is_reachable(&self) -> bool {
        self.reachable.load(Ordering::SeqCst)
    }

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

impl Buffer for Sqs {
    type Error = SqsError;

    async fn keep(&self, webhook: Webhook, lease: Lease) -> Result<Kept, SqsError> {
        self.engine.keep(webhook, lease).await.map(Kept::Published)
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
        let endpoint = Arc::new(Endpoint {
            queue,
            reachable: AtomicBool::new(false),
            recheck: Notify::new(),
            settings,
            health,
            shutdown: shutdown.clone(),
        });
        let engine = Engine::start(endpoint.clone(), shutdown);
        let watcher = tokio::spawn(watch(endpoint.clone()));
        (Self { engine, endpoint }, watcher)
    }

    /// Sends what is still queued, waits (bounded) for the calls in flight,
    /// and stops checking.
    pub async fn close(&self, timeout: Duration) {
        self.engine.close(timeout).await;
        self.endpoint.health.set_broker(false);
    }
}

/// Asks SQS whether it answers, until shutdown.
async fn watch(endpoint: Arc<Endpoint>) {
    loop {
        let checked = tokio::time::timeout(
            endpoint.settings.publishing.publish_timeout,
            sqs::check(&endpoint.queue),
        )
        .await
        .unwrap_or_else(|_| {
            Err(CheckError::Unreachable(format!(
                "no answer within {:?}",
                endpoint.settings.publishing.publish_timeout
            )))
        });
        let pause = match &checked {
            Ok(()) => {
                endpoint.set_reachable(true, None);
                CHECK_EVERY
            }
            Err(err) => {
                endpoint.set_reachable(false, Some(&err.to_string()));
                RECHECK_EVERY
            }
        };
        endpoint.health.broker_attempted();
        tokio::select! {
            () = endpoint.shutdown.cancelled() => return,
            () = tokio::time::sleep(pause) => {}
            () = endpoint.recheck.notified() => {}
        }
    }
}
