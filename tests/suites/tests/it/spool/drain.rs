//! Workers drain the spool: several at once, without a broker, and an
//! untypeable body into quarantine.

use std::collections::HashMap;

use chrono::Utc;
use corral_runtime::telemetry::labels::SpoolCause;
use corral_testkit::{
    apps::RunningWorker,
    fixtures,
    stack::{Stack, Via},
    wait,
};
use uuid::Uuid;

use super::helpers::*;
use crate::worker::helpers::{
    DB_TRANSIENT, DUPLICATE, EVENTS, QUARANTINE, QUARANTINED, STORED, count, install_slow_commit,
    settled, valid, wait_batch_in_flight, wait_count,
};

/// Spooled rows no transaction holds: a drain round in progress locks its own.
const UNLOCKED_ROWS: &str =
    "SELECT count(*) FROM (SELECT 1 FROM spooled_webhooks FOR UPDATE SKIP LOCKED) AS unlocked";

const DEPTH: &str = "corral_worker_spool_depth";

const OLDEST: &str = "corral_worker_spool_oldest_seconds";

/// Transactions of database `name` sleeping in the slow-commit trigger.
async fn rounds_in_flight(client: &tokio_postgres::Client, name: &str) -> i64 {
    client
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND wait_event = 'PgSleep'",
            &[&name],
        )
        .await
        .expect("reading pg_stat_activity")
        .get(0)
}

/// Three workers drain a spool of 300 webhooks side by side, in rounds of
/// 10 slowed down so that rounds of different workers overlap: every webhook
/// becomes exactly one row under its id, none is lost, the spool ends empty,
/// and the drained counter says 300 (the workers share this process's
/// recorder, so it is their sum). The depth gauge sees the spool while it
/// drains, and 0 after.
#[tokio::test]
async fn three_workers_drain_a_spool_without_duplicates_or_losses() {
    const WEBHOOKS: usize = 300;
    let stack = Stack::builder()
        .migrated()
        .worker_settings(draining)
        .worker_settings(|worker| worker.batch_max = 10)
        .start()
        .await;
    let (db, client) = (stack.db(), stack.client().await);
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

    // Each round's insert sleeps before it can commit, holding its claimed
    // rows locked: the other workers must skip them, not wait or take them.
    install_slow_commit(&client, 0.1).await;

    let workers: Vec<RunningWorker> = (0..3)
        .map(|_| RunningWorker::start_unready(stack.worker_config()))
        .collect::<futures_util::future::JoinAll<_>>()
        .await;
    wait::until_true("rounds of two workers in flight at once", WAIT, || async {
        rounds_in_flight(&client, &db.name).await >= 2
    })
    .await;
    wait::until_true("the depth gauge to see the spool", WAIT, || async {
        workers[0].metrics().await.get(DEPTH) > 0.0
    })
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
    wait::until_true("the depth gauge back at 0", WAIT, || async {
        let metrics = workers[0].metrics().await;
        metrics.get(DEPTH) == 0.0 && metrics.get(OLDEST) == 0.0
    })
    .await;
    for worker in workers {
        worker.stop().await.expect("a worker stops cleanly");
    }
}

/// Webhooks spooled while RabbitMQ is gone are stored by a worker that
/// cannot reach RabbitMQ either: the spool needs no broker.
#[tokio::test]
async fn a_worker_without_a_broker_drains_the_spool() {
    // The worker's broker path is the ingress's, cut.
    let mut stack = stage().amqp_proxy(Via::Both).start().await;
    without_broker(&mut stack).await;
    let (ingress, client) = (stack.ingress(), stack.client().await);
    let mut ids = Vec::new();
    for (kind, body) in [
        ("sms", fixtures::SMS_SUCCESS),
        ("rvm", fixtures::SMS_FAILURE),
    ] {
        ids.push(post_spooled(ingress, &client, kind, body, SpoolCause::Unavailable).await);
    }

    stack.start_worker_unready().await;
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
    let readiness = readyz(stack.worker().admin_port).await;
    assert_eq!(
        readiness["broker"], false,
        "the worker had no broker throughout: {readiness}"
    );
    stack.stop_worker().await.expect("the worker stops cleanly");
}

