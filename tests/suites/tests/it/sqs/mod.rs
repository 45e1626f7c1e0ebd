//! SQS as the buffer (`CORRAL_BUFFER=sqs`), against the local moto server
//! with the real SDK: each test makes its own queue (and dead-letter queue)
//! and deletes them afterwards.
//!
//! - `flow`: ingress and worker over SQS, in-process and as processes:
//!   every webhook one row, several webhooks per SQS message.
//! - `fifo`: a FIFO queue (groups by number, deduplication ids), and calls
//!   made fuller by lingering, counted as SQS bills them.
//! - `outage`: SQS unreachable: spooled with a spool, 503 without.
//! - `visibility`: a message held and not deleted comes back once its
//!   visibility timeout runs out and is stored once; one that keeps coming
//!   back goes to the dead-letter queue.
//! - `settings`: what stops either binary at start, and why.
//! - `dead_letters`: `corral-worker dead-letters` on the dead-letter queue
//!   of the redrive policy: listing leaves everything, replays store once.
//! - `metrics`: the queue depth and the oldest message's wait on `/metrics`.
//! - `characters`: a body holding characters SQS refuses (U+FFFE, U+FFFF)
//!   travels escaped and is stored exactly.
//! - `signed`: a signed webhook's message routed `dropcowboy.event`.
//! - `memory`: the worker receives no more bytes than its budget.

mod characters;
mod dead_letters;
mod fifo;
mod flow;
mod memory;
mod metrics;
mod outage;
mod settings;
mod signed;
mod visibility;

use std::time::Duration;

use chrono::Utc;
use corral_contract::envelope::{Kind, batch::Packing};
use corral_testkit::{fixtures, sqs::TestQueue};
use uuid::Uuid;

/// Deadline of every wait.
const WAIT: Duration = Duration::from_secs(30);

/// A webhook body with a drop id of its own.
fn webhook(i: usize) -> String {
    fixtures::delivery_status(
        &format!("sqs{i:021}"),
        "2026-11-27T05:24:31.000Z",
        "",
        &format!("o-{i}"),
    )
}

fn kind(i: usize) -> &'static str {
    if i.is_multiple_of(2) { "sms" } else { "rvm" }
}

/// Sends `count` webhooks to `queue` as one message, as ingress would;
/// returns their ids.
async fn send_message(queue: &TestQueue, first: usize, count: usize) -> Vec<Uuid> {
    let bodies = bodies(first, count);
    let packing = packing(&bodies, Kind::Sms);
    queue.send_batch(&packing).await;
    packing.iter().map(|p| p.id).collect()
}

/// Webhooks `first..first + count`.
fn bodies(first: usize, count: usize) -> Vec<String> {
    (first..first + count).map(webhook).collect()
}

/// `bodies` as ingress packs them, each with a new id, all of `kind`.
fn packing(bodies: &[String], kind: Kind) -> Vec<Packing<'_>> {
    bodies
        .iter()
        .map(|body| Packing {
            id: Uuid::now_v7(),
            received_at: Utc::now(),
            kind,
            body: body.as_bytes(),
        })
        .collect()
}

/// Rows per message id among `ids`, the ids missing, and the table's rows.
async fn rows(client: &tokio_postgres::Client, ids: &[Uuid]) -> (Vec<i64>, usize, i64) {
    let found = client
        .query(
            "SELECT count(*) FROM delivery_events WHERE message_id = ANY($1) GROUP BY message_id",
            &[&ids],
        )
        .await
        .expect("rows by message id");
    let total: i64 = client
        .query_one("SELECT count(*) FROM delivery_events", &[])
        .await
        .expect("counting rows")
        .get(0);
    let counts: Vec<i64> = found.iter().map(|row| row.get(0)).collect();
    (counts.clone(), ids.len() - counts.len(), total)
}

/// Waits until each of `ids` is a row, then asserts each is exactly one and
/// the table holds nothing else.
async fn assert_each_once(client: &tokio_postgres::Client, ids: &[Uuid]) {
    corral_testkit::wait::until_true("every webhook to be a row", WAIT, || async {
        rows(client, ids).await.1 == 0
    })
    .await;
    let (counts, missing, total) = rows(client, ids).await;
    assert_eq!(missing, 0);
    assert!(
        counts.iter().all(|&n| n == 1),
        "stored more than once: {counts:?}"
    );
    assert_eq!(total, ids.len() as i64, "rows that no webhook asked for");
}
