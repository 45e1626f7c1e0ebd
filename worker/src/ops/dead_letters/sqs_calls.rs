//! The SQS calls of the dead-letter commands, each bounded by a deadline:
//! finding the dead-letter queue, deleting what was replayed, and making
//! what was only looked at visible again.

use std::{collections::HashMap, time::Duration};

use aws_sdk_sqs::{
    error::{ProvideErrorMetadata, SdkError},
    types::{ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry},
};
use corral_runtime::{
    error_chain,
    sqs::{self, Queue},
};

use crate::ops::OpsError;

/// Seconds a message received by a dead-letter command stays invisible to
/// others, unless made visible again sooner.
pub const LOOK_SECS: i32 = 30;

/// Bound on each SQS call.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The dead-letter queue `queue`'s redrive policy names; an error naming
/// what to set when it has none.
pub(super) async fn dead_letter_queue(queue: &Queue) -> Result<Queue, OpsError> {
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

/// Deletes replayed messages from the dead-letter queue. One SQS did not
/// delete comes back there: replaying it again makes a duplicate, which
/// the worker stores once.
/// `letters`: each one's id (for the log) and receipt.
pub(super) async fn delete(dead: &Queue, letters: &[(&str, &str)]) {
    for chunk in letters.chunks(sqs::BATCH_ENTRIES) {
        let entries = chunk
            .iter()
            .enumerate()
            .map(|(i, letter)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(letter.1)
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
                        .map_or("-", |letter| letter.0);
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
                    .map(|letter| (letter.0.to_owned(), why.clone()))
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
pub(super) async fn release(dead: &Queue, held: HashMap<String, String>) {
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
pub(super) async fn call<T, E, R>(
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
pub(super) async fn checked<T>(
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
