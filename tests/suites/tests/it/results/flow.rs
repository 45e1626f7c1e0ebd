//! A service bound to `<prefix>.delivery-results` receives each stored event,
//! exactly, once: the provider's samples field by field, `latest` for an
//! older event arriving after a newer one, suppressions, and nothing for a
//! duplicate webhook.

use chrono::{DateTime, Utc};
use corral_contract::{envelope::Kind, results::DeliveryResult};
use corral_testkit::{fixtures, stack::Stack, wait};
use tokio_postgres::Client;

use super::helpers::*;
use crate::worker::helpers::{self as worker, Sent, send};

fn instant(rfc3339: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(rfc3339)
        .expect("an RFC 3339 instant")
        .to_utc()
}

/// What the worker stored for `sent`: its `delivery_events.id` and `stored_at`.
async fn stored(client: &Client, sent: &Sent) -> (i64, DateTime<Utc>) {
    let row = client
        .query_one(
            "SELECT id, stored_at FROM delivery_events WHERE message_id = $1",
            &[&sent.id],
        )
        .await
        .expect("the stored event");
    (row.get(0), row.get(1))
}

/// The event expected for a fixture-shaped webhook: the values every
/// fixture shares filled in, the rest from the database and the test.
#[allow(clippy::too_many_arguments)]
async fn expected(
    client: &Client,
    sent: &Sent,
    drop_id: &str,
    attempt_date: &str,
    status: &str,
    reason: Option<&str>,
    product_cost: &str,
    foreign_id: &str,
) -> DeliveryResult {
    let (event_id, stored_at) = stored(client, sent).await;
    DeliveryResult {
        version: 1,
        id: sent.id,
        event_id,
        drop_id: drop_id.into(),
        foreign_id: Some(foreign_id.into()),
        kind: Kind::Sms,
        phone_number: Some("+15552224444".into()),
        status: status.into(),
        reason: reason.map(Into::into),
        dnc: Some(false),
        spam: Some(false),
        product_cost: Some(product_cost.into()),
        compliance_fee: Some("0.0029".into()),
        tts_fee: Some("0".into()),
        attempt_date: instant(attempt_date),
        received_at: sent.received_at,
        stored_at,
        latest: true,
        suppressions: vec![],
        new_suppressions: vec![],
        reason_code: None,
        event: None,
        provider_event_id: None,
        contact_id: None,
        proof_of_delivery_url: None,
    }
}

#[tokio::test]
async fn each_stored_event_reaches_a_bound_queue_exactly_and_once() {
    let mut stack = Stack::builder().worker(results_on).start().await;
    let (broker, worker, client) = (stack.broker(), stack.worker(), stack.client().await);
    let queue = broker.bind_results("service").await;
    let sms = Kind::Sms.routing_key();

    // The provider's two samples, field by field.
    let success = send(broker, sms, fixtures::SMS_SUCCESS).await;
    let failure = send(broker, sms, fixtures::SMS_FAILURE).await;
    let mut got = take(broker, &queue, 2).await;
    got.sort_by_key(|event| event.event_id);
    let mut want = vec![
        expected(
            &client,
            &success,
            "5c8eb7940a057a4ab0823e1a",
            "2019-03-17T21:10:26Z",
            "success",
            None,
            "0.099",
            "order-1842-attempt-1",
        )
        .await,
        expected(
            &client,
            &failure,
            "5c8ee427a8d9ef4758bfaca5",
            "2019-03-18T00:20:26Z",
            "failure",
            Some("Invalid message"),
            "0",
            "order-1843-attempt-1",
        )
        .await,
    ];
    // Stored in one batch, ordered by fingerprint: compare in event order.
    want.sort_by_key(|event| event.event_id);
    assert_eq!(got, want);

    // The same webhook again (a new id, the same fingerprint) is a duplicate
    // and no event; a marker sent after it is the only one that follows. Its
    // outbox row would come after a duplicate's, so it is published after.
    let again = send(broker, sms, fixtures::SMS_SUCCESS).await;
    worker::settled(worker, worker::DUPLICATE, 1.0).await;
    let (marker_drop, marker) = worker::valid("");
    let marker = send(broker, sms, marker).await;
    let got = take(broker, &queue, 1).await;
    assert_eq!(
        got[0].id, marker.id,
        "only the marker follows the duplicate"
    );
    assert_eq!(got[0].drop_id, marker_drop);
    assert_ne!(got[0].id, again.id);

    // A newer attempt, then an older one for the same send arriving late:
    // only the first became the drop's state.
    let drop_id = "results-late-0001";
    let newer = fixtures::delivery_status(drop_id, "2026-11-27T06:00:00.000Z", "", "late-1");
    let older = fixtures::delivery_status(
        drop_id,
        "2026-11-27T05:00:00.000Z",
        "Network error",
        "late-1",
    );
    let newer = send(broker, sms, newer).await;
    take(broker, &queue, 1).await;
    let older = send(broker, sms, older).await;
    let got = take(broker, &queue, 1).await;
    assert_eq!((got[0].id, got[0].latest), (older.id, false));
    assert_eq!(got[0].reason.as_deref(), Some("Network error"));
    let state: uuid::Uuid = client
        .query_one(
            "SELECT message_id FROM deliveries WHERE drop_id = $1",
            &[&drop_id],
        )
        .await
        .expect("the drop's state")
        .get(0);
    assert_eq!(state, newer.id);

    // An opt-out suppresses the number: new the first time, known the next.
    let first = fixtures::delivery_status(
        "results-opt-1",
        "2026-11-27T07:00:00.000Z",
        "Opted out",
        "o",
    );
    let second = fixtures::delivery_status(
        "results-opt-2",
        "2026-11-27T08:00:00.000Z",
        "Opted out",
        "o",
    );
    send(broker, sms, first).await;
    let got = take(broker, &queue, 1).await;
    assert_eq!(got[0].suppressions, ["opted_out"]);
    assert_eq!(got[0].new_suppressions, ["opted_out"]);
    send(broker, sms, second).await;
    let got = take(broker, &queue, 1).await;
    assert_eq!(got[0].suppressions, ["opted_out"]);
    assert!(got[0].new_suppressions.is_empty(), "{got:?}");

    // Seven events stored, seven published and confirmed; the outbox empties.
    worker::wait_count(&client, OUTBOX, 0).await;
    assert_eq!(worker::count(&client, worker::EVENTS).await, 7);
    wait::until_true("the outbox to be measured empty", WAIT, || async {
        let metrics = worker.metrics().await;
        metrics.get(PUBLISHED) == 7.0 && metrics.get(PENDING) == 0.0 && metrics.get(OLDEST) == 0.0
    })
    .await;
    assert!(broker.drain(&queue).await.is_empty(), "no event twice");
    stack.stop_worker().await.expect("the worker stops cleanly");
}
