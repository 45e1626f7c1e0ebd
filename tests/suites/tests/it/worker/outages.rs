//! Database and broker outages lose nothing and ack nothing early.

use corral_contract::envelope::Kind;
use corral_testkit::{apps::RunningWorker, database, fixtures::FAILURE_REASONS, stack::Via, wait};

use super::helpers::*;

/// PostgreSQL unreachable (the worker's path to it cut by a proxy) during a
/// stream: `/readyz` goes 503, the batch in hand stays unacknowledged (the
/// queue keeps everything past the prefetch), and once the path is back
/// every message is a row, none twice.
#[tokio::test]
async fn a_database_outage_loses_nothing_and_acks_nothing_early() {
    const PREFETCH: u16 = 5;
    let stack = worker_stack().db_proxy().start().await;
    let (broker, db) = (stack.broker(), stack.db());
    let pg = stack.db_proxy();
    let mut config = stack.worker_config();
    config.prefetch = PREFETCH;
    config.batch_max = u32::from(PREFETCH);
    config.db.db_timeout_ms = 1_000;
    let worker = RunningWorker::start(config).await;
    let client = db.client().await;
    let queue = broker.topology.queue();
    let mut sent = Vec::new();

    for _ in 0..5 {
        sent.push(send(broker, Kind::Sms.routing_key(), valid("").1).await);
    }
    wait_count(&client, EVENTS, 5).await;

    pg.cut();
    for i in 0..15 {
        sent.push(
            send(
                broker,
                Kind::Rvm.routing_key(),
                valid(FAILURE_REASONS[i % 12]).1,
            )
            .await,
        );
    }
    worker.wait_ready(false).await;
    let before = worker.metrics().await;
    wait_metric(&worker, &before, DB_TRANSIENT, 2.0).await;
    // The worker holds one prefetch of messages unacknowledged and retries;
    // an early ack would have brought it the next ones.
    assert_eq!(broker.ready_count(&queue).await, 15 - u32::from(PREFETCH));
    let retried = worker.metrics().await;
    wait_metric(&worker, &retried, DB_TRANSIENT, 2.0).await;
    assert_eq!(broker.ready_count(&queue).await, 15 - u32::from(PREFETCH));
    assert_eq!(count(&client, EVENTS).await, 5);

    pg.restore();
    for _ in 0..5 {
        sent.push(send(broker, Kind::Sms.routing_key(), valid("Too Many").1).await);
    }
    worker.wait_ready(true).await;
    wait_count(&client, EVENTS, sent.len() as i64).await;
    assert_each_stored_once(&client, &sent).await;
    let metrics = settled(&worker, STORED, sent.len() as f64).await;
    assert_eq!(metrics.get(STORED), sent.len() as f64);
    assert_eq!(metrics.get(DUPLICATE), 0.0);
    assert_eq!(broker.ready_count(&queue).await, 0);
    worker.stop().await.expect("the worker stops cleanly");
}

/// The worker's backends terminated mid-transaction and new connections to
/// its database refused (`ALLOW_CONNECTIONS false` holds even for a
/// superuser): the batch is retried, nothing is lost or doubled.
#[tokio::test]
async fn terminated_backends_and_refused_connections_lose_nothing() {
    const PREFETCH: u16 = 5;
    let stack = worker_stack().migrated().start().await;
    let (broker, db) = (stack.broker(), stack.db());
    let client = db.client().await;
    let admin = database::connect(database::SERVER_URL).await;
    install_slow_commit(&client, 1.0).await;
    let mut config = stack.worker_config();
    config.prefetch = PREFETCH;
    config.batch_max = u32::from(PREFETCH);
    let worker = RunningWorker::start(config).await;
    let queue = broker.topology.queue();
    let mut sent = Vec::new();

    for _ in 0..5 {
        sent.push(send(broker, Kind::Sms.routing_key(), valid("").1).await);
    }
    wait_batch_in_flight(&client, &db.name).await;
    admin
        .batch_execute(&format!(
            "ALTER DATABASE \"{}\" WITH ALLOW_CONNECTIONS false",
            db.name
        ))
        .await
        .expect("refusing connections");
    let terminated: i64 = admin
        .query_one(
            "SELECT count(*) FROM (
                 SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                 WHERE datname = $1 AND application_name = 'corral-worker') AS t",
            &[&db.name],
        )
        .await
        .expect("terminating the worker's backends")
        .get(0);
    assert!(terminated >= 1, "the worker had no backend to terminate");
    client
        .execute("UPDATE test_slow_commit SET seconds = 0", &[])
        .await
        .expect("disarming the trigger");

    worker.wait_ready(false).await;
    for _ in 0..10 {
        sent.push(send(broker, Kind::Rvm.routing_key(), valid("Opted out").1).await);
    }
    let before = worker.metrics().await;
    wait_metric(&worker, &before, DB_TRANSIENT, 2.0).await;
    assert_eq!(
        count(&client, EVENTS).await,
        0,
        "the killed batch rolled back"
    );
    assert_eq!(broker.ready_count(&queue).await, 10);

    admin
        .batch_execute(&format!(
            "ALTER DATABASE \"{}\" WITH ALLOW_CONNECTIONS true",
            db.name
        ))
        .await
        .expect("allowing connections again");
    worker.wait_ready(true).await;
    wait_count(&client, EVENTS, sent.len() as i64).await;
    assert_each_stored_once(&client, &sent).await;
    let metrics = settled(&worker, STORED, sent.len() as f64).await;
    assert_eq!(metrics.get(STORED), sent.len() as f64);
    assert_eq!(metrics.get(DUPLICATE), 0.0);
    assert_eq!(broker.ready_count(&queue).await, 0);
    worker.stop().await.expect("the worker stops cleanly");
}

