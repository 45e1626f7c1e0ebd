//! Envelope 2: every webhook of a message is stored (or quarantined) on its
//! own, a message that cannot be unpacked is quarantined whole, and a message
//! is never split across transactions.

use chrono::{DateTime, Utc};
use corral_contract::envelope::{
    self, Kind,
    batch::{self, Packing},
};
use corral_testkit::apps::RunningWorker;
use uuid::Uuid;

use super::helpers::*;

const BATCH_SIZE_SUM: &str = "corral_worker_batch_size_sum";
const BATCH_SIZE_COUNT: &str = "corral_worker_batch_size_count";
const END_TO_END_COUNT: &str = "corral_worker_end_to_end_seconds_count";
const IN_HAND: &str = "corral_worker_messages_in_hand";

/// Four valid webhooks of both kinds, one with whitespace around its object
/// (so it travels as `body_text`), and their drop ids.
fn mixed() -> (Vec<String>, Vec<(Kind, Vec<u8>)>) {
    let mut drop_ids = Vec::new();
    let mut webhooks = Vec::new();
    for (i, kind) in [Kind::Sms, Kind::Rvm, Kind::Sms, Kind::Rvm]
        .into_iter()
        .enumerate()
    {
        let (drop_id, body) = valid(if i % 2 == 0 { "" } else { "No Funds" });
        let body = if i == 1 { format!(" {body}\n") } else { body };
        drop_ids.push(drop_id);
        webhooks.push((kind, body.into_bytes()));
    }
    (drop_ids, webhooks)
}

fn borrowed(webhooks: &[(Kind, Vec<u8>)]) -> Vec<(Kind, &[u8])> {
    webhooks
        .iter()
        .map(|(kind, body)| (*kind, body.as_slice()))
        .collect()
}

#[tokio::test]
async fn every_webhook_of_a_mixed_batch_is_stored_once_with_its_own_id_and_received_at() {
    let mut stack = worker_stack().with_worker().start().await;
    let (broker, worker, client) = (stack.broker(), stack.worker(), stack.client().await);
    let (drop_ids, webhooks) = mixed();
    let sent = send_batch(broker, &borrowed(&webhooks)).await;

    let metrics = settled(worker, STORED, 4.0).await;
    assert_each_stored_once(&client, &sent).await;
    for (s, drop_id) in sent.iter().zip(&drop_ids) {
        let row = client
            .query_one(
                "SELECT kind, drop_id, received_at FROM delivery_events WHERE message_id = $1",
                &[&s.id],
            )
            .await
            .expect("the webhook's row");
        assert_eq!(
            row.get::<_, String>(0),
            s.routing_key.trim_start_matches("dropcowboy.")
        );
        assert_eq!(&row.get::<_, String>(1), drop_id);
        assert_eq!(row.get::<_, DateTime<Utc>>(2), s.received_at);
    }
    assert_eq!(
        metrics.get(STORED),
        4.0,
        "webhooks are counted, not messages"
    );
    assert_eq!(metrics.get(DUPLICATE), 0.0);
    assert_eq!(metrics.get(QUARANTINED), 0.0);
    assert_eq!(metrics.get(BATCH_SIZE_COUNT), 1.0);
    assert_eq!(metrics.get(BATCH_SIZE_SUM), 4.0);
    assert_eq!(metrics.get(END_TO_END_COUNT), 4.0);
    assert_eq!(metrics.get(IN_HAND), 0.0, "the message was acknowledged");
    stack.stop_worker().await.expect("the worker stops cleanly");
    let broker = stack.broker();
    assert_eq!(broker.ready_count(&broker.queue()).await, 0);
}

