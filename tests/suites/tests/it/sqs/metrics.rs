//! What the worker tells Prometheus about its SQS queues: the message
//! counts of the queue and of its dead-letter queue, and how long the
//! oldest message it received had waited.

use std::time::Duration;

use corral_testkit::{
    apps::RunningWorker,
    process::free_port,
    sqs::{QueueOptions, TestQueue},
    stack::Stack,
    wait,
};

use super::{assert_each_once, send_message};

/// Deadline of a wait on a measurement: every 15 s, the first at start.
const MEASURED: Duration = Duration::from_secs(40);

fn messages(queue: &str, state: &str) -> String {
    format!(r#"corral_worker_sqs_queue_messages{{queue="{queue}",state="{state}"}}"#)
}

const OLDEST: &str = "corral_worker_sqs_oldest_received_seconds";

/// Messages waiting, received by another consumer, delayed, and
/// dead-lettered: a worker that cannot reach its database (so receives
/// nothing) exports each count exactly.
#[tokio::test]
async fn the_worker_exports_the_message_counts_of_the_queue_and_its_dead_letter_queue() {
    let stack = Stack::builder().sqs().start().await;
    let queue = stack.queue();
    send_message(queue, 0, 1).await;
    assert_eq!(queue.take_and_hold(Duration::from_secs(300)).await.len(), 1);
    for n in 0..4 {
        send_message(queue, 10 + n, 2).await;
    }
    let bodies: Vec<String> = (20..23).map(super::webhook).collect();
    for body in &bodies {
        let packing = [corral_contract::envelope::batch::Packing {
            id: uuid::Uuid::now_v7(),
            received_at: chrono::Utc::now(),
            kind: corral_contract::envelope::Kind::Sms,
            body: body.as_bytes(),
        }];
        queue.send_delayed(&packing, 900).await;
    }
    for _ in 0..2 {
        send_dead_letter(queue).await;
    }

    let unreachable = format!("postgres://postgres@127.0.0.1:{}/corral", free_port());
    let mut config = stack.worker_config();
    config.db.database_url = unreachable;
    let worker = RunningWorker::start_unready(config).await;
    let want = [
        (messages("main", "visible"), 4.0),
        (messages("main", "in_flight"), 1.0),
        (messages("main", "delayed"), 3.0),
        (messages("dead_letter", "visible"), 2.0),
        (messages("dead_letter", "in_flight"), 0.0),
        (messages("dead_letter", "delayed"), 0.0),
        (OLDEST.to_owned(), 0.0),
    ];
    wait::until_true("the exact counts on /metrics", MEASURED, || async {
        let metrics = worker.metrics().await;
        let wrong: Vec<(&String, Option<f64>)> = want
            .iter()
            .filter(|(series, value)| metrics.0.get(series) != Some(value))
            .map(|(series, _)| (series, metrics.0.get(series).copied()))
            .collect();
        if !wrong.is_empty() {
            eprintln!("not yet: {wrong:?}");
        }
        wrong.is_empty()
    })
    .await;
    assert_eq!(queue.counts().await, (4, 1), "the worker received nothing");
    worker.stop().await.expect("the worker stops");
}

/// A message that waited in the queue before the worker received it shows
/// in the next measurement with at least the time it waited.
#[tokio::test]
async fn the_oldest_received_message_shows_how_long_it_waited() {
    let mut stack = Stack::builder()
        .sqs_with(QueueOptions {
            visibility_secs: 3,
            ..QueueOptions::default()
        })
        .database()
        .start()
        .await;
    let ids = send_message(stack.queue(), 0, 2).await;
    // Another consumer holds it for 3 s first: it waits at least that long.
    let held = stack.queue().take_and_hold(Duration::from_secs(3)).await;
    assert_eq!(held.len(), 1);
    stack.start_worker().await;
    let (worker, client) = (stack.worker(), stack.client().await);
    assert_each_once(&client, &ids).await;
    let waited = wait::until("the next measurement", MEASURED, || async {
        let seconds = worker.metrics().await.get(OLDEST);
        (seconds > 0.0).then_some(seconds)
    })
    .await;
    assert!(
        (3.0..20.0).contains(&waited),
        "the message waited about 3 s; measured {waited}"
    );
    stack.stop_worker().await.expect("the worker stops");
}

async fn send_dead_letter(queue: &TestQueue) {
    let body = super::webhook(99);
    let packing = [corral_contract::envelope::batch::Packing {
        id: uuid::Uuid::now_v7(),
        received_at: chrono::Utc::now(),
        kind: corral_contract::envelope::Kind::Rvm,
        body: body.as_bytes(),
    }];
    queue.send_dead_letter(&packing).await;
}
