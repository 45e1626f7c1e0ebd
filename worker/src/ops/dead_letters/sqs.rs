//! Dead letters with `CORRAL_BUFFER=sqs`: the dead-letter queue is the one
//! the queue's redrive policy names (`deadLetterTargetArn`), where SQS moves
//! a message received `maxReceiveCount` times without being deleted.
//! A replay sends them back to the queue as they are: the same body and
//! message attributes.
//!
//! Never losing one: a message is received with a visibility timeout of
//! [`LOOK_SECS`] and leaves the dead-letter queue only by a delete, sent
//! only for a message whose copy SQS accepted (a successful entry of
//! `SendMessageBatch`). Every other message received is made visible again
//! before the command ends (`ChangeMessageVisibility` to 0), and comes back
//! by itself within [`LOOK_SECS`] if that fails or the command dies. A
//! delete that fails after a copy was sent leaves a duplicate, which the
//! worker stores once. The walk keeps what it received invisible until it
//! ends, so each receive brings messages not seen yet; it ends when a
//! receive brings none (a message seen before, back because the walk took
//! longer than [`LOOK_SECS`], is not read twice).

use std::collections::{HashMap, HashSet};

use aws_sdk_sqs::types::{
    BatchResultErrorEntry, Message, MessageAttributeValue, MessageSystemAttributeName,
    SendMessageBatchRequestEntry,
};
use corral_runtime::{
    config::BufferSettings,
    error_chain,
    sqs::{self, Queue},
};
use uuid::Uuid;

pub use super::sqs_calls::LOOK_SECS;
use super::{
    DeadLetter, DeadLetterReport, DeadLetters, ReplayOptions,
    sqs_calls::{call, checked, dead_letter_queue, delete, release},
};
use crate::ops::OpsError;

/// Bodies and attributes per `SendMessageBatch` at most: SQS's smallest
/// limit on a whole call (a queue's `MaximumMessageSize` may be raised to
/// 1 MiB; a message that large goes in a call of its own).
const SEND_BATCH_BYTES: usize = 256 * 1024;

/// The dead-letter queue of an SQS queue's redrive policy.
#[derive(Debug, Clone)]
pub struct SqsDeadLetters {
    /// The queue (`CORRAL_SQS_QUEUE_URL`) replays go to.
    queue: Queue,
}

impl SqsDeadLetters {
    /// The dead-letter queue of `queue`.
    pub fn new(queue: Queue) -> Self {
        Self { queue }
    }

    /// The dead-letter queue of the queue `CORRAL_SQS_*` names.
    pub fn connect(settings: &BufferSettings) -> anyhow::Result<Self> {
        Ok(Self::new(sqs::connect(settings)?))
    }
}

impl DeadLetters for SqsDeadLetters {
    const KEEPS_HISTORY: bool = false;

    async fn walk(&self, options: &ReplayOptions) -> Result<DeadLetterReport, OpsError> {
        let queue = &self.queue;
        let dead = dead_letter_queue(queue).await?;
        let depth = checked(
            format!("counting the messages of {}", dead.url),
            sqs::depth(&dead.client, &dead.url),
        )
        .await?;
        let mut report = DeadLetterReport {
            queue: dead.url.clone(),
            queued_at_start: u32::try_from(depth.visible).unwrap_or(u32::MAX),
            replayed: !options.dry_run,
            ..Default::default()
        };
        // Received and not deleted: made visible again at the end, whatever happened.
        let mut held = HashMap::new();
        let result = walk(queue, &dead, options, &mut report, &mut held).await;
        release(&dead, held).await;
        result.map(|()| report)
    }
}

/// A message received from the dead-letter queue.
struct Received {
    letter: DeadLetter,
    /// SQS's `MessageId`.
    sqs_id: String,
    receipt: String,
    body: String,
    attributes: Option<HashMap<String, MessageAttributeValue>>,
    /// Its `MessageGroupId`, from a FIFO dead-letter queue.
    group: Option<String>,
}

