//! Keeping what is in hand invisible, and deleting what committed.

use std::{sync::Arc, time::Duration};

use aws_sdk_sqs::{
    error::DisplayErrorContext,
    types::{ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry},
};
use corral_runtime::sqs;
use futures_util::{StreamExt, stream};
use tokio::time::Instant;

use super::{DELETE_CALLS, Ledger};

/// Pushes back the visibility timeout of every message in hand before it
/// runs out.
pub(super) async fn extend(ledger: Arc<Ledger>) {
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
                .visibility_timeout(ledger.settings.visibility_secs())
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
pub(super) async fn delete_chunk(
    ledger: Arc<Ledger>,
    chunk: Vec<(u64, String)>,
    timeout: Duration,
) -> usize {
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
