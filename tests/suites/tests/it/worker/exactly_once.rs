//! Exactly-once storage: duplicates, redeliveries, competing workers.

use chrono::Utc;
use corral_contract::envelope::Kind;
use corral_testkit::{
    apps::RunningWorker,
    fixtures::{self, FAILURE_REASONS},
    stack::Via,
    wait,
};
use uuid::Uuid;

use super::helpers::*;

#[tokio::test]
async fn the_same_body_twice_is_one_row_and_counted_as_duplicate() {
    let stack = worker_stack().start().await;
    let (broker, db) = (stack.broker(), stack.db());
    let client;
    {
        // Twice in one batch: published before the worker starts, batches of 2.
        let (_, twin) = valid("");
        let first = send(broker, Kind::Sms.routing_key(), &twin).await;
        let _second = send(broker, Kind::Sms.routing_key(), &twin).await;
        let worker = RunningWorker::start(batches_of(2, stack.worker_config())).await;
        client = db.client().await;
        wait::until_true("the twin batch committed", WAIT, || async {
            worker.metrics().await.get(DUPLICATE) >= 1.0
        })
        .await;
        let metrics = worker.metrics().await;
        assert_eq!(metrics.get(STORED), 1.0);
        assert_eq!(metrics.get(DUPLICATE), 1.0);
        assert_each_stored_once(&client, &[first]).await;
        worker.stop().await.expect("the worker stops cleanly");
    }

    // In separate batches: a provider retry after the first was stored, then
    // the same webhook again with other formatting (keys reordered, spaces).
    let worker = RunningWorker::start(stack.worker_config()).await;
    let before = worker.metrics().await;
    let (drop_id, body) = valid("Opted out");
    let first = send(broker, Kind::Rvm.routing_key(), &body).await;
    wait_count(&client, EVENTS, 2).await;
    send(broker, Kind::Rvm.routing_key(), &body).await;
    wait_metric(&worker, &before, DUPLICATE, 1.0).await;
    let value: serde_json::Value = serde_json::from_str(&body).expect("valid JSON");
    let mut fields: Vec<(String, serde_json::Value)> = value
        .as_object()
        .expect("an object")
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    fields.reverse();
    let reformatted = format!(
        "{{\n  {}\n}}",
        fields
            .iter()
            .map(|(k, v)| format!("{}: {}", serde_json::json!(k), v))
            .collect::<Vec<_>>()
            .join(",\n  ")
    );
    // The money text is written as in the original, not through f64.
    assert!(reformatted.contains("0.0029"), "{reformatted}");
    send(broker, Kind::Rvm.routing_key(), &reformatted).await;
    wait_metric(&worker, &before, DUPLICATE, 2.0).await;

    let after = worker.metrics().await;
    assert_eq!(after.get(STORED) - before.get(STORED), 1.0);
    assert_eq!(after.get(DUPLICATE) - before.get(DUPLICATE), 2.0);
    let stored_id: Uuid = client
        .query_one(
            "SELECT message_id FROM delivery_events WHERE drop_id = $1",
            &[&drop_id],
        )
        .await
        .expect("exactly one row for the drop id")
        .get(0);
    assert_eq!(stored_id, first.id, "the first delivery's row is kept");
    assert_eq!(count(&client, EVENTS).await, 2);
    assert_eq!(broker.ready_count(&broker.topology.queue()).await, 0);
    worker.stop().await.expect("the worker stops cleanly");
}

/// A batch commits, then its ack cannot reach RabbitMQ (the link is cut while
/// the transaction is still in progress); RabbitMQ redelivers the batch, and
/// the redelivery adds no row and counts as duplicates.
#[tokio::test]
async fn a_batch_committed_but_never_acked_is_redelivered_as_duplicates() {
    const N: u32 = 6;
    let stack = worker_stack()
        .migrated()
        .amqp_proxy(Via::Worker)
        .start()
        .await;
    let (broker, db) = (stack.broker(), stack.db());
    let client = db.client().await;
    install_slow_commit(&client, 2.0).await;
    let amqp = stack.amqp_proxy();

    let mut sent = Vec::new();
    for i in 0..N {
        let (_, body) = valid(FAILURE_REASONS[i as usize]);
        sent.push(send(broker, Kind::Sms.routing_key(), &body).await);
    }
    let mut config = batches_of(N, stack.worker_config());
    // The statement timeout must outlast the trigger's sleep.
    config.db.db_timeout_ms = 5_000;
    let worker = RunningWorker::start_unready(config).await;

    wait_batch_in_flight(&client, &db.name).await;
    amqp.cut();
    client
        .execute("UPDATE test_slow_commit SET seconds = 0", &[])
        .await
        .expect("disarming the trigger");
    // The commit goes through (PostgreSQL is not behind the proxy); the ack fails.
    wait_count(&client, EVENTS, i64::from(N)).await;
    wait::until_true("the ack failure to be counted", WAIT, || async {
        worker.metrics().await.get(ACK_FAILURES) >= 1.0
    })
    .await;
    worker.wait_ready(false).await;

    amqp.restore();
    wait::until_true(
        "the redelivered batch counted as duplicates",
        WAIT,
        || async { worker.metrics().await.get(DUPLICATE) >= f64::from(N) },
    )
    .await;
    worker.wait_ready(true).await;
    let metrics = worker.metrics().await;
    assert_eq!(metrics.get(STORED), f64::from(N));
    assert_eq!(metrics.get(DUPLICATE), f64::from(N));
    assert_eq!(metrics.get(ACK_FAILURES), 1.0);
    assert_each_stored_once(&client, &sent).await;
    assert_eq!(broker.ready_count(&broker.topology.queue()).await, 0);
    worker.stop().await.expect("the worker stops cleanly");
}