#[tokio::test]
async fn one_untypeable_webhook_of_a_batch_is_quarantined_alone_and_the_rest_stored() {
    let mut stack = worker_stack().with_worker().start().await;
    let (broker, worker, client) = (stack.broker(), stack.worker(), stack.client().await);
    let (_, first) = valid("");
    let (_, last) = valid("Opted out");
    // Whitespace around it, so it travels as `body_text`: kept byte for byte.
    let untypeable = b"\t{\"drop_id\":\"5c8eb7940a057a4ab0823e1c\",\"attempt_date\":\"17/03/2019 21:10\",\"status\":\"success\"}\n";
    let sent = send_batch(
        broker,
        &[
            (Kind::Sms, first.as_bytes()),
            (Kind::Rvm, &untypeable[..]),
            (Kind::Sms, last.as_bytes()),
        ],
    )
    .await;

    // A scrape is not a snapshot: it may read `stored` just before the
    // batch's counters move and `quarantined` just after, so wait for both.
    settled(worker, QUARANTINED, 1.0).await;
    let metrics = settled(worker, STORED, 2.0).await;
    assert_eq!(metrics.get(STORED), 2.0);
    assert_eq!(metrics.get(QUARANTINED), 1.0);
    assert_each_stored_once(&client, &[sent[0].clone(), sent[2].clone()]).await;
    assert_quarantined(
        &client,
        &sent[1],
        r#"`attempt_date` is not an RFC 3339 date-time in years 1-9999: "17/03/2019 21:10""#,
    )
    .await;
    assert_eq!(count(&client, QUARANTINE).await, 1);
    stack.stop_worker().await.expect("the worker stops cleanly");
}

#[tokio::test]
async fn an_unreadable_message_is_quarantined_whole_with_the_reason_and_acknowledged() {
    let mut stack = worker_stack().with_worker().start().await;
    let (broker, worker, client) = (stack.broker(), stack.worker(), stack.client().await);
    let at = now_micros();

    let malformed_id = Uuid::now_v7();
    let malformed = br#"{"webhooks":[{"id":"019abc","kind":"sms"}]}"#;
    broker
        .publish(
            envelope::MIXED_ROUTING_KEY,
            malformed,
            corral_runtime::amqp::properties(&envelope::Metadata::batch(malformed_id, at, 1)),
        )
        .await;
    // A newer ingress's envelope: its body might even read as version 2,
    // but what it means is not this worker's to guess.
    let (_, body) = valid("");
    let mut newer = Vec::new();
    batch::encode(
        [Packing {
            id: Uuid::now_v7(),
            received_at: at,
            kind: Kind::Sms,
            body: body.as_bytes(),
        }],
        &mut newer,
    );
    let newer_id = Uuid::now_v7();
    let content_type = "application/vnd.corral.webhooks+json; version=3";
    broker
        .publish(
            Kind::Sms.routing_key(),
            &newer,
            corral_runtime::amqp::properties(&envelope::Metadata::batch(newer_id, at, 1))
                .with_content_type(content_type.into()),
        )
        .await;
    // The queue keeps moving: an envelope-1 message behind them is stored.
    let behind = send(broker, Kind::Rvm.routing_key(), valid("").1).await;

    let metrics = settled(worker, QUARANTINED, 2.0).await;
    // The message behind may land in a later batch than the two quarantined.
    wait_count(
        &client,
        &format!(
            "SELECT count(*) FROM delivery_events WHERE message_id = '{}'",
            behind.id
        ),
        1,
    )
    .await;
    assert_each_stored_once(&client, &[behind]).await;
    assert_eq!(metrics.get(QUARANTINED), 2.0, "one row per whole message");
    // Neither message says when its webhooks came but by its `timestamp`.
    let seconds = DateTime::from_timestamp(at.timestamp(), 0);
    let row = |id: Uuid| {
        let client = &client;
        async move {
            let row = client
                .query_one(
                    "SELECT body, error, routing_key, received_at FROM quarantined_webhooks
                     WHERE message_id = $1",
                    &[&id],
                )
                .await
                .expect("the message's quarantined row");
            (
                row.get::<_, Vec<u8>>(0),
                row.get::<_, String>(1),
                row.get::<_, Option<String>>(2),
                row.get::<_, Option<DateTime<Utc>>>(3),
            )
        }
    };
    let (body, error, routing_key, received_at) = row(malformed_id).await;
    assert_eq!(body, malformed, "the whole body, byte for byte");
    assert!(
        error.starts_with(
            "the AMQP message is quarantined whole, its webhooks unread: \
             not a corral envelope-2 body: "
        ),
        "{error}"
    );
    assert_eq!(routing_key.as_deref(), Some(envelope::MIXED_ROUTING_KEY));
    assert_eq!(received_at, seconds);

    let (body, error, routing_key, received_at) = row(newer_id).await;
    assert_eq!(body, newer);
    assert_eq!(
        error,
        format!(
            "the AMQP message is quarantined whole, its webhooks unread: content type \
             {content_type:?}: this corral-worker reads version=2 only; upgrade it"
        )
    );
    assert_eq!(routing_key.as_deref(), Some(Kind::Sms.routing_key()));
    assert_eq!(received_at, seconds);
    assert_eq!(count(&client, QUARANTINE).await, 2);

    stack.stop_worker().await.expect("the worker stops cleanly");
    let broker = stack.broker();
    assert_eq!(
        broker.ready_count(&broker.queue()).await,
        0,
        "both were acknowledged, none given back"
    );
    assert_eq!(
        broker
            .ready_count(&broker.topology.dead_letter_queue())
            .await,
        0
    );
}