impl Received {
    fn read(message: Message, sqs_id: String, receipt: String) -> Self {
        let (metadata, routing_key) = sqs::metadata(&message);
        let message_id = metadata.message_id.clone();
        let group = message
            .attributes()
            .and_then(|system| system.get(&MessageSystemAttributeName::MessageGroupId))
            .cloned();
        let body = message.body.unwrap_or_default();
        let letter = DeadLetter::new(
            &metadata,
            message_id,
            routing_key,
            body.clone().into_bytes(),
        );
        Self {
            letter,
            sqs_id,
            receipt,
            body,
            attributes: message.message_attributes,
            group,
        }
    }

    /// Whether `id` is its `message-id`, SQS's `MessageId`, or a webhook's in it.
    fn holds(&self, id: &str) -> bool {
        self.sqs_id == id || self.letter.holds(id)
    }

    /// What SQS counts of it against a call's size.
    fn bytes(&self) -> usize {
        let attributes: usize = self
            .attributes
            .iter()
            .flatten()
            .map(|(name, value)| {
                name.len()
                    + value.data_type().len()
                    + value.string_value().map_or(0, str::len)
                    + value.binary_value().map_or(0, |blob| blob.as_ref().len())
            })
            .sum();
        self.body.len() + attributes
    }
}

async fn walk(
    queue: &Queue,
    dead: &Queue,
    options: &ReplayOptions,
    report: &mut DeadLetterReport,
    held: &mut HashMap<String, String>,
) -> Result<(), OpsError> {
    let limit = options.limit.unwrap_or(u64::MAX);
    let mut seen = HashSet::new();
    while (report.letters.len() as u64) < limit {
        let messages = receive(dead).await?;
        let mut fresh = Vec::new();
        for message in messages {
            let (Some(id), Some(receipt)) = (message.message_id(), message.receipt_handle()) else {
                continue;
            };
            let (id, receipt) = (id.to_owned(), receipt.to_owned());
            if seen.insert(id.clone()) {
                fresh.push(Received::read(message, id, receipt));
            } else {
                // Back after LOOK_SECS: its newest receipt is the one that
                // makes it visible again.
                held.insert(id, receipt);
            }
        }
        if fresh.is_empty() {
            break;
        }
        let mut to_replay = Vec::new();
        for received in fresh {
            let taken = (report.letters.len() + to_replay.len()) as u64;
            let selected = options.selects(|id| received.holds(id));
            if taken >= limit {
                held.insert(received.sqs_id, received.receipt);
            } else if !selected {
                report.passed_over += 1;
                held.insert(received.sqs_id, received.receipt);
            } else if options.dry_run {
                held.insert(received.sqs_id, received.receipt);
                report.letters.push(received.letter);
            } else {
                to_replay.push(received);
            }
        }
        replay(queue, dead, to_replay, report, held).await?;
    }
    Ok(())
}

/// One receive from the dead-letter queue, each message kept invisible for
/// [`LOOK_SECS`] with everything a replay sends back.
async fn receive(dead: &Queue) -> Result<Vec<Message>, OpsError> {
    let output = call(
        format!("receiving from {}", dead.url),
        dead.client
            .receive_message()
            .queue_url(&dead.url)
            .max_number_of_messages(sqs::BATCH_ENTRIES as i32)
            .wait_time_seconds(1)
            .visibility_timeout(LOOK_SECS)
            .message_attribute_names("All")
            .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
            .message_system_attribute_names(MessageSystemAttributeName::MessageGroupId)
            .send(),
    )
    .await?;
    Ok(output.messages.unwrap_or_default())
}

/// Sends `letters` to `queue` and deletes from `dead` those SQS accepted.
async fn replay(
    queue: &Queue,
    dead: &Queue,
    letters: Vec<Received>,
    report: &mut DeadLetterReport,
    held: &mut HashMap<String, String>,
) -> Result<(), OpsError> {
    let mut chunks: Vec<Vec<Received>> = Vec::new();
    let mut bytes = 0;
    for letter in letters {
        let size = letter.bytes();
        match chunks.last_mut() {
            Some(chunk) if chunk.len() < sqs::BATCH_ENTRIES && bytes + size <= SEND_BATCH_BYTES => {
                bytes += size;
                chunk.push(letter);
            }
            _ => {
                bytes = size;
                chunks.push(vec![letter]);
            }
        }
    }
    let mut chunks = chunks.into_iter();
    while let Some(chunk) = chunks.next() {
        let failure = replay_chunk(queue, dead, chunk, report, held).await;
        if failure.is_err() {
            for letter in chunks.flatten() {
                held.insert(letter.sqs_id, letter.receipt);
            }
            return failure;
        }
    }
    Ok(())
}

