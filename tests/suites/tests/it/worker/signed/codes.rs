//! Acting on codes, not texts: a suppression follows the `reason_code`
//! wherever the body has one, whatever its text says, and the text only for
//! bodies without a code (v1); migration V6 adds the suppressions the codes
//! of events stored before it call for.

use corral_testkit::{database::TestDatabase, fixtures};
use serde_json::json;
use tokio_postgres::Client;

use super::{SignedStack, deliveries, edited, settled_deliveries};
use crate::worker::helpers::{EVENTS, STORED, settled, wait_count};

/// Every suppression: number, kind, class, reason.
async fn suppressions(client: &Client) -> Vec<(String, String, String, Option<String>)> {
    client
        .query(
            "SELECT phone_number, kind, class, reason FROM suppressions ORDER BY 1, 2, 3",
            &[],
        )
        .await
        .expect("the suppressions")
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2), row.get(3)))
        .collect()
}

fn row(
    phone: &str,
    kind: &str,
    class: &str,
    reason: &str,
) -> (String, String, String, Option<String>) {
    (
        phone.to_owned(),
        kind.to_owned(),
        class.to_owned(),
        Some(reason.to_owned()),
    )
}

/// A signed status of `event` to `to` with this code and text.
fn status(event: &str, event_id: &str, to: &str, code: i32, reason: &str) -> String {
    let fixture = if event == "contact.sms.status" {
        fixtures::V2_WEBHOOK_SMS_STATUS
    } else {
        fixtures::V2_WEBHOOK_RVM_STATUS
    };
    let outcome = if code == 0 { "success" } else { "failure" };
    edited(
        fixture,
        &[
            ("event_id", json!(event_id)),
            ("data.drop_id", json!(format!("drop-{event_id}"))),
            ("data.to", json!(to)),
            ("data.status", json!(outcome)),
            ("data.reason", json!(reason)),
            ("data.reason_code", json!(code)),
        ],
    )
}

#[tokio::test]
async fn suppressions_follow_the_code_whatever_the_text_and_the_text_without_a_code() {
    let stack = SignedStack::start().await;
    let (sms, rvm) = ("contact.sms.status", "contact.rvm.status");
    let signed = [
        status(sms, "e1", "+15550020090", 4016, "Something new"),
        status(rvm, "e2", "+15550010091", 4017, ""),
        status(rvm, "e3", "+15550010098", 6005, "Opt-in Revoked"),
        status(rvm, "e4", "+15550010092", 4019, "RND Reassigned"),
        // The text says opted out; the code (Too Many Attempts) does not.
        status(sms, "e5", "+15550020095", 4013, "Opted out"),
        status(sms, "e6", "+15550020001", 0, ""),
    ];
    for body in &signed {
        stack.deliver(body).await;
    }
    // A v2 callback: its code decides too.
    let v2 = edited(
        fixtures::V2_CALLBACK_RVM_FAILURE,
        &[
            ("reason", json!("Something new")),
            ("reason_code", json!(4016)),
        ],
    );
    stack.callback("rvm", &v2).await;
    // v1 callbacks have no code: their text decides.
    for (drop_id, phone, reason) in [
        ("v1-opted", "+15550000001", "Opted out"),
        ("v1-litigator", "+15550000002", "Known Litigator"),
    ] {
        let body = fixtures::DeliveryStatus {
            drop_id,
            phone_number: phone,
            reason: Some(reason),
            ..fixtures::DeliveryStatus::default()
        }
        .body();
        stack.callback("sms", &body).await;
    }
    wait_count(&stack.client, EVENTS, 9).await;
    assert_eq!(
        suppressions(&stack.client).await,
        vec![
            row("+13125550187", "rvm", "internal_dnc", "Something new"),
            row("+15550000001", "sms", "opted_out", "Opted out"),
            row("+15550000002", "sms", "litigator", "Known Litigator"),
            row("+15550010091", "rvm", "litigator", ""),
            row("+15550010092", "rvm", "reassigned", "RND Reassigned"),
            row("+15550010098", "rvm", "opted_out", "Opt-in Revoked"),
            row("+15550020090", "sms", "internal_dnc", "Something new"),
        ]
    );
    // The metric labels the code's meaning, not the text.
    settled(stack.worker(), STORED, 9.0).await;
    let metrics = settled_deliveries(stack.worker(), 9.0).await;
    assert_eq!(
        deliveries(&metrics, "sms", "failure", "Internal DNC", "4016"),
        1.0
    );
    assert_eq!(
        deliveries(&metrics, "sms", "failure", "Too Many", "4013"),
        1.0
    );
    assert_eq!(
        deliveries(&metrics, "sms", "failure", "Opted out", "none"),
        1.0
    );
    stack.stop().await;
}