#[tokio::test]
async fn a_batch_delivered_again_is_stored_once_and_counted_as_duplicates() {
    let mut stack = worker_stack().with_worker().start().await;
    let (broker, worker, client) = (stack.broker(), stack.worker(), stack.client().await);
    let (_, webhooks) = mixed();
    let sent = send_batch(broker, &borrowed(&webhooks)).await;
    settled(worker, STORED, 4.0).await;

    // What a lost ack brings back: the same webhooks, in a message of its own.
    publish_batch(broker, &sent).await;
    let metrics = settled(worker, DUPLICATE, 4.0).await;
    assert_eq!(metrics.get(STORED), 4.0);
    assert_eq!(metrics.get(DUPLICATE), 4.0);
    assert_each_stored_once(&client, &sent).await;
    stack.stop_worker().await.expect("the worker stops cleanly");
}

/// `CORRAL_BATCH_MAX` counts webhooks, and a message is never split: with
/// batches of 2 and a linger far longer than the test, a message of 3
/// webhooks is written at once, alone, as one transaction.
#[tokio::test]
async fn a_message_larger_than_the_batch_is_written_whole_at_once() {
    let stack = worker_stack().start().await;
    let (broker, db) = (stack.broker(), stack.db());
    let worker = RunningWorker::start(batches_of(2, stack.worker_config())).await;
    let client = db.client().await;
    let (_, webhooks) = mixed();
    let sent = send_batch(broker, &borrowed(&webhooks[..3])).await;

    let metrics = settled(&worker, STORED, 3.0).await;
    assert_each_stored_once(&client, &sent).await;
    assert_eq!(metrics.get(BATCH_SIZE_COUNT), 1.0, "one transaction");
    assert_eq!(metrics.get(BATCH_SIZE_SUM), 3.0);
    worker.stop().await.expect("the worker stops cleanly");
}

/// While the database is away, the messages in hand stay unacknowledged
/// (the gauge counts them as RabbitMQ does, messages, not webhooks) and the
/// rest wait in the queue; once it is back, every webhook is one row.
#[tokio::test]
async fn batches_are_acknowledged_only_once_every_webhook_is_committed() {
    let stack = worker_stack().db_proxy().start().await;
    let (broker, db) = (stack.broker(), stack.db());
    let pg = stack.db_proxy();
    let mut config = stack.worker_config();
    config.prefetch = 2;
    config.batch_max = 2;
    config.db_writers = 2;
    config.db.db_timeout_ms = 1_000;
    let worker = RunningWorker::start(config).await;
    let client = db.client().await;
    let queue = broker.queue();

    pg.cut();
    let mut sent = Vec::new();
    for _ in 0..3 {
        let (_, webhooks) = mixed();
        sent.extend(send_batch(broker, &borrowed(&webhooks[..2])).await);
    }
    worker.wait_ready(false).await;
    let before = worker.metrics().await;
    wait_metric(&worker, &before, DB_TRANSIENT, 2.0).await;
    // Each message is a batch (two webhooks reach CORRAL_BATCH_MAX), written
    // by a writer of its own.
    let metrics = settled(&worker, IN_HAND, 2.0).await;
    assert_eq!(metrics.get(IN_HAND), 2.0, "one prefetch of messages");
    assert_eq!(broker.ready_count(&queue).await, 1);
    assert_eq!(count(&client, EVENTS).await, 0);

    pg.restore();
    worker.wait_ready(true).await;
    let metrics = settled(&worker, STORED, 6.0).await;
    assert_each_stored_once(&client, &sent).await;
    assert_eq!(metrics.get(DUPLICATE), 0.0);
    assert_eq!(broker.ready_count(&queue).await, 0);
    worker.stop().await.expect("the worker stops cleanly");
}
