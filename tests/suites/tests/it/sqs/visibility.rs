//! A message received and not deleted comes back once its visibility
//! timeout runs out, and its webhooks are stored once; one that keeps
//! coming back without being deleted goes to the dead-letter queue.

use std::time::Duration;

use corral_testkit::{
    sqs::QueueOptions,
    stack::{Stack, StackBuilder, Via},
    wait,
};
use corral_worker::config::WorkerConfig;

use super::{WAIT, assert_each_once, send_message};
use crate::worker::helpers::{DUPLICATE, EVENTS, STORED, count, settled};

const ACK_FAILURES: &str = "corral_worker_ack_failures_total";
const IN_HAND: &str = "corral_worker_messages_in_hand";

/// A queue whose messages come back two seconds after a receive.
fn short_visibility_queue(stack: StackBuilder) -> StackBuilder {
    stack.sqs_with(QueueOptions {
        visibility_secs: 2,
        ..QueueOptions::default()
    })
}

/// A worker that polls briefly, extends to two seconds, and retries fast.
fn worker(config: &mut WorkerConfig) {
    config.sqs_wait_secs = 1;
    config.sqs_visibility_secs = 2;
    config.db.db_timeout_ms = 1_000;
    config.db.db_retry_max_ms = 300;
    config.amqp.reconnect_max_ms = 300;
}

/// Another consumer took the message and stalled: the worker gets it only
/// once its visibility timeout has run out, and stores it once.
#[tokio::test]
async fn a_message_a_stalled_consumer_held_comes_back_and_is_stored_once() {
    let mut stack = short_visibility_queue(Stack::builder())
        .worker_settings(worker)
        .start()
        .await;
    let ids = send_message(stack.queue(), 0, 3).await;
    let held = stack.queue().take_and_hold(Duration::from_secs(3)).await;
    assert_eq!(held.len(), 1, "the stalled consumer holds the message");

    stack.start_worker().await;
    let (queue, worker, client) = (stack.queue(), stack.worker(), stack.client().await);
    wait::holds(
        "nothing stored while the other consumer holds the message",
        Duration::from_millis(1_500),
        || async {
            match count(&client, EVENTS).await {
                0 => Ok(()),
                n => Err(format!("{n} rows")),
            }
        },
    )
    .await;
    assert_each_once(&client, &ids).await;
    settled(worker, STORED, 3.0).await;
    wait::until_true("the queue to be empty", WAIT, || async {
        queue.counts().await == (0, 0)
    })
    .await;
    stack.stop_worker().await.expect("the worker stops");
}

/// The worker commits a message but SQS is cut before the delete: the
/// delete fails (counted), the message comes back once its visibility
/// timeout runs out, and its webhooks count as duplicates, stored once.
#[tokio::test]
async fn a_committed_message_sqs_did_not_delete_comes_back_as_duplicates() {
    let mut stack = short_visibility_queue(Stack::builder())
        .sqs_proxy(Via::Worker)
        .db_proxy()
        .worker(worker)
        .start()
        .await;
    let (queue, worker) = (stack.queue(), stack.worker());
    let (database, sqs) = (stack.db_proxy(), stack.sqs_proxy());

    // The database stalls: the worker holds the message, extending it.
    database.blackhole();
    let ids = send_message(queue, 0, 3).await;
    wait::until_true("the worker to hold the message", WAIT, || async {
        worker.metrics().await.get(IN_HAND) >= 1.0
    })
    .await;
    // Held past two visibility timeouts: the extensions keep it.
    wait::holds(
        "the message stays invisible while the worker holds it",
        Duration::from_secs(5),
        || async {
            match queue.counts().await {
                (0, _) => Ok(()),
                counts => Err(format!("visible again: {counts:?}")),
            }
        },
    )
    .await;
    // SQS goes away, then the database comes back: the batch commits and
    // its delete cannot reach SQS.
    sqs.cut();
    database.restore();
    wait::until_true("the delete to fail", WAIT, || async {
        worker.metrics().await.get(ACK_FAILURES) >= 1.0
    })
    .await;
    let client = stack.client().await;
    assert_each_once(&client, &ids).await;

    sqs.restore();
    settled(worker, DUPLICATE, 3.0).await;
    assert_each_once(&client, &ids).await;
    wait::until_true("the queue to be empty", WAIT, || async {
        queue.counts().await == (0, 0)
    })
    .await;
    stack.stop_worker().await.expect("the worker stops");
}

/// A message received again and again and never deleted — consumers that
/// keep failing on it — goes to the dead-letter queue after the redrive
/// policy's `maxReceiveCount`, and no worker stores it.
#[tokio::test]
async fn a_message_that_keeps_failing_goes_to_the_dead_letter_queue() {
    let mut stack = Stack::builder()
        .sqs_with(QueueOptions {
            visibility_secs: 1,
            max_receive_count: 2,
            ..QueueOptions::default()
        })
        .worker_settings(worker)
        .start()
        .await;
    let queue = stack.queue();
    send_message(queue, 0, 2).await;
    for receive in 1..=2 {
        let held = wait::until(&format!("receive {receive}"), WAIT, || async {
            let held = queue.take_and_hold(Duration::from_secs(1)).await;
            (!held.is_empty()).then_some(held)
        })
        .await;
        assert_eq!(held.len(), 1);
    }
    let dead = wait::until("the message in the dead-letter queue", WAIT, || async {
        // A receive past maxReceiveCount is what moves it.
        let _ = queue.take_and_hold(Duration::from_secs(1)).await;
        let dead = queue.dead_letters().await;
        (!dead.is_empty()).then_some(dead)
    })
    .await;
    assert_eq!(dead.len(), 1);

    stack.start_worker().await;
    let client = stack.client().await;
    wait::holds(
        "the worker stores nothing",
        Duration::from_secs(2),
        || async {
            match count(&client, EVENTS).await {
                0 => Ok(()),
                n => Err(format!("{n} rows")),
            }
        },
    )
    .await;
    stack.stop_worker().await.expect("the worker stops");
}
