//! Dead letters: messages the broker gave up delivering wait in a
//! dead-letter queue for an operator. RabbitMQ dead-letters a message after
//! `x-delivery-limit` failed deliveries (a worker crashing on it, a channel
//! dying mid-batch, again and again) into `<prefix>.dead-letter`; SQS moves
//! one received `maxReceiveCount` times into the queue its redrive policy
//! names. [`DeadLetters::list`] shows them, with the webhooks inside each,
//! and [`DeadLetters::replay`] sends them back where they came from as they
//! are: the webhooks of an envelope-2 message go back together, and the
//! worker stores each once.
//!
//! Never losing one is each transport's own business ([`rabbitmq`],
//! [`sqs`]): a dead-letter copy leaves only after the broker took the
//! replayed one.
//!
//! # Layout
//!
//! - this file: a dead letter as an operator sees it, the options, the
//!   report, and the [`DeadLetters`] trait the command is written against.
//! - [`rabbitmq`]: walking `<prefix>.dead-letter` with `basic.get`.
//! - `session` (private): the confirm-mode channel the RabbitMQ walk moves
//!   messages on.
//! - [`sqs`]: walking the SQS dead-letter queue, and `sqs_calls` (private)
//!   its bounded batch calls.

pub mod rabbitmq;
mod session;
pub mod sqs;
mod sqs_calls;

use std::future::Future;

use chrono::{DateTime, Utc};
use corral_contract::envelope::{Envelope, Format, Metadata};

pub use self::{rabbitmq::RabbitmqDeadLetters, sqs::SqsDeadLetters};
use super::OpsError;
use crate::source::{Contents, unpack};

/// A dead-letter queue an operator command walks: RabbitMQ's or SQS's.
pub trait DeadLetters: Sync {
    /// Whether the queue counts how many times a message was dead-lettered
    /// and says why (RabbitMQ's `x-death`); SQS keeps neither.
    const KEEPS_HISTORY: bool;

    /// Walks the messages there at the start, replaying the selected ones
    /// unless `options.dry_run`, and leaves every other one where it was.
    /// On a failure it stops: the message that failed stays in the
    /// dead-letter queue, and the error says how many were replayed before.
    fn walk(
        &self,
        options: &ReplayOptions,
    ) -> impl Future<Output = Result<DeadLetterReport, OpsError>> + Send;

    /// Shows up to `limit` dead-lettered messages, removing none.
    fn list(&self, limit: u64) -> impl Future<Output = Result<DeadLetterReport, OpsError>> + Send {
        async move {
            let options = ReplayOptions {
                dry_run: true,
                limit: Some(limit),
                message_ids: Vec::new(),
            };
            self.walk(&options).await
        }
    }

    /// Sends the dead letters `options` selects back where they came from.
    fn replay(
        &self,
        options: &ReplayOptions,
    ) -> impl Future<Output = Result<DeadLetterReport, OpsError>> + Send {
        self.walk(options)
    }
}

/// A dead-lettered message, as an operator needs to see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The `message_id` property (the id ingress answered), if any.
    pub message_id: Option<String>,
    /// The routing key it was first published with, and will be replayed with.
    pub routing_key: String,
    /// Why RabbitMQ dead-lettered it (`x-first-death-reason`: `delivery_limit`,
    /// `rejected`, `expired`, `maxlen`), if the message says.
    pub reason: Option<String>,
    /// The queue it died in (`x-first-death-queue`), if the message says.
    pub queue: Option<String>,
    /// How many times it was dead-lettered (the sum of the `x-death` counts).
    pub deaths: i64,
    /// When ingress received it (`x-received-at`, else `timestamp`).
    pub received_at: Option<DateTime<Utc>>,
    /// The message body, byte for byte: one webhook's (envelope 1), or the
    /// envelope-2 body holding several.
    pub body: Vec<u8>,
    /// The webhooks inside: one per entry of an envelope-2 message, each with
    /// its own id, kind and `received_at`; for any other message (envelope 1,
    /// or one that does not unpack) one, the message itself.
    pub webhooks: Vec<LetterWebhook>,
}

