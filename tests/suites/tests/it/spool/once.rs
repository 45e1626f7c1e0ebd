//! A webhook spooled and also published, or spooled and sent again by its
//! sender, is one row.

use corral_contract::envelope::Kind;
use corral_runtime::telemetry::labels::SpoolCause;
use corral_testkit::{apps::RunningWorker, fixtures, stack::Stack, wait};
use uuid::Uuid;

use super::helpers::*;
use crate::{
    ingress::helpers::{QUEUE_WAIT, accepted, authenticated, send},
    worker::helpers::{
        DUPLICATE, EVENTS, STORED, Sent, assert_each_stored_once, count, now_micros, publish_batch,
        settled, valid, wait_count,
    },
};

/// The broker confirms too late (a black-holed path that resumes): the
/// webhook is answered 200 from the spool, then also lands in the queue.
/// The worker takes both copies, and stores it once, under the answered id.
#[tokio::test]
async fn a_webhook_spooled_and_then_confirmed_is_one_row() {
    let stack = stage()
        .ingress(|ingress| {
            ingress.spool_after_ms = 200;
            // The stalled link must survive until the path resumes, so its
            // publish is confirmed after all.
            ingress.amqp.heartbeat_secs = 30;
        })
        .start()
        .await;
    let (broker, proxy, client) = (stack.broker(), stack.amqp_proxy(), stack.client().await);

    proxy.blackhole();
    let id = post_spooled(
        stack.ingress(),
        &client,
        "sms",
        fixtures::SMS_SUCCESS,
        SpoolCause::Slow,
    )
    .await;
    proxy.restore();
    wait::until_true("the late publish in the queue", QUEUE_WAIT, || async {
        broker.ready_count(&broker.queue()).await == 1
    })
    .await;

    let worker = RunningWorker::start(stack.worker_config()).await;
    wait_count(&client, SPOOLED_ROWS, 0).await;
    let metrics = settled(&worker, DUPLICATE, 1.0).await;
    assert_eq!(metrics.get(STORED), 1.0);
    assert_eq!(metrics.get(DRAINED), 1.0);
    wait::until_true("the queue emptied", WAIT, || async {
        broker.ready_count(&broker.queue()).await == 0
    })
    .await;
    let stored: Vec<Uuid> = client
        .query("SELECT message_id FROM delivery_events", &[])
        .await
        .expect("reading the rows")
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(stored, vec![id], "one row, under the id answered");
    worker.stop().await.expect("the worker stops cleanly");
}

/// A webhook spooled while the broker was away, then sent again by its
/// sender once the broker is back (a new request, a new id, the same body):
/// one row.
#[tokio::test]
async fn a_webhook_spooled_and_sent_again_is_one_row() {
    let mut stack = stage().start().await;
    without_broker(&mut stack).await;
    let (ingress, client) = (stack.ingress(), stack.client().await);

    let spooled_id = post_spooled(
        ingress,
        &client,
        "rvm",
        fixtures::SMS_FAILURE,
        SpoolCause::Unavailable,
    )
    .await;
    stack.amqp_proxy().restore();
    ingress.wait_broker(true).await;
    let before = ingress.metrics().await;
    let resent_id =
        accepted(send(authenticated(ingress, "rvm").body(fixtures::SMS_FAILURE)).await).await;
    assert_ne!(spooled_id, resent_id);
    assert_eq!(
        ingress
            .metrics()
            .await
            .get(r#"corral_ingress_published_total{kind="rvm"}"#)
            - before.get(r#"corral_ingress_published_total{kind="rvm"}"#),
        1.0,
        "the resend went to the broker"
    );

    let worker = RunningWorker::start(stack.worker_config()).await;
    wait_count(&client, SPOOLED_ROWS, 0).await;
    let metrics = settled(&worker, DUPLICATE, 1.0).await;
    assert_eq!(metrics.get(STORED), 1.0);
    assert_eq!(count(&client, EVENTS).await, 1);
    let stored: Uuid = client
        .query_one("SELECT message_id FROM delivery_events", &[])
        .await
        .expect("the row")
        .get(0);
    assert!(
        stored == spooled_id || stored == resent_id,
        "the row is one of the two copies"
    );
    worker.stop().await.expect("the worker stops cleanly");
}

/// A whole outage's worth of webhooks that are in the spool and in the queue
/// alike (the queue's copies in the opposite order, so both paths of the
/// worker meet them from opposite ends at once): each is one row, and every
/// second copy is counted as a duplicate.
#[tokio::test]
async fn webhooks_both_spooled_and_queued_are_each_one_row() {
    const WEBHOOKS: usize = 200;
    let stack = Stack::builder()
        .migrated()
        .worker_settings(draining)
        .worker_settings(|worker| worker.batch_max = 25)
        .start()
        .await;
    let (broker, client) = (stack.broker(), stack.client().await);
    let first = now_micros();
    let sent: Vec<Sent> = (0..WEBHOOKS)
        .map(|i| Sent {
            id: Uuid::now_v7(),
            received_at: first + chrono::Duration::microseconds(i as i64),
            routing_key: Kind::Sms.routing_key().to_owned(),
            body: valid("").1.into_bytes(),
        })
        .collect();
    for webhook in &sent {
        client
            .execute(
                "INSERT INTO spooled_webhooks (message_id, kind, body, received_at)
                 VALUES ($1, 'sms', $2, $3)",
                &[&webhook.id, &webhook.body, &webhook.received_at],
            )
            .await
            .expect("spooling a webhook as postgres");
    }
    let reversed: Vec<Sent> = sent.iter().rev().cloned().collect();
    for message in reversed.chunks(20) {
        publish_batch(broker, message).await;
    }

    let worker = RunningWorker::start(stack.worker_config()).await;
    wait_count(&client, EVENTS, WEBHOOKS as i64).await;
    wait_count(&client, SPOOLED_ROWS, 0).await;
    let metrics = settled(&worker, DUPLICATE, WEBHOOKS as f64).await;
    assert_eq!(metrics.get(STORED), WEBHOOKS as f64);
    assert_eq!(metrics.get(DUPLICATE), WEBHOOKS as f64);
    assert_eq!(metrics.get(DRAINED), WEBHOOKS as f64);
    assert_each_stored_once(&client, &sent).await;
    wait::until_true("the queue emptied", WAIT, || async {
        broker.ready_count(&broker.queue()).await == 0
    })
    .await;
    worker.stop().await.expect("the worker stops cleanly");
}
