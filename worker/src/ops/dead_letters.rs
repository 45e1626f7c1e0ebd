//! Dead letters: RabbitMQ dead-letters a message after `x-delivery-limit` failed deliveries
//! (a worker crashing on it, a channel dying mid-batch, again and again) into
//! `<prefix>.dead-letter`. [`list_dead_letters`] shows them, with the
//! webhooks inside each, and [`replay_dead_letters`] publishes them back to
//! `<prefix>.webhooks` as they are, with their original routing key and
//! properties: the webhooks of an envelope-2 message go back together, and
//! the worker stores each once.
//!
//! Never losing one: a message is taken with `basic.get` and leaves the
//! dead-letter queue only by an ack, and that ack is sent only after RabbitMQ
//! has confirmed the copy published where the message goes next: the webhooks
//! exchange (replay, `mandatory`, so an unroutable copy counts as a failure) or
//! the tail of the dead-letter queue itself (a message only looked at, or one
//! whose replay failed). Nothing is ever put back with a `nack`/requeue,
//! because RabbitMQ 4 counts such returns against a quorum queue's delivery
//! limit (20 by default) and the dead-letter queue has nowhere further to send
//! a message. A crash between a confirm and its ack leaves at worst a
//! duplicate, which the worker stores once (webhooks are de-duplicated by
//! fingerprint). Only the messages present when the command starts are read,
//! so the ones it moves to the tail are not read twice.
//!

use chrono::{DateTime, Utc};
use corral_shared::{
    amqp,
    config::AmqpSettings,
    envelope::{Envelope, Format, Metadata},
};
use lapin::{
    message::Delivery,
    options::BasicGetOptions,
    types::{AMQPValue, FieldTable},
};

use super::{OpsError, ROUTING_KEY_HEADER, dead_letter_session::DeadLetterSession};
use crate::source::{Contents, unpack};
use corral_shared::amqp::deadline;

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
    /// Reads what the message's properties and headers say.
    pub fn read(delivery: &Delivery) -> Self {
        let headers = delivery.properties.headers().as_ref();
        let get = |name: &str| headers.and_then(|table| table.inner().get(name));
        let deaths: Vec<&FieldTable> = match get("x-death") {
            Some(AMQPValue::FieldArray(array)) => array
                .as_slice()
                .iter()
                .filter_map(|value| match value {
                    AMQPValue::FieldTable(table) => Some(table),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        // `x-death` is newest first; its routing keys are those the message
        // was published with (corral sets no dead-letter routing key).
        let death_routing_key = deaths
            .iter()
            .filter_map(|death| match death.inner().get("routing-keys") {
                Some(AMQPValue::FieldArray(keys)) => keys.as_slice().first().and_then(text),
                _ => None,
            })
            .next_back();
        let routing_key = death_routing_key
            .or_else(|| get(ROUTING_KEY_HEADER).and_then(text))
            .unwrap_or_else(|| delivery.routing_key.as_str().to_owned());
        let reason = get("x-first-death-reason").and_then(text).or_else(|| {
            deaths
                .last()
                .and_then(|death| death.inner().get("reason"))
                .and_then(text)
        });
        let queue = get("x-first-death-queue").and_then(text).or_else(|| {
            deaths
                .last()
                .and_then(|death| death.inner().get("queue"))
                .and_then(text)
        });
        let count = deaths
            .iter()
            .filter_map(|death| death.inner().get("count").and_then(integer))
            .sum();
        let metadata = amqp::metadata(&delivery.properties);
        let message_id = metadata.message_id.clone();
        let received_at = Envelope::read(&metadata).received_at;
        let webhooks = webhooks_of(
            &metadata,
            message_id.as_deref(),
            &routing_key,
            &delivery.data,
        );
        Self {
            message_id,
            routing_key,
            reason,
            queue,
            deaths: count,
            received_at,
            body: delivery.data.clone(),
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
pub(super) fn webhooks_of(
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

fn text(value: &AMQPValue) -> Option<String> {
    match value {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

fn integer(value: &AMQPValue) -> Option<i64> {
    match value {
        AMQPValue::LongLongInt(n) => Some(*n),
        AMQPValue::LongInt(n) => Some(i64::from(*n)),
        AMQPValue::LongUInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortUInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortShortInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortShortUInt(n) => Some(i64::from(*n)),
        _ => None,
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

/// Shows up to `limit` dead-lettered messages, removing none.
pub async fn list_dead_letters(
    settings: &AmqpSettings,
    limit: u64,
) -> Result<DeadLetterReport, OpsError> {
    walk_dead_letters(
        settings,
        &ReplayOptions {
            dry_run: true,
            limit: Some(limit),
            message_ids: Vec::new(),
        },
    )
    .await
}

/// Publishes dead-lettered messages back to the webhooks exchange (see the
/// module documentation for why none can be lost). On a failure it stops: the
/// message that failed stays in the dead-letter queue, and the error says how
/// many were replayed before it.
pub async fn replay_dead_letters(
    settings: &AmqpSettings,
    options: &ReplayOptions,
) -> Result<DeadLetterReport, OpsError> {
    walk_dead_letters(settings, options).await
}

async fn walk_dead_letters(
    settings: &AmqpSettings,
    options: &ReplayOptions,
) -> Result<DeadLetterReport, OpsError> {
    let (session, queued_at_start) = DeadLetterSession::open(settings).await?;
    let mut report = DeadLetterReport {
        queue: session.topology.dead_letter_queue(),
        queued_at_start,
        replayed: !options.dry_run,
        ..Default::default()
    };
    let result = walk(&session, options, &mut report).await;
    session.close().await;
    result.map(|()| report)
}

async fn walk(
    session: &DeadLetterSession,
    options: &ReplayOptions,
    report: &mut DeadLetterReport,
) -> Result<(), OpsError> {
    let queue = session.topology.dead_letter_queue();
    let limit = options.limit.unwrap_or(u64::MAX);
    // Only the messages there at the start: those moved to the tail are not
    // read again.
    for _ in 0..report.queued_at_start {
        if report.letters.len() as u64 >= limit {
            break;
        }
        let got = deadline(
            "basic.get on the dead-letter queue",
            session.timeout,
            session
                .channel
                .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: false }),
        )
        .await?;
        let Some(message) = got else { break };
        let delivery = message.delivery;
        let letter = DeadLetter::read(&delivery);
        let selected =
            options.message_ids.is_empty() || options.message_ids.iter().any(|id| letter.holds(id));
        if selected && !options.dry_run {
            if let Err(cause) = session.replay(&delivery, &letter).await {
                // Put it back where it was (the tail), then stop: whatever
                // refused this one would refuse the next.
                session.keep(&delivery, &letter).await?;
                return Err(OpsError::NotReplayed {
                    message_id: letter.id().to_owned(),
                    cause: Box::new(cause),
                    replayed: report.letters.len(),
                });
            }
            tracing::info!(
                message_id = letter.id(),
                routing_key = letter.routing_key,
                "replayed a dead-lettered message"
            );
        } else {
            session.keep(&delivery, &letter).await?;
        }
        if selected {
            report.letters.push(letter);
        } else {
            report.passed_over += 1;
        }
    }
    Ok(())
}
