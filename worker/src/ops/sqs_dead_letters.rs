//! Dead letters with `CORRAL_BUFFER=sqs`: the dead-letter queue is the one
//! the queue's redrive policy names (`deadLetterTargetArn`), where SQS moves
//! a message received `maxReceiveCount` times without being deleted.
//! [`list_sqs_dead_letters`] shows them and [`replay_sqs_dead_letters`]
//! sends them back to the queue as they are: the same body and message
//! attributes, so the webhooks of an envelope-2 message go back together
//! and the worker stores each once.
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

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use aws_sdk_sqs::{
    error::{ProvideErrorMetadata, SdkError},
    types::{
        ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry, Message,
        MessageAttributeValue, MessageSystemAttributeName, SendMessageBatchRequestEntry,
    },
};
use corral_shared::{
    envelope::Envelope,
    error_chain,
    sqs::{self, Queue},
};
use uuid::Uuid;

use super::{
    OpsError,
    dead_letters::{DeadLetter, DeadLetterReport, ReplayOptions, webhooks_of},
};

/// Seconds a message received by a dead-letter command stays invisible to
/// others, unless made visible again sooner.
pub const LOOK_SECS: i32 = 30;

/// Bound on each SQS call.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Bodies and attributes per `SendMessageBatch` at most: SQS's smallest
/// limit on a whole call (a queue's `MaximumMessageSize` may be raised to
/// 1 MiB; a message that large goes in a call of its own).
const SEND_BATCH_BYTES: usize = 256 * 1024;

/// The dead-letter queue `queue`'s redrive policy names; an error naming
/// what to set when it has none.
pub async fn dead_letter_queue(queue: &Queue) -> Result<Queue, OpsError> {
    let depth = checked(
        format!("asking SQS for the redrive policy of {}", queue.url),
        sqs::depth(&queue.client, &queue.url),
    )
    .await?;
    let policy = depth
        .redrive_policy
        .ok_or_else(|| OpsError::NoRedrivePolicy {
            queue: queue.url.clone(),
        })?;
    let target = sqs::dead_letter_target(&policy).map_err(|source| OpsError::BadRedrivePolicy {
        queue: queue.url.clone(),
        source,
    })?;
    let url = checked(
        format!("finding the dead-letter queue {} (GetQueueUrl)", target.arn),
        sqs::dead_letter_url(&queue.client, &target),
    )
    .await?;
    Ok(Queue {
        client: queue.client.clone(),
        url,
    })
}

/// Shows up to `limit` messages of the dead-letter queue, removing none.
pub async fn list_sqs_dead_letters(
    queue: &Queue,
    limit: u64,
) -> Result<DeadLetterReport, OpsError> {
    walk_sqs(
        queue,
        &ReplayOptions {
            dry_run: true,
            limit: Some(limit),
            message_ids: Vec::new(),
        },
    )
    .await
}