/// A JSON object that is not a Drop Cowboy payload is spooled like any
/// webhook (ingress does not type bodies); the worker quarantines it, byte
/// for byte under its id, and it leaves the spool.
#[tokio::test]
async fn an_untypeable_spooled_body_is_quarantined_and_leaves_the_spool() {
    let mut stack = stage().start().await;
    without_broker(&mut stack).await;
    let (ingress, client) = (stack.ingress(), stack.client().await);
    let body = r#"{"greeting": "not a delivery status", "n": [1, 2.50]}"#;
    let id = post_spooled(ingress, &client, "sms", body, SpoolCause::Unavailable).await;

    let worker = RunningWorker::start_unready(stack.worker_config()).await;
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

/// What a leaked ingress credential could add to the spool, between valid
/// webhooks: bytes that are not UTF-8, JSON that is not an object, a NUL in
/// a text field, and a payload that types but PostgreSQL refuses. The worker
/// stores the valid ones once, quarantines each of the others byte for byte,
/// and the spool empties: no row holds back the ones behind it.
#[tokio::test]
async fn hostile_spooled_rows_are_quarantined_without_holding_back_the_rest() {
    let stack = Stack::builder()
        .spool()
        .worker_settings(draining)
        .start()
        .await;
    let ingress_role = corral_testkit::database::connect(&stack.writer().url).await;
    let client = stack.client().await;
    let nul = fixtures::delivery_status(
        "nul000000000000000000000",
        "2026-11-27T05:24:31.000Z",
        "",
        "order\u{0}1",
    );
    // Types fine, but its extra number overflows `numeric` when PostgreSQL
    // builds the payload's jsonb: refused inside the claiming transaction.
    let overflowing = {
        let body = valid("").1;
        format!(
            r#"{}, "carrier_score": 1e200000}}"#,
            body.trim_end_matches('}')
        )
    };
    let mut hostile: Vec<(Uuid, Vec<u8>)> = Vec::new();
    let mut valid_ids = Vec::new();
    let bodies: Vec<(bool, Vec<u8>)> = vec![
        (true, valid("").1.into_bytes()),
        (false, b"\xff\xfe{not utf-8".to_vec()),
        (true, valid("").1.into_bytes()),
        (false, b"[1, 2, 3]".to_vec()),
        (false, nul.into_bytes()),
        (true, valid("").1.into_bytes()),
        (false, overflowing.into_bytes()),
        (true, valid("").1.into_bytes()),
    ];
    for (is_valid, body) in bodies {
        let id = Uuid::now_v7();
        ingress_role
            .execute(
                "INSERT INTO spooled_webhooks (message_id, kind, body, received_at)
                 VALUES ($1, 'rvm', $2, now())",
                &[&id, &body],
            )
            .await
            .expect("the spool role spools whatever bytes it likes");
        if is_valid {
            valid_ids.push(id);
        } else {
            hostile.push((id, body));
        }
    }

    let worker = RunningWorker::start(stack.worker_config()).await;
    wait_count(&client, SPOOLED_ROWS, 0).await;
    let metrics = settled(&worker, DRAINED, 8.0).await;
    assert_eq!(metrics.get(STORED), 4.0);
    assert_eq!(metrics.get(QUARANTINED), 4.0);
    let mut stored: Vec<Uuid> = client
        .query("SELECT message_id FROM delivery_events", &[])
        .await
        .expect("reading the rows")
        .iter()
        .map(|row| row.get(0))
        .collect();
    stored.sort();
    assert_eq!(stored, valid_ids, "each valid webhook once");
    for (id, body) in &hostile {
        let row = client
            .query_one(
                "SELECT body FROM quarantined_webhooks WHERE message_id = $1",
                &[id],
            )
            .await
            .unwrap_or_else(|err| panic!("the quarantined row of {id}: {err}"));
        assert_eq!(&row.get::<_, Vec<u8>>(0), body, "byte for byte");
    }
    assert_eq!(count(&client, QUARANTINE).await, 4);
    let refused: String = client
        .query_one(
            "SELECT error FROM quarantined_webhooks WHERE message_id = $1",
            &[&hostile[3].0],
        )
        .await
        .expect("the quarantined row PostgreSQL refused")
        .get(0);
    assert_eq!(
        refused,
        "PostgreSQL refused the typed row: value overflows numeric format"
    );
    worker.stop().await.expect("the worker stops cleanly");
}

/// The worker's connection dies while a drain round is in progress (its
/// rows claimed and deleted, their events inserted, nothing committed): the
/// rows come back to the spool whole, and once the database can be reached
/// again each is stored exactly once.
#[tokio::test]
async fn a_drain_round_cut_before_its_commit_gives_its_rows_back() {
    const WEBHOOKS: usize = 20;
    let stack = Stack::builder()
        .migrated()
        .db_proxy()
        .worker_settings(draining)
        .worker_settings(|worker| worker.db.db_timeout_ms = 10_000)
        .start()
        .await;
    let (db, client, postgres) = (stack.db(), stack.client().await, stack.db_proxy());
    // Within the worker's statement timeout (its CORRAL_DB_TIMEOUT_MS), so
    // only the cut can end the round.
    install_slow_commit(&client, 2.0).await;
    let mut ids = Vec::new();
    for _ in 0..WEBHOOKS {
        let id = Uuid::now_v7();
        client
            .execute(
                "INSERT INTO spooled_webhooks (message_id, kind, body, received_at)
                 VALUES ($1, 'sms', $2, now())",
                &[&id, &valid("").1.as_bytes()],
            )
            .await
            .expect("spooling a webhook as postgres");
        ids.push(id);
    }

    let worker = RunningWorker::start_unready(stack.worker_config()).await;
    wait_batch_in_flight(&client, &db.name).await;
    let before = worker.metrics().await;
    postgres.cut();
    client
        .execute("UPDATE test_slow_commit SET seconds = 0", &[])
        .await
        .expect("no more slow commits");
    // The server finds its client gone once the statement ends, and rolls
    // the round back: its rows are no longer locked, nor deleted.
    wait_count(&client, UNLOCKED_ROWS, WEBHOOKS as i64).await;
    assert_eq!(count(&client, EVENTS).await, 0);
    assert_eq!(
        worker.metrics().await.get(DRAINED),
        0.0,
        "a round that did not commit is not counted as drained"
    );

    postgres.restore();
    wait_count(&client, SPOOLED_ROWS, 0).await;
    wait_count(&client, EVENTS, WEBHOOKS as i64).await;
    let mut stored: Vec<Uuid> = client
        .query("SELECT message_id FROM delivery_events", &[])
        .await
        .expect("reading the rows")
        .iter()
        .map(|row| row.get(0))
        .collect();
    stored.sort();
    assert_eq!(stored, ids, "each spooled webhook once");
    let after = settled(&worker, DRAINED, WEBHOOKS as f64).await;
    assert_eq!(
        after.get(DRAINED),
        WEBHOOKS as f64,
        "only committed rounds count"
    );
    assert!(
        after.get(DB_TRANSIENT) > before.get(DB_TRANSIENT),
        "the failed round is counted"
    );
    worker.stop().await.expect("the worker stops cleanly");
}
