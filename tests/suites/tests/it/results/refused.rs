//! A bound queue that refuses events (full, `x-overflow: reject-publish`)
//! beside a healthy one: RabbitMQ nacks the events the full queue refuses
//! and takes the rest. Each event is judged by its own confirm: the ones
//! taken leave the outbox and reach the healthy queue once; the refused ones
//! stay, are retried with backoff and counted, and once the full queue is
//! drained every event reaches it and the outbox empties.

use std::{
    cell::RefCell,
    collections::{BTreeMap, BTreeSet},
};

use corral_contract::envelope::Kind;
use corral_testkit::{broker::TestBroker, fixtures, stack::Stack, wait};
use lapin::types::{AMQPValue, FieldTable};
use uuid::Uuid;

use super::helpers::*;
use crate::worker::helpers::{self as worker, send_batch};

/// Room for this many events in the small queue.
const ROOM: i32 = 3;

/// Stored in one batch, so they leave in one round.
const EVENTS: usize = 12;

/// Arguments of a queue that holds `ROOM` messages and refuses more.
fn small() -> FieldTable {
    let mut arguments = FieldTable::default();
    arguments.insert("x-max-length".into(), AMQPValue::LongInt(ROOM));
    arguments.insert(
        "x-overflow".into(),
        AMQPValue::LongString("reject-publish".into()),
    );
    arguments
}

/// The ids a queue received, and how often each.
type Received = RefCell<BTreeMap<Uuid, usize>>;

/// Adds what `queue` holds now to `received`; returns how many it has seen.
async fn receive(broker: &TestBroker, queue: &str, received: &Received) -> usize {
    for message in broker.drain(queue).await {
        *received
            .borrow_mut()
            .entry(decode(&message).id)
            .or_default() += 1;
    }
    received.borrow().values().sum()
}

fn ids(received: &Received) -> BTreeSet<Uuid> {
    received.borrow().keys().copied().collect()
}

#[tokio::test]
async fn a_refusing_queue_holds_back_only_the_events_it_refused() {
    let mut stack = Stack::builder().worker(results_on).start().await;
    let (broker, worker, client) = (stack.broker(), stack.worker(), stack.client().await);
    let healthy = broker.bind_results("healthy").await;
    let small = broker.bind_results_with("small", small()).await;

    let bodies: Vec<String> = (0..EVENTS)
        .map(|i| {
            let drop_id = format!("refused-{i:02}");
            fixtures::delivery_status(&drop_id, "2026-11-27T05:24:31.000Z", "", "order")
        })
        .collect();
    let webhooks: Vec<(Kind, &[u8])> = bodies.iter().map(|b| (Kind::Sms, b.as_bytes())).collect();
    let sent: BTreeSet<Uuid> = send_batch(broker, &webhooks)
        .await
        .iter()
        .map(|s| s.id)
        .collect();

    // The small queue takes the first ROOM events and refuses the rest; the
    // healthy queue gets them all, and the refused ones again with a retry.
    let got = Received::default();
    wait::until_true("a retry to reach the healthy queue", WAIT, || async {
        receive(broker, &healthy, &got).await > EVENTS
    })
    .await;
    let reached = Received::default();
    receive(broker, &small, &reached).await;
    let taken = ids(&reached);
    assert_eq!(taken.len(), ROOM as usize, "the small queue's room");
    let refused = EVENTS - taken.len();
    assert_eq!(
        worker::count(&client, OUTBOX).await,
        refused as i64,
        "only the refused events stay in the outbox"
    );
    // Counted once the round's confirms are all in, after the copies landed.
    wait::until_true("each refusal counted, the retry's too", WAIT, || async {
        worker.metrics().await.get(NACKED) > refused as f64
    })
    .await;

    // Drained as it fills, the small queue gets every event, once; the
    // outbox empties.
    wait::until_true("every event to reach the small queue", WAIT, || async {
        receive(broker, &small, &reached).await;
        reached.borrow().len() == EVENTS && worker::count(&client, OUTBOX).await == 0
    })
    .await;
    receive(broker, &small, &reached).await;
    assert_eq!(ids(&reached), sent);
    assert!(
        reached.borrow().values().all(|copies| *copies == 1),
        "{reached:?}"
    );

    // Those confirmed the first time reached the healthy queue exactly once;
    // a refused one again with each retry (with its id: at least once).
    receive(broker, &healthy, &got).await;
    assert_eq!(ids(&got), sent);
    for id in &taken {
        assert_eq!(
            got.borrow()[id],
            1,
            "an event confirmed at once reaches the healthy queue once"
        );
    }
    wait::until_true("every deletion to be counted", WAIT, || async {
        worker.metrics().await.get(PUBLISHED) >= EVENTS as f64
    })
    .await;
    let metrics = worker.metrics().await;
    assert_eq!(metrics.get(PUBLISHED), EVENTS as f64, "each deleted once");
    tracing::info!(
        nacked = metrics.get(NACKED),
        copies = got.borrow().values().sum::<usize>(),
        "refusals counted, and the copies the healthy queue received"
    );
    stack.stop_worker().await.expect("the worker stops cleanly");
}
