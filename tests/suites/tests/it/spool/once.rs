//! A webhook spooled and also published, or spooled and sent again by its
//! sender, is one row.

use corral_shared::telemetry::labels::SpoolCause;
use corral_testkit::{
    apps::{RunningIngress, RunningWorker},
    broker::TestBroker,
    database::TestDatabase,
    fixtures,
    proxy::TcpProxy,
    wait,
};
use uuid::Uuid;

use super::helpers::*;
use crate::{
    ingress::helpers::{QUEUE_WAIT, accepted, authenticated, send},
    worker::helpers::{DUPLICATE, EVENTS, STORED, count, settled, wait_count},
};

/// The broker confirms too late (a black-holed path that resumes): the
/// webhook is answered 200 from the spool, then also lands in the queue.
/// The worker takes both copies, and stores it once, under the answered id.
#[tokio::test]
async fn a_webhook_spooled_and_then_confirmed_is_one_row() {
    let db = TestDatabase::migrated().await;
    let writer = db.spool_writer().await;
    let broker = TestBroker::new().await;
    let proxy = TcpProxy::rabbitmq().await;
    let mut config = spooling(&broker, &proxy, &writer);
    config.spool_after_ms = 200;
    // The stalled link must survive until the path resumes, so its publish
    // is confirmed after all.
    config.amqp.heartbeat_secs = 30;
    let ingress = RunningIngress::start(config).await;
    let client = db.client().await;

    proxy.blackhole();
    let id = post_spooled(
        &ingress,
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

    let worker = RunningWorker::start(draining(&db, broker.prefix())).await;
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
    let db = TestDatabase::migrated().await;
    let writer = db.spool_writer().await;
    let broker = TestBroker::new().await;
    let proxy = TcpProxy::rabbitmq().await;
    proxy.cut();
    let ingress = RunningIngress::start_unready(spooling(&broker, &proxy, &writer)).await;
    ingress.wait_ready(true).await;
    let client = db.client().await;

    let spooled_id = post_spooled(
        &ingress,
        &client,
        "rvm",
        fixtures::SMS_FAILURE,
        SpoolCause::Unavailable,
    )
    .await;
    proxy.restore();
    ingress.wait_broker(true).await;
    let before = ingress.metrics().await;
    let resent_id =
        accepted(send(authenticated(&ingress, "rvm").body(fixtures::SMS_FAILURE)).await).await;
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

    let worker = RunningWorker::start(draining(&db, broker.prefix())).await;
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