#[tokio::test]
async fn a_cut_broker_link_is_reconnected_and_consuming_resumes() {
    let stack = worker_stack().amqp_proxy(Via::Worker).start().await;
    let (broker, db) = (stack.broker(), stack.db());
    let amqp = stack.amqp_proxy();
    let config = stack.worker_config();
    let worker = RunningWorker::start(config).await;
    let before = worker.metrics().await;
    let client = db.client().await;
    let queue = broker.topology.queue();
    let mut sent = Vec::new();

    for _ in 0..5 {
        sent.push(send(broker, Kind::Sms.routing_key(), valid("").1).await);
    }
    wait_count(&client, EVENTS, 5).await;
    settled(&worker, STORED, before.get(STORED) + 5.0).await;

    // Cut: the worker notices, says so, and consumes nothing meanwhile.
    amqp.cut();
    worker.wait_ready(false).await;
    for _ in 0..5 {
        sent.push(send(broker, Kind::Sms.routing_key(), valid("No Funds").1).await);
    }
    // At least the new five wait; an ack the cut caught in flight returns
    // its (committed) batch too, to be counted as duplicates later.
    let ready = broker.ready_count(&queue).await;
    assert!((5..=10).contains(&ready), "{ready} messages ready");
    amqp.restore();
    worker.wait_ready(true).await;
    wait_count(&client, EVENTS, 10).await;

    // Connections dropped but new ones accepted: a second reconnect.
    amqp.drop_connections();
    for _ in 0..5 {
        sent.push(send(broker, Kind::Rvm.routing_key(), valid("Spam detected").1).await);
    }
    wait_count(&client, EVENTS, 15).await;
    worker.wait_ready(true).await;

    assert!(!worker.task.is_finished(), "the worker was not restarted");
    assert_each_stored_once(&client, &sent).await;
    let after = settled(&worker, STORED, before.get(STORED) + 15.0).await;
    assert!(after.get(CONNECTED) - before.get(CONNECTED) >= 2.0);
    assert_eq!(after.get(STORED) - before.get(STORED), 15.0);
    assert_eq!(broker.ready_count(&queue).await, 0);
    worker.stop().await.expect("the worker stops cleanly");
}

/// A path to RabbitMQ that silently stops carrying packets (no FIN, no RST):
/// the AMQP heartbeat notices, the worker reconnects by itself.
#[tokio::test]
async fn a_silent_broker_link_is_noticed_by_heartbeat() {
    let stack = worker_stack().amqp_proxy(Via::Worker).start().await;
    let (broker, db) = (stack.broker(), stack.db());
    let amqp = stack.amqp_proxy();
    let mut config = stack.worker_config();
    config.amqp.heartbeat_secs = 1;
    let worker = RunningWorker::start(config).await;
    let client = db.client().await;

    amqp.blackhole();
    worker.wait_ready(false).await;
    // New connections pass again; the silent one stays dead for the worker.
    amqp.drop_connections();
    worker.wait_ready(true).await;
    let sent = vec![send(broker, Kind::Sms.routing_key(), valid("").1).await];
    wait_count(&client, EVENTS, 1).await;
    assert_each_stored_once(&client, &sent).await;
    worker.stop().await.expect("the worker stops cleanly");
}

/// The main queue's binding removed under traffic: what the exchange can no
/// longer route goes to the unroutable queue, and the worker stores it from
/// there, once, as if nothing had happened.
#[tokio::test]
async fn webhooks_the_exchange_could_not_route_are_stored_from_the_unroutable_queue() {
    let mut stack = worker_stack().with_worker().start().await;
    let (broker, worker, client) = (stack.broker(), stack.worker(), stack.client().await);
    // Each of the worker's two consumers declares the whole topology when it
    // connects; unbinding before the unroutable queue's consumer has done so
    // would see the binding put back.
    let unroutable_queue = broker.topology.unroutable_queue();
    wait::until_true("the unroutable queue's consumer", WAIT, || async {
        broker.consumer_count(&unroutable_queue).await == 1
    })
    .await;
    broker.unbind_main_queue().await;
    let mut sent = Vec::new();
    for reason in ["", "Opted out", "No Funds"] {
        let (_, body) = valid(reason);
        sent.push(send(broker, Kind::Sms.routing_key(), &body).await);
    }
    wait_count(&client, EVENTS, 3).await;
    assert_each_stored_once(&client, &sent).await;
    let unroutable = "corral_worker_unroutable_total";
    assert_eq!(
        settled(worker, unroutable, 3.0).await.get(unroutable),
        3.0,
        "each message that came the unroutable way is counted for the alert"
    );
    assert_eq!(broker.ready_count(&broker.topology.queue()).await, 0);
    assert_eq!(broker.ready_count(&unroutable_queue).await, 0);
    stack.stop_worker().await.expect("the worker stops cleanly");
}
