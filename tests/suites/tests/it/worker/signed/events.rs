//! Signed events through the signed route: a status stored with what it
//! says, a retry stored once, other event types kept whole, an event
//! without `event_id` quarantined alone, a receipt joined to its delivery.

use chrono::{DateTime, Utc};
use corral_contract::envelope::Kind;
use corral_testkit::fixtures;
use serde_json::json;
use uuid::Uuid;

use super::{SignedStack, all_deliveries, deliveries, edited, settled_deliveries};
use crate::{
    ingress::signed::{Delivery, SECRET, fresh_event, now},
    worker::helpers::{
        DUPLICATE, EVENTS, QUARANTINE, QUARANTINED, STORED, count, settled, valid, wait_count,
    },
};

const PROVIDER_EVENTS: &str = "SELECT count(*) FROM provider_events";

fn instant(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).expect("a date").to_utc()
}

/// What a stored signed status says, as a sender reads it back.
type Stored = (
    String,
    String,
    Option<String>,
    Option<String>,
    Option<i32>,
    DateTime<Utc>,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

#[tokio::test]
async fn a_signed_status_is_one_row_with_its_event_id_code_and_time() {
    let stack = SignedStack::start().await;
    let id = stack.deliver(fixtures::V2_WEBHOOK_SMS_STATUS).await;
    wait_count(&stack.client, EVENTS, 1).await;
    let row = stack
        .client
        .query_one(
            "SELECT kind, drop_id, event_id, event, reason_code, attempt_date, status, reason,
                    phone_number, caller_id, contact_id, team_id, message_id
             FROM delivery_events",
            &[],
        )
        .await
        .expect("the stored event");
    let stored: Stored = (
        row.get(0),
        row.get(1),
        row.get(2),
        row.get(3),
        row.get(4),
        row.get(5),
        row.get(6),
        row.get(7),
        row.get(8),
        row.get(9),
        row.get(10),
        row.get(11),
    );
    assert_eq!(row.get::<_, Uuid>(12), id, "the answered id");
    let some = |text: &str| Some(text.to_owned());
    assert_eq!(
        stored,
        (
            "sms".to_owned(),
            "d4e6f8a0-2b4c-4d6e-8f0a-1c3e5a7b9d2f".to_owned(),
            some("0b6f3c1e-5d2a-4e8f-9c7b-3a1d5e9f2c60"),
            some("contact.sms.status"),
            Some(4016),
            // event_at 1796601598000 ms: the result's time stands for the
            // attempt's, which a status webhook does not carry.
            instant("2026-12-06T23:59:58Z"),
            "failure".to_owned(),
            some("Internal DNC"),
            some("+15550020090"),
            some("+12125550111"),
            some("3c5e7a9b-1d2f-4e6a-8b0c-2d4f6a8c0e1b"),
            some("7a1e3c5d-2b4f-4a6c-9e8d-1f3b5c7d9e0a"),
        )
    );
    let delivery = stack
        .client
        .query_one(
            "SELECT provider_event_id, reason_code, contact_id, foreign_id FROM deliveries",
            &[],
        )
        .await
        .expect("the delivery");
    assert_eq!(
        (
            delivery.get::<_, Option<String>>(0),
            delivery.get::<_, Option<i32>>(1),
            delivery.get::<_, Option<String>>(2),
            delivery.get::<_, Option<String>>(3),
        ),
        (
            some("0b6f3c1e-5d2a-4e8f-9c7b-3a1d5e9f2c60"),
            Some(4016),
            some("3c5e7a9b-1d2f-4e6a-8b0c-2d4f6a8c0e1b"),
            None
        )
    );
    let metrics = settled_deliveries(stack.worker(), 1.0).await;
    assert_eq!(metrics.get(STORED), 1.0);
    assert_eq!(
        deliveries(&metrics, "sms", "failure", "Internal DNC", "4016"),
        1.0
    );
    assert_eq!(all_deliveries(&metrics), 1.0);
    stack.stop().await;
}

#[tokio::test]
async fn a_retry_with_a_new_signature_and_other_bytes_is_stored_once() {
    let stack = SignedStack::start().await;
    let body = fixtures::V2_WEBHOOK_RVM_STATUS;
    let first = stack.deliver(body).await;
    // The provider's retries: signed anew a little later, the next attempt
    // number; the second compact, the third with its keys reordered too.
    let compact = edited(body, &[]);
    let reordered = {
        let value: serde_json::Value = serde_json::from_str(body).expect("JSON");
        let object = value.as_object().expect("an object");
        let mut members: Vec<String> = object
            .iter()
            .map(|(key, value)| format!("{}: {value}", json!(key)))
            .collect();
        members.reverse();
        format!("{{ {} }}", members.join(" ,\n  "))
    };
    assert_ne!(reordered.as_bytes(), body.as_bytes());
    for (attempt, retry) in [(2, compact), (3, reordered)] {
        let later = (now() + attempt).to_string();
        let delivery = Delivery::at(SECRET, &later, retry).with("x-attempt", attempt.to_string());
        stack.deliver_as(delivery).await;
    }
    settled(stack.worker(), DUPLICATE, 2.0).await;
    let metrics = settled_deliveries(stack.worker(), 1.0).await;
    assert_eq!(metrics.get(STORED), 1.0);
    assert_eq!(count(&stack.client, EVENTS).await, 1);
    let kept: Uuid = stack
        .client
        .query_one("SELECT message_id FROM delivery_events", &[])
        .await
        .expect("the stored event")
        .get(0);
    assert_eq!(kept, first, "the first copy is the one kept");
    assert_eq!(deliveries(&metrics, "rvm", "success", "none", "0"), 1.0);
    assert_eq!(all_deliveries(&metrics), 1.0);
    stack.stop().await;
}

#[tokio::test]
async fn an_event_of_another_type_is_kept_whole_once() {
    let stack = SignedStack::start().await;
    let received = fresh_event();
    let opt_out = r#"{"event_id":"7d3f1a2b-4c5e-4f60-8a9b-0c1d2e3f4a5b","event":"contact.msg.opt_out","event_at":1796601700000,"data":{"contact_id":"3c5e7a9b-1d2f-4e6a-8b0c-2d4f6a8c0e1b","phone":"+15550020090"}}"#;
    let unheard_of = r#"{"event_id":"e-unheard-of","event":"contact.tag.added","data":[1,2]}"#;
    let ids = [
        stack.deliver(&received).await,
        stack.deliver(opt_out).await,
        stack.deliver(unheard_of).await,
    ];
    // A retry of the opt-out: the same event.
    stack.deliver(&edited(opt_out, &[])).await;
    settled(stack.worker(), DUPLICATE, 1.0).await;
    wait_count(&stack.client, PROVIDER_EVENTS, 3).await;
    let rows = stack
        .client
        .query(
            "SELECT message_id, event, event_at, body FROM provider_events ORDER BY id",
            &[],
        )
        .await
        .expect("the kept events");
    let kept: Vec<(Uuid, String, Option<DateTime<Utc>>, serde_json::Value)> = rows
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2), row.get(3)))
        .collect();
    let json = |text: &str| serde_json::from_str::<serde_json::Value>(text).expect("JSON");
    assert_eq!(
        kept,
        vec![
            (
                ids[0],
                "contact.msg.received".to_owned(),
                Some(instant("2026-12-07T00:02:02Z")),
                json(&received)
            ),
            (
                ids[1],
                "contact.msg.opt_out".to_owned(),
                Some(instant("2026-12-07T00:01:40Z")),
                json(opt_out)
            ),
            (
                ids[2],
                "contact.tag.added".to_owned(),
                None,
                json(unheard_of)
            ),
        ]
    );
    // Nothing typed, nothing suppressed: the provider publishes no fields
    // for an opt-out, so corral does not guess at them.
    assert_eq!(count(&stack.client, EVENTS).await, 0);
    let suppressions = count(&stack.client, "SELECT count(*) FROM suppressions").await;
    assert_eq!(suppressions, 0);
    let metrics = stack.worker().metrics().await;
    assert_eq!(metrics.get(STORED), 3.0);
    assert_eq!(all_deliveries(&metrics), 0.0);
    stack.stop().await;
}