/// Migrations V1 to V5 as the previous release applied them.
async fn migrated_to_v5(client: &Client) {
    for migration in [
        include_str!("../../../../../../worker/migrations/V1__initial.sql"),
        include_str!("../../../../../../worker/migrations/V2__deliveries_ties_by_received_at.sql"),
        include_str!("../../../../../../worker/migrations/V3__spooled_webhooks.sql"),
        include_str!("../../../../../../worker/migrations/V4__suppressions_summary_results.sql"),
        include_str!("../../../../../../worker/migrations/V5__signed_events_kind.sql"),
    ] {
        client
            .batch_execute(migration)
            .await
            .expect("a previous migration");
    }
}

#[tokio::test]
async fn migration_6_adds_the_suppressions_stored_codes_call_for_and_removes_none() {
    let db = TestDatabase::new().await;
    let client = db.client().await;
    migrated_to_v5(&client).await;
    // v2 callbacks the previous release stored (their code only in the
    // payload), and the suppressions their texts gave them.
    client
        .batch_execute(
            r#"
            INSERT INTO delivery_events (id, fingerprint, message_id, kind, drop_id, phone_number,
                                         attempt_date, status, reason, payload, received_at)
            OVERRIDING SYSTEM VALUE VALUES
              (1, '\x01', '00000000-0000-0000-0000-000000000001', 'sms', 'd1', '+15550000001',
               '2026-11-27T10:00:00Z', 'failure', 'Something new', '{"reason_code": 4016}',
               '2026-11-27T10:00:01Z'),
              (2, '\x02', '00000000-0000-0000-0000-000000000002', 'sms', 'd2', '+15550000002',
               '2026-11-27T10:00:00Z', 'failure', 'Internal DNC', '{"reason_code": 4016}',
               '2026-11-27T10:00:01Z'),
              (3, '\x03', '00000000-0000-0000-0000-000000000003', 'rvm', 'd3', '+15550000003',
               '2026-11-27T10:00:00Z', 'failure', 'Opted out', '{"reason_code": 4002}',
               '2026-11-27T10:00:01Z'),
              (4, '\x04', '00000000-0000-0000-0000-000000000004', 'sms', 'd4', '+15550000004',
               '2026-11-27T10:00:00Z', 'failure', 'Something new', '{}',
               '2026-11-27T10:00:01Z'),
              (5, '\x05', '00000000-0000-0000-0000-000000000005', 'rvm', 'd5', '+15550000005',
               '2026-11-27T10:00:00Z', 'failure', 'x', '{"reason_code": "4017"}',
               '2026-11-27T10:00:01Z'),
              (6, '\x06', '00000000-0000-0000-0000-000000000006', 'rvm', 'd6', NULL,
               '2026-11-27T10:00:00Z', 'failure', 'x', '{"reason_code": 6005}',
               '2026-11-27T10:00:01Z'),
              (7, '\x07', '00000000-0000-0000-0000-000000000007', 'rvm', 'd7', '+15550000007',
               '2026-11-27T10:00:00Z', 'failure', 'x', '{"reason_code": 40.5}',
               '2026-11-27T10:00:01Z');
            INSERT INTO suppressions (phone_number, kind, class, reason, first_seen, last_seen,
                                      event_id, last_event_id) VALUES
              ('+15550000002', 'sms', 'internal_dnc', 'Internal DNC', '2026-11-27T10:00:00Z',
               '2026-11-27T10:00:00Z', 2, 2),
              ('+15550000003', 'rvm', 'opted_out', 'Opted out', '2026-11-27T10:00:00Z',
               '2026-11-27T10:00:00Z', 3, 3);
            "#,
        )
        .await
        .expect("rows as the previous release wrote them");
    client
        .batch_execute(include_str!(
            "../../../../../../worker/migrations/V6__reason_codes_signed_events.sql"
        ))
        .await
        .expect("migration 6");
    assert_eq!(
        suppressions(&client).await,
        vec![
            // The code's class, which the text did not give.
            row("+15550000001", "sms", "internal_dnc", "Something new"),
            // Text and code agree: as it was.
            row("+15550000002", "sms", "internal_dnc", "Internal DNC"),
            // The text's class stays: only an operator lifts a suppression.
            row("+15550000003", "rvm", "opted_out", "Opted out"),
            // A code sent as digits in a string counts as the code.
            row("+15550000005", "rvm", "litigator", "x"),
        ]
    );
    let events: Vec<(i64, i64)> = client
        .query(
            "SELECT event_id, last_event_id FROM suppressions ORDER BY phone_number",
            &[],
        )
        .await
        .expect("the suppressions' events")
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    assert_eq!(events, [(1, 1), (2, 2), (3, 3), (5, 5)]);
}
