//! Samples and every documented failure reason become exact rows.

use chrono::{DateTime, Utc};
use corral_contract::envelope::Kind;
use corral_testkit::{
    apps::RunningWorker,
    fixtures::{self, FAILURE_REASONS},
};

use super::helpers::*;

#[tokio::test]
async fn samples_and_every_failure_reason_become_exact_rows() {
    let stack = worker_stack().start().await;
    let (broker, db) = (stack.broker(), stack.db());
    let worker = RunningWorker::start(stack.worker_config()).await;
    let before = worker.metrics().await;

    let success = send(broker, Kind::Sms.routing_key(), fixtures::SMS_SUCCESS).await;
    let failure = send(broker, Kind::Sms.routing_key(), fixtures::SMS_FAILURE).await;
    let mut cases = vec![
        Typed::expected(
            &success,
            "5c8eb7940a057a4ab0823e1a",
            "2019-03-17T21:10:26Z",
            "success",
            "",
            false,
            "0.099",
            "order-1842-attempt-1",
        ),
        Typed::expected(
            &failure,
            "5c8ee427a8d9ef4758bfaca5",
            "2019-03-18T00:20:26Z",
            "failure",
            "Invalid message",
            false,
            "0",
            "order-1843-attempt-1",
        ),
    ];
    let mut sent = vec![success, failure];
    // One event per documented reason, alternating kinds, with dates in other
    // offsets and with fractions, which must land as the same instants.
    let dates = [
        ("2026-11-27T07:24:31.250+02:00", "2026-11-27T05:24:31.250Z"),
        ("2026-11-27T05:24:31.000Z", "2026-11-27T05:24:31Z"),
        ("2026-11-26T23:54:31.999-05:30", "2026-11-27T05:24:31.999Z"),
    ];
    for (i, reason) in FAILURE_REASONS.iter().enumerate() {
        let drop_id = format!("5c8eb7940a057a4ab08230{i:02}");
        let foreign_id = format!("order-{i}");
        let (sent_date, instant) = dates[i % dates.len()];
        let body = fixtures::delivery_status(&drop_id, sent_date, reason, &foreign_id);
        let routing_key = if i.is_multiple_of(2) {
            Kind::Sms.routing_key()
        } else {
            Kind::Rvm.routing_key()
        };
        let message = send(broker, routing_key, &body).await;
        cases.push(Typed::expected(
            &message,
            &drop_id,
            instant,
            "failure",
            reason,
            *reason == "Spam detected",
            "0",
            &foreign_id,
        ));
        sent.push(message);
    }

    let client = db.client().await;
    wait_count(&client, EVENTS, cases.len() as i64).await;

    for (message, expected) in sent.iter().zip(&cases) {
        let drop_id = &expected.drop_id;
        let body = std::str::from_utf8(&message.body).expect("test bodies are UTF-8");
        let row = client
            .query_one(
                &format!(
                    "SELECT {TYPED_COLUMNS}, received_at, payload = $2::text::jsonb,
                            (payload -> 'compliance_fee')::text, stored_at IS NOT NULL, id
                     FROM delivery_events WHERE drop_id = $1"
                ),
                &[drop_id, &body],
            )
            .await
            .unwrap_or_else(|err| panic!("the event row of {drop_id}: {err}"));
        assert_eq!(
            &Typed::from_row(&row),
            expected,
            "delivery_events {drop_id}"
        );
        let received_at: DateTime<Utc> = row.get(15);
        assert_eq!(received_at, message.received_at, "received_at of {drop_id}");
        assert!(
            row.get::<_, bool>(16),
            "payload of {drop_id} differs from the body"
        );
        assert_eq!(
            row.get::<_, String>(17),
            "0.0029",
            "jsonb keeps money exact"
        );
        assert!(row.get::<_, bool>(18), "stored_at of {drop_id}");
        let id: i64 = row.get(19);

        let (state, event_id, _) = delivery(&client, drop_id).await;
        assert_eq!(&state, expected, "deliveries {drop_id}");
        assert_eq!(event_id, id, "deliveries.event_id of {drop_id}");
    }
    assert_eq!(
        count(&client, "SELECT count(*) FROM deliveries").await,
        cases.len() as i64
    );
    assert_eq!(count(&client, QUARANTINE).await, 0);
    let after = settled(&worker, STORED, before.get(STORED) + cases.len() as f64).await;
    assert_eq!(after.get(STORED) - before.get(STORED), cases.len() as f64);
    assert_eq!(after.get(DUPLICATE) - before.get(DUPLICATE), 0.0);
    worker.stop().await.expect("the worker stops cleanly");
}