#[tokio::test]
async fn an_event_without_event_id_is_quarantined_alone_and_the_rest_of_its_message_stored() {
    let stack = SignedStack::start().await;
    let (_, callback) = valid("");
    let without_id = edited(
        fixtures::V2_WEBHOOK_RVM_STATUS,
        &[("event_id", serde_json::Value::Null)],
    );
    let sent = crate::worker::helpers::send_batch(
        stack.broker(),
        &[
            (Kind::Sms, callback.as_bytes()),
            (Kind::Event, fixtures::V2_WEBHOOK_SMS_STATUS.as_bytes()),
            (Kind::Event, without_id.as_bytes()),
            (Kind::Event, fresh_event().as_bytes()),
        ],
    )
    .await;
    let metrics = settled(stack.worker(), QUARANTINED, 1.0).await;
    assert_eq!(metrics.get(STORED), 3.0);
    assert_eq!(count(&stack.client, EVENTS).await, 2);
    assert_eq!(count(&stack.client, PROVIDER_EVENTS).await, 1);
    assert_eq!(count(&stack.client, QUARANTINE).await, 1);
    let row = stack
        .client
        .query_one(
            "SELECT body, routing_key, error FROM quarantined_webhooks WHERE message_id = $1",
            &[&sent[2].id],
        )
        .await
        .expect("the quarantined event");
    assert_eq!(row.get::<_, Vec<u8>>(0), without_id.as_bytes());
    assert_eq!(row.get::<_, &str>(1), "dropcowboy.event");
    assert_eq!(row.get::<_, &str>(2), "`event_id` is missing");
    stack.stop().await;
}

