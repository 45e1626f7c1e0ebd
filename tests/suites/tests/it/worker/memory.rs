//! The worker's memory is bounded by the bytes it holds, not by a message
//! count, whatever each message carries.

use std::{sync::Mutex, time::Duration};

use corral_contract::envelope::{Kind, batch::Packing};
use corral_testkit::{
    broker::TestBroker,
    fixtures::DeliveryStatus,
    process::{Process, ProcessConfig, workspace_root},
    wait,
};
use tokio::time::Instant;
use uuid::Uuid;

use super::helpers::{EVENTS, count, now_micros, worker_stack};

const MIB: u64 = 1024 * 1024;

/// Envelope-2 messages pre-filled, each of [`PER_MESSAGE`] webhooks of about
/// 4 KiB (a long `foreign_id`): ~252 KiB a message, just under the largest
/// ingress publishes by default (`CORRAL_PUBLISH_BATCH_MAX_BYTES`), ~246 MiB
/// in all.
const MESSAGES: usize = 1_000;
const PER_MESSAGE: usize = 64;
const FOREIGN_ID_BYTES: usize = 3_500;
/// `CORRAL_PUBLISH_BATCH_MAX_BYTES`'s default.
const LARGEST_MESSAGE: u64 = 256 * 1024;

/// Behind a locked `delivery_events` (the outage the queue exists to
/// absorb), a worker with default settings takes only what its byte budget
/// allows, so its peak RSS (`VmHWM`, its own: it runs as a child process)
/// stays under the memory limit the deployment gives it; once the lock is
/// gone every webhook is stored exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_locked_table_the_worker_holds_no_more_than_its_memory_limit_allows() {
    let limit = deployed_worker_memory_limit();
    let stack = worker_stack().migrated().start().await;
    let (broker, db) = (stack.broker(), stack.db());
    let (ids, message_bytes) = prefill(broker).await;
    assert!(
        message_bytes <= LARGEST_MESSAGE,
        "{message_bytes} bytes: a message ingress publishes is at most {LARGEST_MESSAGE}"
    );

    let locker = db.client().await;
    locker
        .batch_execute("BEGIN; LOCK TABLE delivery_events IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("locking delivery_events");
    let worker = Process::start(ProcessConfig::worker(&db.url, broker.prefix())).await;
    let taken = taken_when_settled(broker).await;
    let held = worker.peak_rss_bytes().expect("the worker is running");
    eprintln!(
        "the worker took {taken} of {MESSAGES} messages ({} MiB) behind the lock; peak RSS {} MiB",
        taken as u64 * message_bytes / MIB,
        held / MIB
    );
    locker
        .batch_execute("COMMIT")
        .await
        .expect("releasing the lock");

    let client = db.client().await;
    let webhooks = (MESSAGES * PER_MESSAGE) as i64;
    wait::until_true(
        "every webhook to be stored",
        Duration::from_secs(300),
        || async { count(&client, EVENTS).await >= webhooks },
    )
    .await;
    let peak = worker.peak_rss_bytes().expect("the worker is running");
    eprintln!("peak RSS after the drain {} MiB", peak / MIB);
    assert!(
        peak < limit,
        "the worker's peak RSS was {} MiB, over the deployment's limit of {} MiB (it took \
         {taken} messages of {} KiB behind the lock)",
        peak / MIB,
        limit / MIB,
        message_bytes / 1024
    );
    let rows = client
        .query_one(
            "SELECT count(*), count(DISTINCT message_id),
                    count(*) FILTER (WHERE message_id = ANY($1))
             FROM delivery_events",
            &[&ids],
        )
        .await
        .expect("counting the rows");
    let (all, distinct, ours): (i64, i64, i64) = (rows.get(0), rows.get(1), rows.get(2));
    assert_eq!(
        (all, distinct, ours),
        (webhooks, webhooks, webhooks),
        "each webhook is one row (rows, distinct ids, ids sent)"
    );
}

/// Publishes the messages; returns every webhook's id and the size of one
/// message's body.
async fn prefill(broker: &TestBroker) -> (Vec<Uuid>, u64) {
    let foreign_id = "f".repeat(FOREIGN_ID_BYTES);
    let mut ids = Vec::with_capacity(MESSAGES * PER_MESSAGE);
    let mut message_bytes = 0;
    for _ in 0..MESSAGES {
        let bodies: Vec<(Uuid, String)> = (0..PER_MESSAGE)
            .map(|_| {
                let id = Uuid::now_v7();
                let drop_id = id.simple().to_string();
                let body = DeliveryStatus {
                    drop_id: &drop_id,
                    foreign_id: &foreign_id,
                    ..DeliveryStatus::default()
                }
                .body();
                (id, body)
            })
            .collect();
        let received_at = now_micros();
        let packing: Vec<Packing> = bodies
            .iter()
            .map(|(id, body)| Packing {
                id: *id,
                received_at,
                kind: Kind::Sms,
                body: body.as_bytes(),
            })
            .collect();
        if message_bytes == 0 {
            message_bytes = corral_contract::envelope::batch_message(
                Uuid::now_v7(),
                &packing,
                corral_contract::envelope::Charset::Any,
            )
            .body
            .len() as u64;
        }
        broker.publish_batch(&packing).await;
        ids.extend(bodies.iter().map(|(id, _)| *id));
    }
    (ids, message_bytes)
}

/// Waits until the worker has taken all the messages it will take while
/// nothing is acknowledged (the queue's ready count no longer falls for
/// 3 s); returns how many it took.
async fn taken_when_settled(broker: &TestBroker) -> usize {
    const SETTLED: Duration = Duration::from_secs(3);
    let queue = broker.queue();
    let last = Mutex::new((u32::MAX, Instant::now()));
    let ready = wait::until(
        "the worker to stop taking messages",
        Duration::from_secs(120),
        || async {
            let ready = broker.ready_count(&queue).await;
            let mut last = last.lock().expect("not poisoned");
            if ready != last.0 {
                *last = (ready, Instant::now());
                return None;
            }
            (ready < MESSAGES as u32 && last.1.elapsed() >= SETTLED).then_some(ready)
        },
    )
    .await;
    MESSAGES - ready as usize
}

/// The worker's `resources.limits.memory` in `deploy/k8s/base/sizing.yaml`.
fn deployed_worker_memory_limit() -> u64 {
    let path = workspace_root().join("deploy/k8s/base/sizing.yaml");
    let sizing = std::fs::read_to_string(&path).expect("reading sizing.yaml");
    let worker = sizing
        .split("---")
        .find(|doc| doc.contains("name: corral-worker"))
        .expect("sizing.yaml sizes corral-worker");
    let limits = &worker[worker.find("limits:").expect("the worker has limits")..];
    let memory = limits
        .lines()
        .find_map(|line| line.trim().strip_prefix("memory:"))
        .expect("the worker has a memory limit");
    let mebibytes: u64 = memory
        .split('#')
        .next()
        .unwrap_or_default()
        .trim()
        .strip_suffix("Mi")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a limit in Mi, not {memory:?}"));
    mebibytes * MIB
}
