//! Ingress and worker over SQS: what is answered 200 is one row.

use corral_testkit::{
    apps::TOKEN,
    process::{Process, ProcessConfig},
    sqs::ENDPOINT,
    stack::Stack,
    wait,
};
use uuid::Uuid;

use super::{WAIT, assert_each_once, kind, webhook};
use crate::ingress::helpers::accepted;

/// Webhooks posted at once to an ingress with one call slot leave several
/// per SQS message, and each becomes one row.
#[tokio::test]
async fn webhooks_through_sqs_are_each_one_row_and_share_messages() {
    const N: usize = 120;
    let mut stack = Stack::builder()
        .sqs()
        // One SendMessageBatch at a time: whatever arrives meanwhile waits and
        // leaves with the next one.
        .ingress(|ingress| ingress.publish_concurrency = 1)
        .with_worker()
        .start()
        .await;
    let (queue, ingress, worker) = (stack.queue(), stack.ingress(), stack.worker());

    let posts = (0..N).map(|i| ingress.post(kind(i), webhook(i)));
    let mut ids: Vec<Uuid> = Vec::with_capacity(N);
    for response in futures_util::future::join_all(posts).await {
        ids.push(accepted(response).await);
    }

    let client = stack.client().await;
    assert_each_once(&client, &ids).await;
    let metrics = ingress.metrics().await;
    let messages = metrics.get("corral_ingress_publish_batch_size_count");
    let webhooks = metrics.get("corral_ingress_publish_batch_size_sum");
    assert_eq!(webhooks, N as f64, "webhooks sent");
    eprintln!("{N} webhooks left ingress in {messages} SQS messages");
    assert!(
        messages < N as f64,
        "{N} webhooks left in {messages} SQS messages: none shared one"
    );
    let stored = r#"corral_worker_messages_total{outcome="stored"}"#;
    wait::until_true("the worker to count every row", WAIT, || async {
        worker.metrics().await.get(stored) >= N as f64
    })
    .await;
    wait::until_true("the queue to be empty", WAIT, || async {
        queue.counts().await == (0, 0)
    })
    .await;
    stack.stop_worker().await.expect("the worker stops");
    stack.stop_ingress().await.expect("the ingress stops");
}

/// Both binaries as processes, configured by the environment alone
/// (`CORRAL_BUFFER`, `CORRAL_SQS_*`, and the standard AWS variables).
#[tokio::test]
async fn both_processes_configured_by_the_environment_use_sqs() {
    const N: usize = 40;
    let stack = Stack::builder().sqs().database().start().await;
    let (queue, db) = (stack.queue(), stack.db());
    let ingress =
        Process::start(ProcessConfig::ingress("corral-unused", TOKEN).sqs(&queue.url, ENDPOINT))
            .await;
    let worker =
        Process::start(ProcessConfig::worker(&db.url, "corral-unused").sqs(&queue.url, ENDPOINT))
            .await;
    ingress.wait_ready(true).await;
    worker.wait_ready(true).await;

    let http = reqwest::Client::new();
    let mut ids = Vec::with_capacity(N);
    for i in 0..N {
        let response = http
            .post(ingress.webhook_url(kind(i)))
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(webhook(i))
            .send()
            .await
            .expect("the ingress answers");
        ids.push(accepted(response).await);
    }
    let client = db.client().await;
    assert_each_once(&client, &ids).await;
}