/// The delivery's proof of delivery as the sender reads it: the link, when
/// it became available, the latest event's provider id and status.
async fn receipt_of(
    stack: &SignedStack,
    drop_id: &str,
) -> (
    Option<String>,
    Option<DateTime<Utc>>,
    Option<String>,
    String,
) {
    let row = stack
        .client
        .query_one(
            "SELECT proof_of_delivery_url, receipt_ready_at, provider_event_id, status
             FROM deliveries WHERE drop_id = $1",
            &[&drop_id],
        )
        .await
        .expect("the delivery");
    (row.get(0), row.get(1), row.get(2), row.get(3))
}

#[tokio::test]
async fn a_receipt_joins_its_delivery_whether_it_comes_before_or_after_the_status() {
    let stack = SignedStack::start().await;
    let status = fixtures::V2_WEBHOOK_RVM_STATUS;
    let receipt = fixtures::V2_WEBHOOK_RVM_RECEIPT;
    // After: the provider's order.
    stack.deliver(status).await;
    wait_count(&stack.client, EVENTS, 1).await;
    stack.deliver(receipt).await;
    // Before: another drop, its receipt first (a retry of its status came late).
    let other = |body: &str, event_id: &str| {
        edited(
            body,
            &[
                ("event_id", json!(event_id)),
                (
                    "data.drop_id",
                    json!("b2d4f6a8-0c1e-4a3b-8d5f-7e9a1c3b5d7f"),
                ),
            ],
        )
    };
    stack
        .deliver(&other(receipt, "f1e2d3c4-0001-4000-8000-000000000002"))
        .await;
    wait_count(&stack.client, EVENTS, 3).await;
    stack
        .deliver(&other(status, "f1e2d3c4-0001-4000-8000-000000000001"))
        .await;
    wait_count(&stack.client, EVENTS, 4).await;

    let link = Some("https://receipts.example.invalid/r/Zk3qP0wLx9".to_owned());
    let ready = Some(instant("2026-12-07T00:03:10Z"));
    assert_eq!(
        receipt_of(&stack, "a1c3e5f7-9b2d-4f6a-8c0e-3b5d7f9a1c4e").await,
        (
            link.clone(),
            ready,
            Some("c7e9a1b3-5d2f-4a8c-9e0b-1d3f5a7c9e2b".to_owned()),
            "success".to_owned()
        )
    );
    // The receipt (event_at 00:03:10) is newer than the status (00:02:02)
    // whichever came first: its event is the state, and the link stays.
    assert_eq!(
        receipt_of(&stack, "b2d4f6a8-0c1e-4a3b-8d5f-7e9a1c3b5d7f").await,
        (
            link,
            ready,
            Some("f1e2d3c4-0001-4000-8000-000000000002".to_owned()),
            "success".to_owned()
        )
    );
    // A receipt repeats its delivery's result: each delivery counts once.
    settled(stack.worker(), STORED, 4.0).await;
    let metrics = settled_deliveries(stack.worker(), 2.0).await;
    assert_eq!(deliveries(&metrics, "rvm", "success", "none", "0"), 2.0);
    assert_eq!(all_deliveries(&metrics), 2.0);
    let summarised = count(
        &stack.client,
        "SELECT sum(events)::bigint FROM delivery_summary_changes",
    )
    .await;
    assert_eq!(summarised, 2);
    stack.stop().await;
}
