//! Dead letters on RabbitMQ: `<prefix>.dead-letter`, replayed to
//! `<prefix>.webhooks` with their original routing key and properties.
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

use corral_runtime::{
    amqp::{self, Topology, deadline},
    config::AmqpSettings,
};
use lapin::{
    message::Delivery,
    options::BasicGetOptions,
    types::{AMQPValue, FieldTable},
};

use super::{
    DeadLetter, DeadLetterReport, DeadLetters, ReplayOptions,
    session::{ROUTING_KEY_HEADER, Session},
};
use crate::ops::OpsError;

/// The dead-letter queue of the broker `CORRAL_AMQP_*` names.
#[derive(Debug, Clone)]
pub struct RabbitmqDeadLetters {
    settings: AmqpSettings,
}

impl RabbitmqDeadLetters {
    /// The dead-letter queue of `settings`' broker and prefix.
    pub fn new(settings: &AmqpSettings) -> Self {
        Self {
            settings: settings.clone(),
        }
    }
}

impl DeadLetters for RabbitmqDeadLetters {
    const KEEPS_HISTORY: bool = true;

    async fn walk(&self, options: &ReplayOptions) -> Result<DeadLetterReport, OpsError> {
        let (session, queued_at_start) = Session::open(&self.settings).await?;
        let mut report = DeadLetterReport {
            queue: Topology::new(&self.settings).dead_letter_queue(),
            queued_at_start,
            replayed: !options.dry_run,
            ..Default::default()
        };
        let result = walk(&session, options, &mut report).await;
        session.close().await;
        result.map(|()| report)
    }
}

async fn walk(
    session: &Session,
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
        let letter = read(&delivery);
        let selected = options.selects(|id| letter.holds(id));
        if selected && !options.dry_run {
            if let Err(cause) = session
                .replay(&delivery, &letter.routing_key, letter.id())
                .await
            {
                // Put it back where it was (the tail), then stop: whatever
                // refused this one would refuse the next.
                session
                    .keep(&delivery, &letter.routing_key, letter.id())
                    .await?;
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
            session
                .keep(&delivery, &letter.routing_key, letter.id())
                .await?;
        }
        if selected {
            report.letters.push(letter);
        } else {
            report.passed_over += 1;
        }
    }
    Ok(())
}

/// Reads what a dead-lettered message's properties and headers say.
pub fn read(delivery: &Delivery) -> DeadLetter {
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
    let first_death = |header: &str, field: &str| {
        get(header).and_then(text).or_else(|| {
            deaths
                .last()
                .and_then(|death| death.inner().get(field))
                .and_then(text)
        })
    };
    let metadata = amqp::metadata(&delivery.properties);
    let message_id = metadata.message_id.clone();
    DeadLetter {
        reason: first_death("x-first-death-reason", "reason"),
        queue: first_death("x-first-death-queue", "queue"),
        deaths: deaths
            .iter()
            .filter_map(|death| death.inner().get("count").and_then(integer))
            .sum(),
        ..DeadLetter::new(&metadata, message_id, routing_key, delivery.data.clone())
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
