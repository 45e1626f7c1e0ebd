//! The worker holds no more bytes of SQS messages than its budget.

use std::{sync::Mutex, time::Duration};

use corral_contract::envelope::{self, Kind};
use corral_testkit::{fixtures::DeliveryStatus, sqs::TestQueue, stack::Stack, wait};
use tokio::time::Instant;
use uuid::Uuid;

use super::{WAIT, assert_each_once, packing};

const MESSAGES: usize = 40;
/// Webhooks of ~3.9 KB each: ~190 KB a message, under SQS's 256 KiB.
const PER_MESSAGE: usize = 48;
const BUDGET: u64 = 4 * 1024 * 1024;

/// Behind a locked `delivery_events`, a worker with a 4 MiB budget receives
/// only the messages that fit it (each one asked for reserves SQS's largest
/// message, and keeps its own size once received), not `CORRAL_PREFETCH` of
/// them; once the lock is gone every webhook is stored once.
#[tokio::test]
async fn behind_a_locked_table_the_worker_receives_no_more_than_its_byte_budget() {
    let mut stack = Stack::builder()
        .sqs()
        .migrated()
        .worker_settings(|worker| {
            worker.sqs_wait_secs = 1;
            worker.max_in_hand_bytes = Some(BUDGET);
        })
        .start()
        .await;
    let queue = stack.queue();
    let foreign_id = "f".repeat(3_500);
    let mut ids = Vec::new();
    let mut message_bytes = 0;
    for _ in 0..MESSAGES {
        let bodies: Vec<String> = (0..PER_MESSAGE)
            .map(|_| {
                let drop_id = Uuid::now_v7().simple().to_string();
                DeliveryStatus {
                    drop_id: &drop_id,
                    foreign_id: &foreign_id,
                    ..DeliveryStatus::default()
                }
                .body()
            })
            .collect();
        let packing = packing(&bodies, Kind::Sms);
        message_bytes = envelope::batch_message(Uuid::now_v7(), &packing, envelope::Charset::Sqs)
            .body
            .len() as u64;
        queue.send_batch(&packing).await;
        ids.extend(packing.iter().map(|p| p.id));
    }

    let locker = stack.client().await;
    locker
        .batch_execute("BEGIN; LOCK TABLE delivery_events IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("locking delivery_events");
    stack.start_worker().await;
    let in_flight = in_flight_when_settled(stack.queue()).await;
    eprintln!("in flight: {in_flight} messages of {message_bytes} bytes");
    assert!(
        in_flight * message_bytes <= BUDGET,
        "{in_flight} messages of {message_bytes} bytes in hand, over the budget of {BUDGET}"
    );
    locker
        .batch_execute("COMMIT")
        .await
        .expect("releasing the lock");

    let client = stack.client().await;
    assert_each_once(&client, &ids).await;
    wait::until_true("the queue to be empty", WAIT, || async {
        stack.queue().counts().await == (0, 0)
    })
    .await;
    stack.stop_worker().await.expect("the worker stops");
}

/// Messages in flight once their count has not moved for 3 s.
async fn in_flight_when_settled(queue: &TestQueue) -> u64 {
    const SETTLED: Duration = Duration::from_secs(3);
    let last = Mutex::new((u64::MAX, Instant::now()));
    wait::until(
        "the worker to stop receiving",
        Duration::from_secs(60),
        || async {
            let (_, in_flight) = queue.counts().await;
            let mut last = last.lock().expect("not poisoned");
            if in_flight != last.0 {
                *last = (in_flight, Instant::now());
                return None;
            }
            (in_flight > 0 && last.1.elapsed() >= SETTLED).then_some(in_flight)
        },
    )
    .await
}
