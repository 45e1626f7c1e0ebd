//! No queue bound to `<prefix>.delivery-results`: RabbitMQ returns every
//! event (mandatory), so they wait in the outbox, counted in the pending
//! gauge and as refused, and flow once a queue is bound.

use corral_contract::envelope::Kind;
use corral_testkit::{stack::Stack, wait};

use super::helpers::*;
use crate::worker::helpers::{self as worker, send};

#[tokio::test]
async fn events_wait_in_the_outbox_until_a_queue_is_bound() {
    let mut stack = Stack::builder().worker(results_on).start().await;
    let (broker, worker, client) = (stack.broker(), stack.worker(), stack.client().await);

    let mut sent = Vec::new();
    for _ in 0..3 {
        let (_, body) = worker::valid("");
        sent.push(send(broker, Kind::Rvm.routing_key(), body).await);
    }
    worker::wait_count(&client, worker::EVENTS, 3).await;
    wait::until_true(
        "the three events to be measured as pending",
        WAIT,
        || async {
            let metrics = worker.metrics().await;
            metrics.get(PENDING) == 3.0 && metrics.get(OLDEST) > 0.0
        },
    )
    .await;
    assert_eq!(worker::count(&client, OUTBOX).await, 3);
    let metrics = worker.metrics().await;
    assert_eq!(metrics.get(PUBLISHED), 0.0);
    assert!(
        metrics.get(UNROUTABLE) >= 3.0,
        "each return counted: {}",
        metrics.get(UNROUTABLE)
    );

    let queue = broker.bind_results("late").await;
    let got = take(broker, &queue, 3).await;
    let mut ids: Vec<_> = got.iter().map(|event| event.id).collect();
    let mut sent: Vec<_> = sent.iter().map(|s| s.id).collect();
    ids.sort();
    sent.sort();
    assert_eq!(ids, sent);
    assert!(got.iter().all(|event| event.kind == Kind::Rvm));
    worker::wait_count(&client, OUTBOX, 0).await;
    wait::until_true("the outbox to be measured empty", WAIT, || async {
        let metrics = worker.metrics().await;
        metrics.get(PUBLISHED) == 3.0 && metrics.get(PENDING) == 0.0 && metrics.get(OLDEST) == 0.0
    })
    .await;
    stack.stop_worker().await.expect("the worker stops cleanly");
}
