//! One result, two channels: a send with a `callback_url` whose account
//! also has a status webhook reports its result twice, as two different
//! bodies. corral keeps both events, merges them into one `deliveries` row
//! holding what each brought, and counts the result once — in the metric,
//! the summary and `report` — with the callback's money exact.

use chrono::{DateTime, Utc};
use corral_contract::envelope::Kind;
use corral_testkit::{apps::RunningWorker, fixtures};
use corral_worker::summary::report::{self, Window};
use serde_json::json;

use super::{SignedStack, all_deliveries, deliveries, edited, settled_deliveries};
use crate::worker::helpers::{
    EVENTS, STORED, batches_of, count, install_slow_commit, send, send_batch, settled,
    wait_batch_in_flight, wait_count, worker_stack,
};

fn instant(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).expect("a date").to_utc()
}

/// The v2 callback sample (`VoiceMail Full`, 4002, compliance fee 0.0029,
/// attempted 00:01:02) for `drop_id`, with its own `foreign_id`.
fn callback(drop_id: &str) -> String {
    edited(
        fixtures::V2_CALLBACK_RVM_FAILURE,
        &[
            ("drop_id", json!(drop_id)),
            ("foreign_id", json!(format!("order-{drop_id}"))),
        ],
    )
}

/// The same result as a `contact.rvm.status` webhook (event_at 00:02:02).
fn webhook(drop_id: &str) -> String {
    edited(
        fixtures::V2_WEBHOOK_RVM_STATUS,
        &[
            ("event_id", json!(format!("event-{drop_id}"))),
            ("data.drop_id", json!(drop_id)),
            ("data.status", json!("failure")),
            ("data.reason", json!("VoiceMail Full")),
            ("data.reason_code", json!(4002)),
            ("data.to", json!("+13125550187")),
            (
                "data.contact_id",
                json!("3c5e7a9b-1d2f-4e6a-8b0c-2d4f6a8c0e1b"),
            ),
        ],
    )
}

/// A `deliveries` row as the sender reads it: foreign_id, money, provider
/// event id, contact, code, status, attempt_date, and whether its state is
/// the webhook's event.
type Merged = (
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<i32>,
    String,
    DateTime<Utc>,
    bool,
);

async fn merged(client: &tokio_postgres::Client, drop_id: &str) -> Merged {
    let row = client
        .query_one(
            "SELECT d.foreign_id, d.product_cost::text, d.compliance_fee::text,
                    d.provider_event_id, d.contact_id, d.reason_code, d.status, d.attempt_date,
                    e.event_id IS NOT NULL
             FROM deliveries d JOIN delivery_events e ON e.id = d.event_id
             WHERE d.drop_id = $1",
            &[&drop_id],
        )
        .await
        .unwrap_or_else(|err| panic!("the delivery of {drop_id}: {err}"));
    (
        row.get(0),
        row.get(1),
        row.get(2),
        row.get(3),
        row.get(4),
        row.get(5),
        row.get(6),
        row.get(7),
        row.get(8),
    )
}

fn expected(drop_id: &str) -> Merged {
    (
        Some(format!("order-{drop_id}")),
        Some("0".to_owned()),
        Some("0.0029".to_owned()),
        Some(format!("event-{drop_id}")),
        Some("3c5e7a9b-1d2f-4e6a-8b0c-2d4f6a8c0e1b".to_owned()),
        Some(4002),
        "failure".to_owned(),
        // The webhook's event_at is the later: its event is the state.
        instant("2026-12-07T00:02:02Z"),
        true,
    )
}

/// The summary's two tables added up: events, compliance fees.
async fn summarised(client: &tokio_postgres::Client) -> (i64, String) {
    let row = client
        .query_one(
            "SELECT sum(events)::bigint, sum(compliance_fee)::text
             FROM (SELECT * FROM delivery_summary
                   UNION ALL SELECT * FROM delivery_summary_changes) s",
            &[],
        )
        .await
        .expect("the summary");
    (row.get(0), row.get(1))
}

#[tokio::test]
async fn a_result_on_both_channels_is_one_delivery_counted_once_in_any_order() {
    let stack = SignedStack::start().await;
    let (before, after, together) = (
        "c0000000-0000-4000-8000-00000000000a",
        "c0000000-0000-4000-8000-00000000000b",
        "c0000000-0000-4000-8000-00000000000c",
    );
    // The callback first, then the webhook.
    stack.callback("rvm", &callback(before)).await;
    wait_count(&stack.client, EVENTS, 1).await;
    stack.deliver(&webhook(before)).await;
    // The webhook first, then the callback.
    stack.deliver(&webhook(after)).await;
    wait_count(&stack.client, EVENTS, 3).await;
    stack.callback("rvm", &callback(after)).await;
    wait_count(&stack.client, EVENTS, 4).await;
    // Both in one batch.
    let (one, other) = (callback(together), webhook(together));
    send_batch(
        stack.broker(),
        &[(Kind::Rvm, one.as_bytes()), (Kind::Event, other.as_bytes())],
    )
    .await;
    wait_count(&stack.client, EVENTS, 6).await;

    for drop_id in [before, after, together] {
        assert_eq!(merged(&stack.client, drop_id).await, expected(drop_id));
    }
    settled(stack.worker(), STORED, 6.0).await;
    let metrics = settled_deliveries(stack.worker(), 3.0).await;
    assert_eq!(deliveries(&metrics, "rvm", "failure", "other", "4002"), 3.0);
    assert_eq!(all_deliveries(&metrics), 3.0);
    assert_eq!(summarised(&stack.client).await, (3, "0.0087".to_owned()));

    let config = super::super::helpers::config(&stack.db().url, stack.broker().prefix());
    let window = Window::new(
        instant("2026-12-07T00:00:00Z"),
        instant("2026-12-07T01:00:00Z"),
    )
    .expect("a window");
    let report = report::read(&config, window, false)
        .await
        .expect("the report");
    let lines: Vec<_> = report
        .lines
        .iter()
        .map(|line| {
            let sums = &line.sums;
            (
                line.kind.as_str(),
                line.status.as_str(),
                line.reason.as_str(),
                line.reason_code,
                sums.events,
                sums.product_cost.as_str(),
                sums.compliance_fee.as_str(),
                sums.tts_fee.as_str(),
            )
        })
        .collect();
    assert_eq!(
        lines,
        [(
            "rvm",
            "failure",
            "VoiceMail Full",
            Some(4002),
            3,
            "0",
            "0.0087",
            "0"
        )]
    );
    assert_eq!(report.total.events, 3);
    stack.stop().await;
}

