//! A FIFO queue, and fuller calls by lingering: what SQS bills for.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_sqs::types::MessageSystemAttributeName;
use corral_contract::envelope::batch;
use corral_testkit::{sqs::QueueOptions, stack::Stack, wait};
use uuid::Uuid;

use super::{WAIT, assert_each_once, kind, webhook};
use crate::ingress::helpers::accepted;

/// Webhook `i`, to one of `numbers` recipients.
fn to_number(i: usize, numbers: usize) -> String {
    webhook(i).replace("+15552224444", &format!("+1555000{:04}", i % numbers))
}

/// On a FIFO queue every message has a group and a deduplication id, one
/// number's webhooks all travel in one group, and each is stored once.
#[tokio::test]
async fn a_fifo_queue_keeps_one_numbers_webhooks_in_one_group() {
    const N: usize = 60;
    const NUMBERS: usize = 6;
    let mut stack = Stack::builder()
        .sqs_with(QueueOptions {
            fifo: true,
            ..QueueOptions::default()
        })
        .ingress(|ingress| ingress.publish_concurrency = 1)
        .database()
        .start()
        .await;
    let (queue, ingress) = (stack.queue(), stack.ingress());
    let posts = (0..N).map(|i| ingress.post(kind(i), to_number(i, NUMBERS)));
    let mut ids: Vec<Uuid> = Vec::with_capacity(N);
    for response in futures_util::future::join_all(posts).await {
        ids.push(accepted(response).await);
    }

    // Read every message before any worker: each number in one group only.
    let mut group_of_number: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut seen = 0;
    let mut read = BTreeSet::new();
    let deadline = std::time::Instant::now() + WAIT;
    while seen < N {
        assert!(
            std::time::Instant::now() < deadline,
            "read back {seen} of {N} webhooks within {WAIT:?}"
        );
        let received = queue
            .client
            .receive_message()
            .queue_url(&queue.url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .visibility_timeout(1)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await
            .expect("receiving from the FIFO queue");
        for message in received.messages() {
            // On a loaded machine a message can come back (its 1 s visibility
            // ran out) before the loop is done: count each one once.
            let sqs_id = message.message_id().expect("a message id").to_owned();
            if !read.insert(sqs_id) {
                continue;
            }
            let attributes = message.attributes().expect("system attributes");
            let group = attributes
                .get(&MessageSystemAttributeName::MessageGroupId)
                .expect("a message group")
                .clone();
            assert!(
                attributes.contains_key(&MessageSystemAttributeName::MessageDeduplicationId),
                "a deduplication id"
            );
            let body = message.body().expect("a body");
            for webhook in batch::decode(body.as_bytes()).expect("an envelope-2 body") {
                let fields: serde_json::Value =
                    serde_json::from_slice(&webhook.body).expect("a JSON webhook");
                let number = fields["phone_number"]
                    .as_str()
                    .expect("a number")
                    .to_owned();
                group_of_number
                    .entry(number)
                    .or_default()
                    .insert(group.clone());
                seen += 1;
            }
        }
    }
    assert_eq!(seen, N, "webhooks read back");
    assert_eq!(group_of_number.len(), NUMBERS);
    for (number, groups) in &group_of_number {
        assert_eq!(groups.len(), 1, "{number} travelled in groups {groups:?}");
    }

    // Back visible after a second; a worker stores each once.
    stack.start_worker().await;
    assert_each_once(&stack.client().await, &ids).await;
    wait::until_true("the queue to be empty", WAIT, || async {
        stack.queue().counts().await == (0, 0)
    })
    .await;
    stack.stop_worker().await.expect("the worker stops");
    stack.stop_ingress().await.expect("the ingress stops");
}

/// A call that is not full waits `CORRAL_SQS_LINGER_MS` for more: two
/// webhooks posted one after the other leave in one request, and the
/// request counter (what SQS bills) says so.
#[tokio::test]
async fn lingering_sends_webhooks_posted_apart_in_one_request() {
    let mut stack = Stack::builder()
        .sqs()
        .ingress(|ingress| ingress.sqs_linger_ms = 2_000)
        .start()
        .await;
    let (queue, ingress) = (stack.queue(), stack.ingress());
    let sends = r#"corral_sqs_requests_total{operation="SendMessageBatch"}"#;
    assert_eq!(ingress.metrics().await.get(sends), 0.0);

    let (first, second) = tokio::join!(
        async { accepted(ingress.post("sms", webhook(1)).await).await },
        async {
            wait::until_true("the first webhook to wait for its call", WAIT, || async {
                ingress
                    .metrics()
                    .await
                    .get("corral_ingress_publishes_in_flight")
                    == 1.0
            })
            .await;
            accepted(ingress.post("rvm", webhook(2)).await).await
        }
    );
    assert_ne!(first, second);

    let metrics = ingress.metrics().await;
    assert_eq!(metrics.get(sends), 1.0, "SendMessageBatch requests");
    assert_eq!(
        metrics.get("corral_ingress_publish_batch_size_count"),
        1.0,
        "SQS messages"
    );
    assert_eq!(
        metrics.get(r#"corral_sqs_billed_requests_total{operation="SendMessageBatch"}"#),
        1.0,
        "billed SendMessageBatch requests"
    );
    assert_eq!(queue.counts().await, (1, 0));
    stack.stop_ingress().await.expect("the ingress stops");
}
