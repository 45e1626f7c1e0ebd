//! The roll-up moves every change into `delivery_summary` exactly once: the
//! worker does it on its own every `CORRAL_SUMMARY_ROLLUP_MS`, a change
//! committed late (by a transaction older than a finished roll-up) is
//! not skipped, and roll-ups racing each other and the writers, each in
//! several transactions, move each change once.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use corral_contract::envelope::Kind;
use corral_testkit::{
    apps::RunningWorker, config::short_waits, database::TestDatabase, fixtures, stack::Stack, wait,
};
use corral_worker::summary::{self, RolledUp};
use tokio_postgres::{Client, GenericClient};

use super::{Totals, event_totals, rows, summary_totals};
use crate::worker::helpers::{EVENTS, WAIT, send, valid, wait_count};

/// Appends one change row as a batch does.
async fn change(client: &impl GenericClient, hour: &str, reason: &str, cost: &str) {
    client
        .execute(
            "INSERT INTO delivery_summary_changes
                 (hour, kind, status, reason, events, product_cost, compliance_fee, tts_fee)
             VALUES ($1::text::timestamptz, 'sms', 'failure', $2, 1, $3::text::numeric, 0.0029, 0)",
            &[&hour, &reason, &cost],
        )
        .await
        .unwrap();
}

async fn roll_up(client: &mut Client) -> RolledUp {
    summary::roll_up(client, summary::ROLL_UP_CHUNK)
        .await
        .unwrap()
        .expect("no other roll-up holds the lock")
}

#[tokio::test]
async fn the_worker_rolls_the_summary_up_on_its_own() {
    let stack = Stack::builder()
        .database()
        .worker_settings(short_waits)
        .start()
        .await;
    let (broker, db) = (stack.broker(), stack.db());
    let mut settings = stack.worker_config();
    settings.summary.summary_rollup_ms = 100;
    let worker = RunningWorker::start(settings).await;
    for reason in ["", "", fixtures::FAILURE_REASONS[0]] {
        send(broker, Kind::Sms.routing_key(), valid(reason).1).await;
    }
    let client = db.client().await;
    wait_count(&client, EVENTS, 3).await;
    let stored = event_totals(&client).await;
    wait::until_true(
        "the changes to be rolled into delivery_summary",
        WAIT,
        || async {
            rows(&client, "delivery_summary_changes").await == 0
                && rows(&client, "delivery_summary").await == 2
        },
    )
    .await;
    assert_eq!(summary_totals(&client).await, stored);
    worker.stop().await.expect("worker stops cleanly");
}

#[tokio::test]
async fn a_change_committed_late_is_rolled_up_once() {
    let db = TestDatabase::migrated().await;
    let mut late = db.client().await;
    let mut client = db.client().await;

    // A batch's transaction starts, writes its change, and is slow to commit.
    let slow = late.transaction().await.unwrap();
    change(&slow, "2026-11-27T05:00:00Z", "Invalid message", "0.099").await;
    // Meanwhile another batch commits, and a roll-up runs.
    change(&client, "2026-11-27T05:00:00Z", "Invalid message", "0.0029").await;
    assert_eq!(roll_up(&mut client).await.changes, 1);
    slow.commit().await.unwrap();

    assert_eq!(roll_up(&mut client).await.changes, 1);
    assert_eq!(roll_up(&mut client).await.changes, 0);
    assert_eq!(rows(&client, "delivery_summary_changes").await, 0);
    let summary = client
        .query_one(
            "SELECT events, product_cost::text, compliance_fee::text FROM delivery_summary",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (
            summary.get::<_, i64>(0),
            summary.get::<_, String>(1),
            summary.get::<_, String>(2)
        ),
        (2, "0.1019".to_owned(), "0.0058".to_owned())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_roll_ups_move_each_change_once() {
    const CHANGES: i64 = 300;
    // Small, so a roll-up takes several transactions.
    const CHUNK: i64 = 7;
    let db = TestDatabase::migrated().await;
    const HOURS: [&str; 2] = ["2026-11-27T05:00:00Z", "2026-11-27T06:00:00Z"];
    const REASONS: [&str; 3] = ["Invalid message", "Opted out", "Carrier said no"];
    let of = |i: i64| (HOURS[(i % 2) as usize], REASONS[(i % 3) as usize]);

    let written = Arc::new(AtomicBool::new(false));
    let writing = {
        let client = db.client().await;
        let written = written.clone();
        tokio::spawn(async move {
            for i in 0..CHANGES {
                let (hour, reason) = of(i);
                change(&client, hour, reason, "0.0029").await;
            }
            written.store(true, Ordering::SeqCst);
        })
    };
    // Three workers' roll-ups, round after round, until one round each
    // after the last change was written.
    let mut rolling = Vec::new();
    for _ in 0..3 {
        let mut client = db.client().await;
        let written = written.clone();
        rolling.push(tokio::spawn(async move {
            let mut moved = 0;
            loop {
                let last = written.load(Ordering::SeqCst);
                if let Some(done) = summary::roll_up(&mut client, CHUNK).await.unwrap() {
                    moved += done.changes;
                }
                if last {
                    return moved;
                }
            }
        }));
    }
    writing.await.unwrap();
    let mut moved = 0;
    for task in rolling {
        moved += task.await.unwrap();
    }
    let mut client = db.client().await;
    moved += roll_up(&mut client).await.changes;

    assert_eq!(moved, CHANGES, "each change moved once");
    assert_eq!(rows(&client, "delivery_summary_changes").await, 0);
    let mut expected = Totals::new();
    for i in 0..CHANGES {
        let (hour, reason) = of(i);
        let key = (
            format!("{}Z", &hour[..13]),
            "sms".to_owned(),
            "failure".to_owned(),
            reason.to_owned(),
        );
        expected
            .entry(key)
            .or_insert((0, String::new(), String::new(), "0".to_owned()))
            .0 += 1;
    }
    for (events, cost, fee, _) in expected.values_mut() {
        // n × 0.0029, as numeric prints it.
        let sum = format!("{}.{:04}", *events * 29 / 10_000, *events * 29 % 10_000);
        (*cost, *fee) = (sum.clone(), sum);
    }
    assert_eq!(summary_totals(&client).await, expected);
}