/// Two competing workers, every webhook delivered twice, the events of each
/// drop id in shuffled order: one row per webhook, each duplicate counted,
/// `deliveries` holds each drop id's newest state, and no batch failed
/// (the sorted inserts keep concurrent transactions from deadlocking).
#[tokio::test]
async fn competing_workers_store_each_webhook_once_and_the_newest_state() {
    use rand::{SeedableRng, rngs::StdRng, seq::SliceRandom};
    const DROPS: usize = 25;
    const EVENTS_PER_DROP: usize = 4;
    let stack = worker_stack().migrated().start().await;
    let (broker, db) = (stack.broker(), stack.db());
    let mut settings = stack.worker_config();
    settings.batch_max = 16;
    settings.batch_linger_ms = 10;
    let first = RunningWorker::start(settings.clone()).await;
    let second = RunningWorker::start(settings).await;

    let seed = u64::from(Utc::now().timestamp_subsec_nanos());
    let mut bodies = Vec::new();
    for drop in 0..DROPS {
        let drop_id = format!("cccccccccccccccccccccc{drop:02}");
        for (event, reason) in FAILURE_REASONS[..EVENTS_PER_DROP].iter().enumerate() {
            let date = format!("2026-11-27T05:24:3{event}.000Z");
            bodies.push(fixtures::delivery_status(&drop_id, &date, reason, "o"));
        }
    }
    let mut deliveries: Vec<&String> = bodies.iter().chain(bodies.iter()).collect();
    deliveries.shuffle(&mut StdRng::seed_from_u64(seed));
    for body in deliveries {
        send(broker, Kind::Sms.routing_key(), body).await;
    }

    let client = db.client().await;
    let total = (2 * DROPS * EVENTS_PER_DROP) as f64;
    wait::until_true(
        &format!("every delivery handled (seed {seed})"),
        WAIT,
        || async {
            let metrics = first.metrics().await;
            metrics.get(STORED) + metrics.get(DUPLICATE) >= total
        },
    )
    .await;
    // One recorder per test process: the two workers' counts add up.
    let metrics = first.metrics().await;
    assert_eq!(metrics.get(STORED), total / 2.0, "seed {seed}");
    assert_eq!(metrics.get(DUPLICATE), total / 2.0, "seed {seed}");
    assert_eq!(
        metrics.get(DB_TRANSIENT),
        0.0,
        "a batch failed (seed {seed})"
    );
    assert_eq!(
        count(&client, EVENTS).await,
        (DROPS * EVENTS_PER_DROP) as i64
    );
    let newest = format!("2026-11-27T05:24:3{}Z", EVENTS_PER_DROP - 1);
    let wrong: Vec<String> = client
        .query(
            "SELECT d.drop_id FROM deliveries d
             JOIN delivery_events e ON e.id = d.event_id
             WHERE d.attempt_date <> $1 OR d.reason <> $2 OR e.drop_id <> d.drop_id
                OR e.attempt_date <> d.attempt_date",
            &[&instant(&newest), &FAILURE_REASONS[EVENTS_PER_DROP - 1]],
        )
        .await
        .expect("checking deliveries")
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert!(
        wrong.is_empty(),
        "not the newest state (seed {seed}): {wrong:?}"
    );
    assert_eq!(
        count(&client, "SELECT count(*) FROM deliveries").await,
        DROPS as i64
    );
    first.stop().await.expect("the first worker stops cleanly");
    second
        .stop()
        .await
        .expect("the second worker stops cleanly");
}
