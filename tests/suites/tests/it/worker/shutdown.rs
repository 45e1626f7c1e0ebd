//! Graceful shutdown, with and without the database.

use corral_contract::envelope::Kind;
use corral_testkit::{apps::RunningWorker, wait};

use super::helpers::*;

/// Cancelling the worker with messages in hand (received, not yet written)
/// commits and acknowledges them before it exits Ok.
#[tokio::test]
async fn shutdown_commits_and_acks_the_messages_in_hand() {
    let stack = worker_stack().start().await;
    let (broker, db) = (stack.broker(), stack.db());
    let queue = broker.topology.queue();
    // A batch that would close only after a minute: only shutdown closes it.
    let worker = RunningWorker::start(batches_of(100, stack.worker_config())).await;
    let client = db.client().await;
    let mut sent = Vec::new();
    for _ in 0..20 {
        sent.push(send(broker, Kind::Sms.routing_key(), valid("").1).await);
    }
    wait::until_true("the worker to hold every message", WAIT, || async {
        broker.ready_count(&queue).await == 0
    })
    .await;
    assert_eq!(
        count(&client, EVENTS).await,
        0,
        "nothing written before shutdown"
    );

    tokio::time::timeout(WAIT, worker.stop())
        .await
        .expect("the worker finished its shutdown within the deadline")
        .expect("the worker exits Ok");
    assert_each_stored_once(&client, &sent).await;
    let metrics = local_metrics();
    assert_eq!(metrics.get(STORED), 20.0);
    assert_eq!(broker.ready_count(&queue).await, 0);

    // Nothing was left unacknowledged: a new worker finds only what comes next
    // (anything returned to the queue would come before it, as a duplicate).
    let worker = RunningWorker::start(stack.worker_config()).await;
    sent.push(send(broker, Kind::Sms.routing_key(), valid("").1).await);
    wait_count(&client, EVENTS, 21).await;
    assert_each_stored_once(&client, &sent).await;
    let metrics = settled(&worker, STORED, 21.0).await;
    assert_eq!(metrics.get(DUPLICATE), 0.0);
    assert_eq!(metrics.get(STORED), 21.0);
    worker.stop().await.expect("the worker stops cleanly");
}

/// Shutdown while the database is down: the worker gives up on the batch at
/// its shutdown deadline without acknowledging it, exits Ok, and RabbitMQ
/// hands every message to the next worker.
#[tokio::test]
async fn shutdown_with_the_database_down_leaves_the_messages_to_rabbitmq() {
    let stack = worker_stack().db_proxy().start().await;
    let (broker, db) = (stack.broker(), stack.db());
    let queue = broker.topology.queue();
    let pg = stack.db_proxy();
    let mut settings = batches_of(100, stack.worker_config());
    settings.shutdown_timeout_ms = 1_500;
    settings.db.db_timeout_ms = 500;
    let worker = RunningWorker::start(settings).await;
    let mut sent = Vec::new();
    for _ in 0..10 {
        sent.push(send(broker, Kind::Sms.routing_key(), valid("").1).await);
    }
    wait::until_true("the worker to hold every message", WAIT, || async {
        broker.ready_count(&queue).await == 0
    })
    .await;
    pg.cut();
    tokio::time::timeout(WAIT, worker.stop())
        .await
        .expect("the worker gave up within its shutdown deadline")
        .expect("the worker exits Ok");
    wait::until_true("RabbitMQ to hold the messages again", WAIT, || async {
        broker.ready_count(&queue).await == 10
    })
    .await;
    assert!(local_metrics().get(DB_TRANSIENT) >= 1.0);
    let client = db.client().await;
    assert_eq!(count(&client, EVENTS).await, 0);

    let worker = RunningWorker::start(direct(stack.worker_config(), db)).await;
    wait_count(&client, EVENTS, 10).await;
    assert_each_stored_once(&client, &sent).await;
    worker.stop().await.expect("the worker stops cleanly");
}

/// Shutdown requested while a batch is being retried against a database that
/// is down: the worker stops retrying at its shutdown deadline, exits Ok
/// without acknowledging, and RabbitMQ hands the batch to the next worker.
#[tokio::test]
async fn shutdown_during_database_retries_honours_the_shutdown_deadline() {
    let stack = worker_stack().db_proxy().start().await;
    let (broker, db) = (stack.broker(), stack.db());
    let queue = broker.topology.queue();
    let pg = stack.db_proxy();
    let mut settings = stack.worker_config();
    settings.shutdown_timeout_ms = 1_000;
    settings.db.db_timeout_ms = 500;
    let worker = RunningWorker::start(settings).await;
    pg.cut();
    let before = worker.metrics().await;
    let mut sent = Vec::new();
    for _ in 0..10 {
        sent.push(send(broker, Kind::Sms.routing_key(), valid("").1).await);
    }
    // The batch closed and is being retried.
    wait_metric(&worker, &before, DB_TRANSIENT, 2.0).await;

    tokio::time::timeout(WAIT, worker.stop())
        .await
        .expect("the worker gave up within its shutdown deadline")
        .expect("the worker exits Ok");
    wait::until_true("RabbitMQ to hold the messages again", WAIT, || async {
        broker.ready_count(&queue).await == 10
    })
    .await;

    pg.restore();
    let worker = RunningWorker::start(stack.worker_config()).await;
    let client = db.client().await;
    wait_count(&client, EVENTS, 10).await;
    assert_each_stored_once(&client, &sent).await;
    worker.stop().await.expect("the worker stops cleanly");
}

/// Shutdown is bounded by `CORRAL_SHUTDOWN_TIMEOUT_MS` even when the batch in
/// hand is stuck on a database that stopped answering (a black-holed path:
/// each attempt would otherwise wait its full `3 × CORRAL_DB_TIMEOUT_MS`).
/// The messages go back to RabbitMQ unacknowledged.
#[tokio::test]
async fn shutdown_is_bounded_even_while_a_write_hangs_on_a_silent_database() {
    let stack = worker_stack().db_proxy().start().await;
    let broker = stack.broker();
    let queue = broker.topology.queue();
    let pg = stack.db_proxy();
    let mut settings = batches_of(100, stack.worker_config());
    settings.shutdown_timeout_ms = 1_000;
    // Far longer than the test's deadline: only the drain deadline can end it.
    settings.db.db_timeout_ms = 60_000;
    let worker = RunningWorker::start(settings).await;
    pg.blackhole();
    for _ in 0..10 {
        send(broker, Kind::Sms.routing_key(), valid("").1).await;
    }
    wait::until_true("the worker to hold every message", WAIT, || async {
        broker.ready_count(&queue).await == 0
    })
    .await;
    tokio::time::timeout(WAIT, worker.stop())
        .await
        .expect("the worker gave up at its shutdown deadline, not the database's")
        .expect("the worker exits Ok");
    wait::until_true("RabbitMQ to hold the messages again", WAIT, || async {
        broker.ready_count(&queue).await == 10
    })
    .await;
    pg.restore();
}
