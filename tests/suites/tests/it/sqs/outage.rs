//! SQS unreachable: a webhook goes to the spool where one is configured,
//! and is answered 503 where none is.

use corral_runtime::telemetry::labels::SpoolCause;
use corral_testkit::{
    apps::RunningIngress,
    fixtures,
    process::free_port,
    sqs::QueueOptions,
    stack::{Stack, Via},
    wait,
};

use super::{WAIT, assert_each_once, webhook};
use crate::ingress::helpers::{RETRY_AFTER_SECS, accepted, publish_failures, unavailable};

/// No spool and no SQS: 503 with `Retry-After`, counted as unavailable.
#[tokio::test]
async fn without_a_spool_a_webhook_sqs_cannot_take_gets_503() {
    let stack = Stack::builder().sqs().start().await;
    let mut config = stack.ingress_config();
    // Nothing listens there.
    config.buffer = stack
        .queue()
        .settings_via(&format!("http://127.0.0.1:{}", free_port()));
    config.retry_after_secs = RETRY_AFTER_SECS;
    let ingress = RunningIngress::start_unready(config).await;
    ingress.wait_ready(false).await;

    unavailable(ingress.post("sms", fixtures::SMS_SUCCESS).await).await;
    assert_eq!(
        publish_failures(&ingress.metrics().await, "unavailable"),
        1.0
    );
    ingress.stop().await.expect("the ingress stops");
}

/// SQS answers and refuses a call (a message over the queue's
/// `MaximumMessageSize`, beyond what `CORRAL_SQS_MAX_MESSAGE_BYTES` said):
/// those webhooks get 503 as refused (nack), SQS stays ready, and the next
/// webhook that fits is taken.
#[tokio::test]
async fn a_call_sqs_refuses_refuses_its_webhooks_and_not_the_next() {
    let mut stack = Stack::builder()
        .sqs_with(QueueOptions {
            maximum_message_size: 2_048,
            ..QueueOptions::default()
        })
        .ingress(|ingress| ingress.retry_after_secs = RETRY_AFTER_SECS)
        .start()
        .await;
    let ingress = stack.ingress();

    let large = fixtures::delivery_status(&"x".repeat(4_000), "2026-11-27T05:24:31.000Z", "", "o");
    unavailable(ingress.post("sms", large).await).await;
    let metrics = ingress.metrics().await;
    assert_eq!(publish_failures(&metrics, "nack"), 1.0);
    assert_eq!(publish_failures(&metrics, "unavailable"), 0.0);
    accepted(ingress.post("sms", webhook(0)).await).await;
    stack.stop_ingress().await.expect("the ingress stops");
}

/// SQS cut while ingress runs: webhooks are spooled and answered 200, and a
/// worker stores what went through SQS and what was spooled, each once.
#[tokio::test]
async fn with_a_spool_webhooks_sqs_cannot_take_are_spooled_then_stored_once() {
    let mut stack = Stack::builder()
        .sqs_proxy(Via::Ingress)
        .spool()
        .ingress(|ingress| ingress.publish_timeout_ms = 3_000)
        .worker_settings(|worker| worker.spool.spool_poll_ms = 50)
        .start()
        .await;
    let (ingress, proxy) = (stack.ingress(), stack.sqs_proxy());

    let mut ids = vec![accepted(ingress.post("sms", webhook(0)).await).await];
    proxy.cut();
    ingress.wait_broker(false).await;
    for i in 1..=5 {
        ids.push(accepted(ingress.post("rvm", webhook(i)).await).await);
    }
    let spooled = format!(
        "corral_ingress_spooled_total{{cause=\"{}\"}}",
        SpoolCause::Unavailable.as_str()
    );
    assert_eq!(ingress.metrics().await.get(&spooled), 5.0);

    stack.start_worker().await;
    let client = stack.client().await;
    assert_each_once(&client, &ids).await;
    wait::until_true("the spool to be drained", WAIT, || async {
        client
            .query_one("SELECT count(*) FROM spooled_webhooks", &[])
            .await
            .map(|row| row.get::<_, i64>(0) == 0)
            .unwrap_or(false)
    })
    .await;
    stack.stop_worker().await.expect("the worker stops");
    stack.stop_ingress().await.expect("the ingress stops");
}