/// Two workers store a drop's two channels at the same moment: the first
/// holds its batch's transaction open (a trigger sleeps before its COMMIT)
/// while the second, whose statement started before that COMMIT, writes the
/// other channel of the same drops. Each result still counts once.
#[tokio::test]
async fn two_workers_storing_both_channels_at_once_count_each_result_once() {
    const DROPS: u32 = 8;
    let stack = worker_stack().migrated().start().await;
    let (broker, db) = (stack.broker(), stack.db());
    let client = &db.client().await;
    install_slow_commit(client, 1.0).await;
    let mut settings = batches_of(DROPS, stack.worker_config());
    settings.prefetch = DROPS as u16;
    // The second batch waits for the first's COMMIT, then sleeps itself.
    settings.db.db_timeout_ms = 15_000;
    let drops: Vec<String> = (0..DROPS)
        .map(|i| format!("c1000000-0000-4000-8000-0000000000{i:02}"))
        .collect();

    let first = RunningWorker::start(settings.clone()).await;
    for drop_id in &drops {
        send(broker, Kind::Rvm.routing_key(), callback(drop_id)).await;
    }
    wait_batch_in_flight(client, &db.name).await;
    // The first worker holds every callback unacknowledged (its prefetch):
    // the webhooks go to the second.
    let second = RunningWorker::start(settings).await;
    for drop_id in &drops {
        send(broker, Kind::Event.routing_key(), webhook(drop_id)).await;
    }
    wait_count(client, EVENTS, i64::from(2 * DROPS)).await;
    settled(&first, STORED, f64::from(2 * DROPS)).await;
    let metrics = settled_deliveries(&first, f64::from(DROPS)).await;
    // One recorder per test process: the two workers' counts add up.
    assert_eq!(all_deliveries(&metrics), f64::from(DROPS));
    assert_eq!(
        summarised(client).await,
        (i64::from(DROPS), "0.0232".to_owned())
    );
    for drop_id in &drops {
        assert_eq!(merged(client, drop_id).await, expected(drop_id));
    }
    first.stop().await.expect("the first worker stops cleanly");
    second
        .stop()
        .await
        .expect("the second worker stops cleanly");
    assert_eq!(
        count(client, "SELECT count(*) FROM deliveries").await,
        i64::from(DROPS)
    );
}

/// A drop stored before migration V6 (or by the previous release during an
/// upgrade) has counted nothing in `counted_results`: its state's status
/// stands for its results, so the same outcome arriving on the other
/// channel (a signed event quarantined before the upgrade and reprocessed
/// after it, say) counts nothing more, and another outcome counts.
#[tokio::test]
async fn a_drop_stored_before_the_upgrade_counts_its_status_once() {
    let stack = SignedStack::start().await;
    let (same, changed) = (
        "c2000000-0000-4000-8000-00000000000a",
        "c2000000-0000-4000-8000-00000000000b",
    );
    for drop_id in [same, changed] {
        stack.callback("rvm", &callback(drop_id)).await;
    }
    wait_count(&stack.client, EVENTS, 2).await;
    stack
        .client
        .execute("UPDATE deliveries SET counted_results = NULL", &[])
        .await
        .expect("the rows as the previous release left them");
    let before = settled_deliveries(stack.worker(), 2.0).await;
    stack.deliver(&webhook(same)).await;
    let success = edited(
        &webhook(changed),
        &[
            ("data.status", json!("success")),
            ("data.reason", json!("")),
            ("data.reason_code", json!(0)),
        ],
    );
    stack.deliver(&success).await;
    settled(stack.worker(), STORED, 4.0).await;
    let after = settled_deliveries(stack.worker(), 3.0).await;
    assert_eq!(all_deliveries(&after) - all_deliveries(&before), 1.0);
    assert_eq!(
        deliveries(&after, "rvm", "success", "none", "0")
            - deliveries(&before, "rvm", "success", "none", "0"),
        1.0
    );
    assert_eq!(summarised(&stack.client).await, (3, "0.0058".to_owned()));
    stack.stop().await;
}
