//! Where the worker's deliveries come from, and how they are acknowledged.
//!
//! The consumer takes [`Delivery`]s from a [`Source`], writes them in batches
//! and, only once a batch has committed, acknowledges it through the [`Ack`]
//! of its last delivery. A delivery is one message of the buffer and holds
//! every webhook inside it ([`unpack`]), so a batch always holds whole
//! messages and a message is never acknowledged before all of its webhooks
//! are committed. Until then the source keeps every delivery it handed out,
//! and gives it again (to this or another worker) if the worker dies or the
//! link fails: that is what makes "stored once" survive every crash.
//!
//! A [`Connector`] opens sessions, each a [`Source`]; [`Transport`] is the
//! buffer `CORRAL_BUFFER` picks, once, when the worker is built. Two
//! transports: [`rabbitmq`] (a consumer per queue, acknowledged with
//! `multiple` acks; which queues: [`shards`]) and [`sqs`] (long polling, visibility extended while in
//! hand, deleted after commit); [`sqs_depth`] measures the SQS queues for
//! Prometheus. Both hold what [`budget`] allows: `CORRAL_MAX_IN_HAND_BYTES`
//! of messages at most. Each adapts its message's metadata to the
//! envelope's at its edge, so nothing past [`Delivery`] knows which it was.

pub mod budget;
pub mod rabbitmq;
pub mod shards;
pub mod sqs;
pub mod sqs_depth;
pub mod unpack;

use std::{future::Future, time::Duration};

use corral_contract::envelope::Incoming;
use corral_runtime::config::{AmqpSettings, BufferKind, BufferSettings};
use tokio_util::sync::CancellationToken;

/// The buffer the worker consumes, as `CORRAL_BUFFER` picks it.
#[derive(Debug, Clone)]
pub enum Transport {
    /// RabbitMQ: its settings are checked; connecting is each session's.
    RabbitMq,
    /// SQS: the client is made and the queue checked.
    Sqs(corral_runtime::sqs::Queue),
}

impl Transport {
    /// Checks (RabbitMQ) or connects to (SQS) the buffer `buffer` names:
    /// the worker's build step, which fails on a setting that cannot work.
    pub fn connect(amqp: &AmqpSettings, buffer: &BufferSettings) -> anyhow::Result<Self> {
        Ok(match buffer.kind {
            BufferKind::Rabbitmq => {
                corral_runtime::amqp::check_settings(amqp)?;
                Self::RabbitMq
            }
            BufferKind::Sqs => Self::Sqs(corral_runtime::sqs::connect(buffer)?),
        })
    }

    /// The SQS queue, when that is the buffer.
    pub fn sqs(&self) -> Option<&corral_runtime::sqs::Queue> {
        match self {
            Self::RabbitMq => None,
            Self::Sqs(queue) => Some(queue),
        }
    }
}

/// Opens consuming sessions on one queue of a transport.
pub trait Connector: Send + Sync {
    /// A session.
    type Source: Source;

    /// The transport, for logs (`RabbitMQ`, `SQS`).
    const TRANSPORT: &'static str;

    /// How messages left uncommitted come back, for the log at shutdown.
    const COMES_BACK: &'static str;

    /// The queue, for logs.
    fn queue(&self) -> &str;

    /// Opens a session, trying again (with backoff) while the transport
    /// cannot be reached; `None` once shutdown came first.
    fn open(
        &self,
        shutdown: &CancellationToken,
    ) -> impl Future<Output = Option<Result<Self::Source, SourceError>>> + Send;

    /// Ends a session: what it handed out and was not acknowledged comes
    /// back, to this worker's next session or another worker.
    fn close(&self, source: Self::Source) -> impl Future<Output = ()> + Send;

    /// Longest pause before the next session after one failed.
    fn retry_max(&self) -> Duration;
}

/// A message taken from a source, with what acknowledges it.
#[derive(Debug)]
pub struct Delivery<A> {
    /// What the message holds.
    pub contents: Contents,
    /// Acknowledges this delivery and every earlier one of the same source.
    pub ack: A,
}

impl<A> Delivery<A> {
    /// How many rows the message becomes (or is a duplicate of): each of
    /// its webhooks, or the one quarantine row of an unreadable message.
    pub fn webhooks(&self) -> usize {
        match &self.contents {
            Contents::Webhooks(webhooks) => webhooks.len(),
            Contents::Unreadable { .. } => 1,
        }
    }

    /// Bytes of the bodies it holds: what its batch's rows and parameters
    /// grow from.
    pub fn bytes(&self) -> usize {
        match &self.contents {
            Contents::Webhooks(webhooks) => webhooks.iter().map(|w| w.body.len()).sum(),
            Contents::Unreadable { message, .. } => message.body.len(),
        }
    }
}

/// What one message holds, as the store reads it.
#[derive(Debug, Clone)]
pub enum Contents {
    /// Its webhooks, in order: the body of an envelope-1 message, or each
    /// entry of an envelope-2 one with its own id, `received_at` and kind.
    Webhooks(Vec<Incoming>),
    /// A message whose webhooks cannot be told apart (a body that does not
    /// unpack, an envelope version this build cannot read): it is
    /// quarantined whole, so it is kept without blocking the queue.
    Unreadable {
        /// The whole message: its body, routing key and envelope.
        message: Incoming,
        /// Why, in full: stored as the quarantine row's `error`.
        error: String,
        /// Why, without any value from the body: for the log line.
        logged: String,
    },
}

/// Acknowledges one delivery and every delivery its source handed out before
/// it, so a batch is acknowledged by its last delivery.
pub trait Ack: std::fmt::Debug + Send + Sync + 'static {
    /// Tells the source it may forget the deliveries, waiting at most as
    /// long as the transport's own settings allow.
    fn ack(self) -> impl Future<Output = Result<(), SourceError>> + Send;

    /// Whether an ack could still reach the source. When it cannot, the source
    /// gives the deliveries again elsewhere, so retrying their write is pointless.
    fn usable(&self) -> bool;
}

/// A stream of deliveries that are kept until acknowledged.
pub trait Source: Send {
    /// What acknowledges a delivery.
    type Ack: Ack;

    /// The next delivery; `None` once the source has ended (after
    /// [`Source::stop`], when everything already sent has been handed out).
    fn next(
        &mut self,
    ) -> impl Future<Output = Option<Result<Delivery<Self::Ack>, SourceError>>> + Send;

    /// How many messages the source hands out at most before an
    /// acknowledgement, when it counts them (RabbitMQ's prefetch).
    fn limit(&self) -> Option<usize>;

    /// Whether the source will hand out nothing more until some of what it
    /// handed out is acknowledged, `in_hand` being how many of its
    /// deliveries the consumer holds unacknowledged: a batch then has no
    /// reason to wait for company.
    fn saturated(&self, in_hand: usize) -> bool {
        self.limit().is_some_and(|limit| in_hand >= limit)
    }

    /// Asks for no new deliveries; those already on their way still come
    /// through [`Source::next`], which then ends.
    fn stop(&mut self) -> impl Future<Output = Result<(), SourceError>> + Send;
}

/// Why a source stopped working; what it had handed out and was not
/// acknowledged comes back once it is reopened.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The transport failed or refused an operation (its error says which).
    #[error(transparent)]
    Transport(Box<dyn std::error::Error + Send + Sync>),
    /// The source closed without being asked to.
    #[error("{0}")]
    Closed(&'static str),
}