/// One webhook inside a dead letter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LetterWebhook {
    /// Its id (the one ingress answered its sender).
    pub message_id: Option<String>,
    /// The routing key of its kind (`dropcowboy.sms` / `dropcowboy.rvm`);
    /// for a message that is one webhook, the message's.
    pub routing_key: String,
    /// When ingress received it.
    pub received_at: Option<DateTime<Utc>>,
    /// Its body, byte for byte.
    pub body: Vec<u8>,
}

impl DeadLetter {
    /// A message with `metadata` and `body`, as one transport read it.
    pub(super) fn new(
        metadata: &Metadata,
        message_id: Option<String>,
        routing_key: String,
        body: Vec<u8>,
    ) -> Self {
        let webhooks = webhooks_of(metadata, message_id.as_deref(), &routing_key, &body);
        Self {
            message_id,
            routing_key,
            reason: None,
            queue: None,
            deaths: 0,
            received_at: Envelope::read(metadata).received_at,
            body,
            webhooks,
        }
    }

    /// Whether `id` names this letter or one of the webhooks inside it.
    pub fn holds(&self, id: &str) -> bool {
        self.message_id.as_deref() == Some(id)
            || self
                .webhooks
                .iter()
                .any(|webhook| webhook.message_id.as_deref() == Some(id))
    }

    /// The `message_id`, or `-` for a message without one.
    pub fn id(&self) -> &str {
        self.message_id.as_deref().unwrap_or("-")
    }
}

/// The webhooks inside a message with `metadata`: each of an envelope-2
/// body, else the message itself as one (its id `message_id`).
fn webhooks_of(
    metadata: &Metadata,
    message_id: Option<&str>,
    routing_key: &str,
    body: &[u8],
) -> Vec<LetterWebhook> {
    let contents = (Format::of(metadata) == Format::Batch)
        .then(|| unpack::contents(metadata, routing_key, body.to_vec()));
    match contents {
        Some(Contents::Webhooks(webhooks)) => webhooks
            .into_iter()
            .map(|webhook| LetterWebhook {
                message_id: webhook.envelope.message_id.map(|id| id.to_string()),
                routing_key: webhook.routing_key,
                received_at: webhook.envelope.received_at,
                body: webhook.body,
            })
            .collect(),
        _ => vec![LetterWebhook {
            message_id: message_id.map(str::to_owned),
            routing_key: routing_key.to_owned(),
            received_at: Envelope::read(metadata).received_at,
            body: body.to_vec(),
        }],
    }
}

/// Which dead letters a replay takes.
#[derive(Debug, Clone, Default)]
pub struct ReplayOptions {
    /// Only report what would be replayed.
    pub dry_run: bool,
    /// At most this many; all when `None`.
    pub limit: Option<u64>,
    /// Only messages with one of these `message_id`s, or holding a webhook
    /// with one of these ids (the whole message is replayed); all when empty.
    pub message_ids: Vec<String>,
}

impl ReplayOptions {
    /// Whether a letter is selected, `holds` saying whether an id names it.
    fn selects(&self, holds: impl Fn(&str) -> bool) -> bool {
        self.message_ids.is_empty() || self.message_ids.iter().any(|id| holds(id))
    }
}

/// What a dead-letter command did.
#[derive(Debug, Clone, Default)]
pub struct DeadLetterReport {
    /// The dead-letter queue: its name on RabbitMQ, its URL on SQS.
    pub queue: String,
    /// Messages in the dead-letter queue when the command started.
    pub queued_at_start: u32,
    /// The messages selected: replayed when `replayed`, else only looked at
    /// (`list`, `--dry-run`) and still in the dead-letter queue.
    pub letters: Vec<DeadLetter>,
    /// Whether `letters` were replayed.
    pub replayed: bool,
    /// Messages read that did not match `--message-id`; still in the queue.
    pub passed_over: usize,
}