/// Sends dead letters back to `queue` (see the module documentation for why
/// none can be lost). On a failure it stops: what failed stays in the
/// dead-letter queue, and the error says how many were replayed before.
pub async fn replay_sqs_dead_letters(
    queue: &Queue,
    options: &ReplayOptions,
) -> Result<DeadLetterReport, OpsError> {
    walk_sqs(queue, options).await
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
        let webhooks = webhooks_of(
            &metadata,
            message_id.as_deref(),
            &routing_key,
            body.as_bytes(),
        );
        let letter = DeadLetter {
            message_id,
            routing_key,
            reason: None,
            queue: None,
            deaths: 0,
            received_at: Envelope::read(&metadata).received_at,
            body: body.clone().into_bytes(),
            webhooks,
        };
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

async fn walk_sqs(queue: &Queue, options: &ReplayOptions) -> Result<DeadLetterReport, OpsError> {
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
        let messages = call(
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
        .await?
        .messages
        .unwrap_or_default();
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
            let selected = options.message_ids.is_empty()
                || options.message_ids.iter().any(|id| received.holds(id));
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
    let fifo = sqs::is_fifo(&queue.url);
    let entries = chunk
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
        .collect();
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
    delete(
        dead,
        chunk
            .iter()
            .enumerate()
            .filter(|(i, _)| accepted.contains(i))
            .map(|(_, letter)| letter),
    )
    .await;
    let refused = output.failed().first().map(|failed| {
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
    });
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
    match refused {
        Some((message_id, reason)) => Err(OpsError::SqsNotReplayed {
            message_id,
            reason,
            replayed: report.letters.len(),
        }),
        None => Ok(()),
    }
}

/// Deletes replayed messages from the dead-letter queue. One SQS did not
/// delete comes back there: replaying it again makes a duplicate, which
/// the worker stores once.
async fn delete<'a>(dead: &Queue, letters: impl Iterator<Item = &'a Received>) {
    let letters: Vec<&Received> = letters.collect();
    for chunk in letters.chunks(sqs::BATCH_ENTRIES) {
        let entries = chunk
            .iter()
            .enumerate()
            .map(|(i, letter)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(&letter.receipt)
                    .build()
                    .expect("id and receipt are set")
            })
            .collect();
        let deleted = call(
            format!("deleting replayed messages from {}", dead.url),
            dead.client
                .delete_message_batch()
                .queue_url(&dead.url)
                .set_entries(Some(entries))
                .send(),
        )
        .await;
        let undeleted: Vec<(String, String)> = match deleted {
            Ok(output) => output
                .failed()
                .iter()
                .map(|failed| {
                    let id = failed
                        .id()
                        .parse::<usize>()
                        .ok()
                        .and_then(|i| chunk.get(i))
                        .map_or("-", |letter| letter.letter.id());
                    (
                        id.to_owned(),
                        format!("{}: {}", failed.code(), failed.message().unwrap_or("")),
                    )
                })
                .collect(),
            Err(err) => {
                let why = error_chain(&err);
                chunk
                    .iter()
                    .map(|letter| (letter.letter.id().to_owned(), why.clone()))
                    .collect()
            }
        };
        for (message_id, error) in undeleted {
            tracing::warn!(
                message_id,
                error,
                "replayed, but the dead-letter copy was not deleted; it is back in the \
                 dead-letter queue within {LOOK_SECS} s, and replaying it again is harmless \
                 (the worker stores its webhooks once)"
            );
        }
    }
}

/// Makes the messages received and not deleted visible again at once.
async fn release(dead: &Queue, held: HashMap<String, String>) {
    let held: Vec<(String, String)> = held.into_iter().collect();
    for chunk in held.chunks(sqs::BATCH_ENTRIES) {
        let entries = chunk
            .iter()
            .enumerate()
            .map(|(i, (_, receipt))| {
                ChangeMessageVisibilityBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(receipt)
                    .visibility_timeout(0)
                    .build()
                    .expect("id and receipt are set")
            })
            .collect();
        let changed = call(
            format!("making messages of {} visible again", dead.url),
            dead.client
                .change_message_visibility_batch()
                .queue_url(&dead.url)
                .set_entries(Some(entries))
                .send(),
        )
        .await;
        let failures: Vec<String> = match changed {
            Ok(output) => output
                .failed()
                .iter()
                .map(|failed| format!("{}: {}", failed.code(), failed.message().unwrap_or("")))
                .collect(),
            Err(err) => vec![error_chain(&err); chunk.len()],
        };
        for error in failures {
            tracing::warn!(
                error,
                "a dead letter looked at could not be made visible again at once; it is \
                 visible again within {LOOK_SECS} s"
            );
        }
    }
}

/// One SQS call, bounded, its failure an [`OpsError::Sqs`] saying what was done.
async fn call<T, E, R>(
    context: String,
    request: impl Future<Output = Result<T, SdkError<E, R>>>,
) -> Result<T, OpsError>
where
    E: std::error::Error + ProvideErrorMetadata + 'static,
    R: std::fmt::Debug,
{
    checked(context, async {
        request.await.map_err(|err| sqs::classify(&err))
    })
    .await
}

/// The same for a call [`sqs`] already classified.
async fn checked<T>(
    context: String,
    request: impl Future<Output = Result<T, sqs::CheckError>>,
) -> Result<T, OpsError> {
    match tokio::time::timeout(CALL_TIMEOUT, request).await {
        Ok(Ok(output)) => Ok(output),
        Ok(Err(source)) => Err(OpsError::Sqs { context, source }),
        Err(_elapsed) => Err(OpsError::Sqs {
            context,
            source: sqs::CheckError::Unreachable(format!("no answer within {CALL_TIMEOUT:?}")),
        }),
    }
}
