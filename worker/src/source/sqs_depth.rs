//! What SQS holds, for Prometheus: RabbitMQ exports its queues' depth
//! itself, SQS only to CloudWatch. Every [`PERIOD`] each worker asks SQS
//! (`GetQueueAttributes`, one call per queue) for the message counts of the
//! queue and of the dead-letter queue its redrive policy names, and sets
//! `corral_worker_sqs_queue_messages`; it also sets
//! `corral_worker_sqs_oldest_received_seconds` from what its source
//! received meanwhile ([`OldestReceived`]).

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use corral_runtime::{
    sqs::{self, DeadLetterTarget, Queue},
    telemetry::{labels::SqsQueue, metrics},
};
use tokio_util::sync::CancellationToken;

/// How often the queues are measured.
pub const PERIOD: Duration = Duration::from_secs(15);

/// Bound on each call of a measurement.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest wait in the queue (receipt time minus `SentTimestamp`) of the
/// messages received since the last [`OldestReceived::take`]; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct OldestReceived(Arc<AtomicU64>);

impl OldestReceived {
    /// A message SQS took at `sent_millis` (ms since the epoch) was received now.
    pub fn received(&self, sent_millis: u64) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| {
                u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
            });
        // A clock behind SQS's makes a fresh message look younger than 0.
        self.0
            .fetch_max(now.saturating_sub(sent_millis), Ordering::Relaxed);
    }

    /// The longest wait since the last call, and starts over; zero when
    /// nothing was received.
    pub fn take(&self) -> Duration {
        Duration::from_millis(self.0.swap(0, Ordering::Relaxed))
    }
}

/// Measures `queue` (and its dead-letter queue) every [`PERIOD`], the first
/// time at once, until `shutdown`.
pub async fn measure(queue: Queue, oldest: OldestReceived, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The dead-letter queue's ARN and URL, asked for again only when the
    // redrive policy names another.
    let mut dead_letters: Option<(DeadLetterTarget, String)> = None;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        metrics::worker_sqs_oldest_received(oldest.take().as_secs_f64());
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = measure_once(&queue, &mut dead_letters) => {}
        }
    }
}

async fn measure_once(queue: &Queue, dead_letters: &mut Option<(DeadLetterTarget, String)>) {
    let main = match bounded(sqs::depth(&queue.client, &queue.url)).await {
        Ok(depth) => depth,
        Err(why) => {
            tracing::warn!(
                queue = queue.url,
                error = why,
                "could not measure the SQS queue"
            );
            return;
        }
    };
    metrics::worker_sqs_queue(SqsQueue::Main, main.visible, main.in_flight, main.delayed);
    let Some(policy) = main.redrive_policy else {
        if dead_letters.take().is_some() {
            // The policy is gone: its queue is no longer this one's.
            metrics::worker_sqs_queue(SqsQueue::DeadLetter, 0, 0, 0);
        }
        return;
    };
    let target = match sqs::dead_letter_target(&policy) {
        Ok(target) => target,
        Err(err) => {
            tracing::warn!(queue = queue.url, error = %err, "cannot measure the dead-letter queue");
            return;
        }
    };
    if dead_letters
        .as_ref()
        .is_none_or(|(known, _)| *known != target)
    {
        match bounded(sqs::dead_letter_url(&queue.client, &target)).await {
            Ok(url) => *dead_letters = Some((target, url)),
            Err(why) => {
                tracing::warn!(
                    dead_letter_queue = target.arn,
                    error = why,
                    "could not find the dead-letter queue the redrive policy names"
                );
                return;
            }
        }
    }
    let Some((_, url)) = dead_letters.as_ref() else {
        return;
    };
    match bounded(sqs::depth(&queue.client, url)).await {
        Ok(depth) => metrics::worker_sqs_queue(
            SqsQueue::DeadLetter,
            depth.visible,
            depth.in_flight,
            depth.delayed,
        ),
        Err(why) => tracing::warn!(
            dead_letter_queue = url,
            error = why,
            "could not measure the dead-letter queue"
        ),
    }
}

async fn bounded<T>(call: impl Future<Output = Result<T, sqs::CheckError>>) -> Result<T, String> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => Err(err.to_string()),
        Err(_elapsed) => Err(format!("no answer within {CALL_TIMEOUT:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_wait_is_kept_until_taken() {
        let oldest = OldestReceived::default();
        assert_eq!(oldest.take(), Duration::ZERO);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        oldest.received(now - 5_000);
        oldest.received(now - 60_000);
        oldest.received(now - 1_000);
        // A clock behind SQS's.
        oldest.received(now + 10_000);
        let taken = oldest.take();
        assert!(taken >= Duration::from_secs(60), "{taken:?}");
        assert!(taken < Duration::from_secs(70), "{taken:?}");
        assert_eq!(oldest.take(), Duration::ZERO);
    }
}
