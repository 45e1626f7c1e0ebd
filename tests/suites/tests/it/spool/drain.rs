//! Workers drain the spool: several at once, without a broker, and an
//! untypeable body into quarantine.

use std::collections::HashMap;

use chrono::Utc;
use corral_shared::telemetry::labels::SpoolCause;
use corral_testkit::{
    apps::{RunningIngress, RunningWorker},
    broker::TestBroker,
    database::TestDatabase,
    fixtures,
    proxy::TcpProxy,
};
use uuid::Uuid;

use super::helpers::*;
use crate::worker::helpers::{
    DUPLICATE, EVENTS, QUARANTINE, QUARANTINED, STORED, count, settled, valid, wait_count,
};

/// Three workers drain a spool of 300 webhooks side by side, in rounds of
/// 10: every webhook becomes exactly one row under its id, none is lost,
/// the spool ends empty, and the drained counter says 300 (the workers share
/// this process's recorder, so it is their sum).
#[tokio::test]
async fn three_workers_drain_a_spool_without_duplicates_or_losses() {
    const WEBHOOKS: usize = 300;
    let db = TestDatabase::migrated().await;
    let broker = TestBroker::new().await;
    let client = db.client().await;
    let mut expected = HashMap::new();
    for i in 0..WEBHOOKS {
        let (drop_id, body) = valid("");
        let id = Uuid::now_v7();
        let kind = if i % 2 == 0 { "sms" } else { "rvm" };
        client
            .execute(
                "INSERT INTO spooled_webhooks (message_id, kind, body, received_at)
                 VALUES ($1, $2, $3, $4)",
                &[&id, &kind, &body.as_bytes(), &Utc::now()],
            )
            .await
            .expect("spooling a webhook as postgres");
        expected.insert(id, (drop_id, kind.to_owned()));
    }

    let workers: Vec<RunningWorker> = (0..3)
        .map(|_| {
            let mut config = draining(&db, broker.prefix());
            config.batch_max = 10;
            RunningWorker::start_unready(config)
        })
        .collect::<futures_util::future::JoinAll<_>>()
        .await;
    wait_count(&client, EVENTS, WEBHOOKS as i64).await;
    wait_count(&client, SPOOLED_ROWS, 0).await;

    let rows = client
        .query(
            "SELECT message_id, count(*), min(drop_id), min(kind) FROM delivery_events
             GROUP BY message_id",
            &[],
        )
        .await
        .expect("reading the rows");
    assert_eq!(rows.len(), WEBHOOKS, "every spooled webhook is a row");
    for row in &rows {
        let id: Uuid = row.get(0);
        let n: i64 = row.get(1);
        assert_eq!(n, 1, "{id} is stored {n} times");
        let (drop_id, kind) = expected
            .get(&id)
            .unwrap_or_else(|| panic!("a row {id} nobody spooled"));
        assert_eq!(row.get::<_, String>(2), *drop_id);
        assert_eq!(row.get::<_, String>(3), *kind);
    }
    let metrics = settled(&workers[0], DRAINED, WEBHOOKS as f64).await;
    assert_eq!(metrics.get(DRAINED), WEBHOOKS as f64);
    assert_eq!(metrics.get(STORED), WEBHOOKS as f64);
    assert_eq!(metrics.get(DUPLICATE), 0.0);
    assert_eq!(count(&client, QUARANTINE).await, 0);
    for worker in workers {
        worker.stop().await.expect("a worker stops cleanly");
    }
}

/// Webhooks spooled while RabbitMQ is gone are stored by a worker that
/// cannot reach RabbitMQ either: the spool needs no broker.
#[tokio::test]
async fn a_worker_without_a_broker_drains_the_spool() {
    let db = TestDatabase::migrated().await;
    let writer = db.spool_writer().await;
    let broker = TestBroker::new().await;
    let proxy = TcpProxy::rabbitmq().await;
    proxy.cut();
    let ingress = RunningIngress::start_unready(spooling(&broker, &proxy, &writer)).await;
    ingress.wait_ready(true).await;
    let client = db.client().await;
    let mut ids = Vec::new();
    for (kind, body) in [
        ("sms", fixtures::SMS_SUCCESS),
        ("rvm", fixtures::SMS_FAILURE),
    ] {
        ids.push(post_spooled(&ingress, &client, kind, body, SpoolCause::Unavailable).await);
    }

    let mut config = draining(&db, broker.prefix());
    config.amqp.url = proxy.amqp_url();
    let worker = RunningWorker::start_unready(config).await;
    wait_count(&client, SPOOLED_ROWS, 0).await;
    wait_count(&client, EVENTS, 2).await;
    let mut stored: Vec<Uuid> = client
        .query("SELECT message_id FROM delivery_events", &[])
        .await
        .expect("reading the rows")
        .iter()
        .map(|row| row.get(0))
        .collect();
    stored.sort();
    ids.sort();
    assert_eq!(stored, ids);
    let readiness = readyz(worker.admin_port).await;
    assert_eq!(
        readiness["broker"], false,
        "the worker had no broker throughout: {readiness}"
    );
    worker.stop().await.expect("the worker stops cleanly");
}

/// A JSON object that is not a Drop Cowboy payload is spooled like any
/// webhook (ingress does not type bodies); the worker quarantines it, byte
/// for byte under its id, and it leaves the spool.
#[tokio::test]
async fn an_untypeable_spooled_body_is_quarantined_and_leaves_the_spool() {
    let db = TestDatabase::migrated().await;
    let writer = db.spool_writer().await;
    let broker = TestBroker::new().await;
    let proxy = TcpProxy::rabbitmq().await;
    proxy.cut();
    let ingress = RunningIngress::start_unready(spooling(&broker, &proxy, &writer)).await;
    ingress.wait_ready(true).await;
    let client = db.client().await;
    let body = r#"{"greeting": "not a delivery status", "n": [1, 2.50]}"#;
    let id = post_spooled(&ingress, &client, "sms", body, SpoolCause::Unavailable).await;

    let worker = RunningWorker::start_unready(draining(&db, broker.prefix())).await;
    wait_count(&client, SPOOLED_ROWS, 0).await;
    settled(&worker, QUARANTINED, 1.0).await;
    let row = client
        .query_one(
            "SELECT body, routing_key, error FROM quarantined_webhooks WHERE message_id = $1",
            &[&id],
        )
        .await
        .expect("the quarantined row of the spooled webhook");
    assert_eq!(row.get::<_, Vec<u8>>(0), body.as_bytes());
    assert_eq!(
        row.get::<_, Option<String>>(1).as_deref(),
        Some("dropcowboy.sms")
    );
    assert!(
        !row.get::<_, String>(2).is_empty(),
        "quarantined with a reason"
    );
    assert_eq!(count(&client, QUARANTINE).await, 1);
    assert_eq!(count(&client, EVENTS).await, 0);
    worker.stop().await.expect("the worker stops cleanly");
}