async fn replay_chunk(
    queue: &Queue,
    dead: &Queue,
    chunk: Vec<Received>,
    report: &mut DeadLetterReport,
    held: &mut HashMap<String, String>,
) -> Result<(), OpsError> {
    let entries = send_entries(&chunk, sqs::is_fifo(&queue.url));
    let sent = call(
        format!("sending to {}", queue.url),
        queue
            .client
            .send_message_batch()
            .queue_url(&queue.url)
            .set_entries(Some(entries))
            .send(),
    )
    .await;
    let output = match sent {
        Ok(output) => output,
        Err(err) => {
            let message_id = chunk[0].letter.id().to_owned();
            for letter in chunk {
                held.insert(letter.sqs_id, letter.receipt);
            }
            return Err(OpsError::SqsNotReplayed {
                message_id,
                reason: error_chain(&err),
                replayed: report.letters.len(),
            });
        }
    };
    let accepted: HashSet<usize> = output
        .successful()
        .iter()
        .filter_map(|ok| ok.id().parse().ok())
        .collect();
    let replayed: Vec<(&str, &str)> = chunk
        .iter()
        .enumerate()
        .filter(|(i, _)| accepted.contains(i))
        .map(|(_, letter)| (letter.letter.id(), letter.receipt.as_str()))
        .collect();
    delete(dead, &replayed).await;
    let refused = first_refusal(output.failed(), &chunk);
    settle(chunk, &accepted, report, held);
    match refused {
        Some((message_id, reason)) => Err(OpsError::SqsNotReplayed {
            message_id,
            reason,
            replayed: report.letters.len(),
        }),
        None => Ok(()),
    }
}

/// Reports the letters of `chunk` SQS accepted (by index) as replayed and
/// holds the others, to be made visible again.
fn settle(
    chunk: Vec<Received>,
    accepted: &HashSet<usize>,
    report: &mut DeadLetterReport,
    held: &mut HashMap<String, String>,
) {
    for (i, letter) in chunk.into_iter().enumerate() {
        if accepted.contains(&i) {
            tracing::info!(
                message_id = letter.letter.id(),
                routing_key = letter.letter.routing_key,
                "replayed a dead-lettered message"
            );
            report.letters.push(letter.letter);
        } else {
            held.insert(letter.sqs_id, letter.receipt);
        }
    }
}

/// The `SendMessageBatch` entries of `chunk`, each with its index as its id.
fn send_entries(chunk: &[Received], fifo: bool) -> Vec<SendMessageBatchRequestEntry> {
    chunk
        .iter()
        .enumerate()
        .map(|(i, letter)| {
            // A FIFO queue refuses a message without a group. The
            // deduplication id is new to each replay: the message's own id
            // may still be in SQS's 5-minute window from its first sending,
            // and SQS would then answer success and drop it, after which
            // its dead-letter copy would be deleted.
            let (group, deduplication) = if fifo {
                let group = letter.group.clone().unwrap_or_else(|| "corral-0".into());
                (Some(group), Some(Uuid::now_v7().to_string()))
            } else {
                (None, None)
            };
            SendMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .message_body(&letter.body)
                .set_message_attributes(letter.attributes.clone())
                .set_message_group_id(group)
                .set_message_deduplication_id(deduplication)
                .build()
                .expect("id and body are set")
        })
        .collect()
}

/// The first entry SQS refused: the letter's id and SQS's code and message.
fn first_refusal(failed: &[BatchResultErrorEntry], chunk: &[Received]) -> Option<(String, String)> {
    failed.first().map(|failed| {
        let letter = failed
            .id()
            .parse::<usize>()
            .ok()
            .and_then(|i| chunk.get(i))
            .map_or("-", |letter| letter.letter.id())
            .to_owned();
        let reason = format!(
            "{}: {}",
            failed.code(),
            failed.message().unwrap_or("no message")
        );
        (letter, reason)
    })
}
