//! A worker killed between storing events and publishing their result
//! events: another worker publishes every one, each id once after
//! deduplication (a copy more is allowed, a missing one is not).

use std::{
    cell::RefCell,
    collections::{BTreeMap, BTreeSet},
};

use corral_contract::envelope::Kind;
use corral_testkit::{
    process::{Process, ProcessConfig},
    stack::{Stack, Via},
    wait,
};
use uuid::Uuid;

use super::helpers::*;
use crate::worker::helpers::{self as worker, send};

/// A worker process with result events on, quick to notice a dead link.
fn process(database_url: &str, prefix: &str) -> ProcessConfig {
    ProcessConfig::worker(database_url, prefix)
        .env("CORRAL_RESULT_EVENTS", "true")
        .env("CORRAL_AMQP_CONNECT_TIMEOUT_MS", "2000")
        .env("CORRAL_AMQP_RECONNECT_MAX_MS", "300")
        .env("CORRAL_DB_RETRY_MAX_MS", "300")
}

#[tokio::test]
async fn a_worker_killed_between_commit_and_relay_still_delivers_every_event() {
    let stack = Stack::builder()
        .migrated()
        .amqp_proxy(Via::Worker)
        .start()
        .await;
    let (broker, db, proxy) = (stack.broker(), stack.db(), stack.amqp_proxy());
    let client = stack.client().await;
    let queue = broker.bind_results("service").await;
    // Only the relay's link goes through the proxy: the worker keeps
    // consuming and committing while its result events cannot leave.
    let mut first = Process::start_ready(
        process(&db.url, broker.prefix()).env("CORRAL_RESULTS_AMQP_URL", proxy.amqp_url()),
    )
    .await;
    let mut received: BTreeMap<Uuid, usize> = BTreeMap::new();
    let mut sent = Vec::new();

    // The link works: these leave through the proxy.
    for _ in 0..5 {
        let (_, body) = worker::valid("");
        sent.push(send(broker, Kind::Sms.routing_key(), body).await.id);
    }
    for event in take(broker, &queue, 5).await {
        *received.entry(event.id).or_default() += 1;
    }

    // Then it carries nothing: publishes go out, no confirm comes back.
    proxy.blackhole();
    for i in 0..20 {
        let (_, body) = worker::valid(if i % 2 == 0 { "" } else { "Opted out" });
        sent.push(send(broker, Kind::Sms.routing_key(), body).await.id);
    }
    worker::wait_count(&client, worker::EVENTS, 25).await;
    assert_eq!(
        worker::count(&client, OUTBOX).await,
        20,
        "the events stored after the link died are all still in the outbox"
    );
    first.sigkill();
    first.wait_exit(WAIT).await;
    assert_eq!(worker::count(&client, OUTBOX).await, 20);

    // A new worker with a working link publishes what the dead one left.
    let mut second = Process::start_ready(process(&db.url, broker.prefix())).await;
    let stored: BTreeSet<Uuid> = client
        .query("SELECT message_id FROM delivery_events", &[])
        .await
        .expect("the stored ids")
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(
        stored,
        sent.iter().copied().collect(),
        "every webhook stored"
    );
    let received = RefCell::new(received);
    let receive = || async {
        for message in broker.drain(&queue).await {
            *received
                .borrow_mut()
                .entry(decode(&message).id)
                .or_default() += 1;
        }
        received.borrow().len()
    };
    wait::until_true("every stored event's id to arrive", WAIT, || async {
        receive().await >= stored.len()
    })
    .await;
    worker::wait_count(&client, OUTBOX, 0).await;
    receive().await;
    let received = received.into_inner();
    let ids: BTreeSet<Uuid> = received.keys().copied().collect();
    assert_eq!(ids, stored, "each stored event's id, and no other");
    let copies: usize = received.values().sum();
    tracing::info!(
        events = stored.len(),
        copies,
        "result events received across the crash (before deduplication)"
    );
    assert!(
        second.terminate(WAIT).await.success(),
        "the worker stops cleanly"
    );
}
