//! What cannot be typed or stored is quarantined, and the rest of its batch
//! stored.

use std::time::Duration;

use super::helpers::*;
use chrono::{DateTime, Utc};
use corral_contract::envelope::{self, Kind};
use corral_testkit::{
    apps::RunningWorker,
    fixtures::{self},
    wait,
};
use uuid::Uuid;

/// A webhook the worker cannot type, and the exact error it must be kept with.
struct Untypeable {
    routing_key: &'static str,
    body: Vec<u8>,
    /// The error text, or its beginning when it ends with `…`.
    error: &'static str,
}

fn untypeable() -> Vec<Untypeable> {
    let case = |routing_key, body: &[u8], error| Untypeable {
        routing_key,
        body: body.to_vec(),
        error,
    };
    vec![
        case(
            Kind::Sms.routing_key(),
            br#"{"phone_number":"+15552224444","attempt_date":"2019-03-17T21:10:26.000Z","status":"success"}"#,
            "`drop_id` is missing",
        ),
        case(
            Kind::Sms.routing_key(),
            br#"{"drop_id":"5c8eb7940a057a4ab0823e1b","attempt_date":"2019-03-17T21:10:26.000Z","status":1}"#,
            "`status` must be a string, found a number",
        ),
        case(
            Kind::Rvm.routing_key(),
            br#"{"drop_id":"5c8eb7940a057a4ab0823e1c","attempt_date":"17/03/2019 21:10","status":"success"}"#,
            r#"`attempt_date` is not an RFC 3339 date-time in years 1-9999: "17/03/2019 21:10""#,
        ),
        case(
            Kind::Sms.routing_key(),
            br#"{"drop_id":"5c8eb7940a057a4ab0823e1d","attempt_date":"2019-03-17T21:10:26.000Z","status":"success","product_cost":"ten cents"}"#,
            r#"`product_cost` is not an exact decimal amount: "ten cents""#,
        ),
        case(
            Kind::Sms.routing_key(),
            br#"{"drop_id":"5c8eb7940a057a4ab0823e1e","attempt_date":"2019-03-17T21:10:26.000Z","status":"success","compliance_fee":true}"#,
            "`compliance_fee` must be a number, found a boolean",
        ),
        case(
            Kind::Sms.routing_key(),
            br#"[{"drop_id":"5c8eb7940a057a4ab0823e1f"}]"#,
            "body is JSON but not an object",
        ),
        case(
            Kind::Sms.routing_key(),
            br#"{"drop_id":"5c8eb7940a057a4ab0823e20","status":"#,
            "body is not valid JSON: EOF while parsing a value…",
        ),
        case(
            "dropcowboy.fax",
            fixtures::SMS_SUCCESS.as_bytes(),
            r#"unknown routing key "dropcowboy.fax""#,
        ),
        case(
            Kind::Sms.routing_key(),
            br#"{"drop_id":"5c8eb7940a057a4ab0823e21","attempt_date":"2019-03-17T21:10:26.000Z","status":"success","foreign_id":"order\u0000-1"}"#,
            "a string contains U+0000, which PostgreSQL cannot store",
        ),
        case(
            Kind::Sms.routing_key(),
            b"{\"drop_id\":\"5c8eb7940a057a4ab0823e22\",\"foreign_id\":\"\xff\xfe\"}",
            "body is not UTF-8: invalid utf-8 sequence…",
        ),
    ]
}

#[tokio::test]
async fn untypeable_payloads_are_quarantined_byte_for_byte_and_their_batch_stored() {
    let stack = worker_stack().start().await;
    let (broker, db) = (stack.broker(), stack.db());
    let cases = untypeable();
    // Valid webhooks first, between and last; one batch holds them all.
    let mut good = vec![send(broker, Kind::Sms.routing_key(), valid("").1).await];
    let mut bad = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        bad.push(send(broker, case.routing_key, &case.body).await);
        if i == cases.len() / 2 {
            good.push(send(broker, Kind::Rvm.routing_key(), valid("Spam detected").1).await);
        }
    }
    good.push(send(broker, Kind::Sms.routing_key(), valid("Message too long").1).await);
    let batch = (good.len() + bad.len()) as u32;
    let worker = RunningWorker::start(batches_of(batch, stack.worker_config())).await;
    let client = db.client().await;
    wait_count(&client, QUARANTINE, cases.len() as i64).await;
    wait_count(&client, EVENTS, good.len() as i64).await;

    for (sent, case) in bad.iter().zip(&cases) {
        assert_quarantined(&client, sent, case.error).await;
    }
    assert_each_stored_once(&client, &good).await;
    let metrics = settled(&worker, QUARANTINED, cases.len() as f64).await;
    assert_eq!(metrics.get(QUARANTINED), cases.len() as f64);
    assert_eq!(metrics.get(STORED), good.len() as f64);
    assert_eq!(
        metrics.get("corral_worker_batch_size_count"),
        1.0,
        "everything was one batch"
    );

    // The same untypeable body again is kept once and counted as a duplicate.
    worker.stop().await.expect("the worker stops cleanly");
    let worker = RunningWorker::start(stack.worker_config()).await;
    let before = worker.metrics().await;
    send(broker, cases[0].routing_key, &cases[0].body).await;
    wait_metric(&worker, &before, DUPLICATE, 1.0).await;
    assert_eq!(count(&client, QUARANTINE).await, cases.len() as i64);
    worker.stop().await.expect("the worker stops cleanly");
}

/// A payload that types fine but that PostgreSQL refuses (an extra field
/// whose JSON number overflows `numeric`, so `payload::jsonb` fails with
/// 22003): the batch is split until that one is alone, it is quarantined with
/// PostgreSQL's own error, and every other message of the batch is stored.
#[tokio::test]
async fn rows_postgres_refuses_are_split_out_and_quarantined() {
    let stack = worker_stack().start().await;
    let (broker, db) = (stack.broker(), stack.db());
    let refused = |drop_id: &str| {
        let body = fixtures::delivery_status(drop_id, "2026-11-27T05:24:31.000Z", "", "order-7");
        format!(
            r#"{}, "carrier_score": 1e200000}}"#,
            body.trim_end_matches('}')
        )
    };
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for i in 0..8 {
        if i == 2 || i == 6 {
            bad.push(
                send(
                    broker,
                    Kind::Sms.routing_key(),
                    refused(&format!("bbbbbbbbbbbbbbbbbbbbbb0{i}")),
                )
                .await,
            );
        } else {
            good.push(send(broker, Kind::Sms.routing_key(), valid("Known Litigator").1).await);
        }
    }
    let worker = RunningWorker::start(batches_of(8, stack.worker_config())).await;
    let client = db.client().await;
    wait_count(&client, QUARANTINE, 2).await;
    wait_count(&client, EVENTS, 6).await;
    for sent in &bad {
        assert_quarantined(
            &client,
            sent,
            "PostgreSQL refused the typed row: value overflows numeric format",
        )
        .await;
    }
    assert_each_stored_once(&client, &good).await;
    assert_eq!(count(&client, "SELECT count(*) FROM deliveries").await, 6);
    let metrics = settled(&worker, QUARANTINED, 2.0).await;
    assert_eq!(metrics.get(STORED), 6.0);
    assert_eq!(metrics.get(QUARANTINED), 2.0);
    assert!(metrics.get(DB_DATA) >= 1.0, "the split is counted");
    assert_eq!(
        metrics.get(DB_TRANSIENT),
        0.0,
        "a data error is not retried"
    );
    worker.stop().await.expect("the worker stops cleanly");
}

/// A routing key with a NUL byte (AMQP allows it, PostgreSQL text does not)
/// is quarantined with the key escaped; before the fix its batch failed as
/// if the database were down and was retried forever, blocking the queue.
#[tokio::test]
async fn a_routing_key_postgres_cannot_store_does_not_block_the_queue() {
    let stack = worker_stack().start().await;
    let (broker, db) = (stack.broker(), stack.db());
    let odd = send(broker, "dropcowboy.sms\0x", fixtures::SMS_SUCCESS).await;
    let good = send(broker, Kind::Sms.routing_key(), valid("").1).await;
    let worker = RunningWorker::start(batches_of(2, stack.worker_config())).await;
    let client = db.client().await;
    wait_count(&client, QUARANTINE, 1).await;
    assert_each_stored_once(&client, &[good]).await;
    let row = client
        .query_one(
            "SELECT body, error, routing_key FROM quarantined_webhooks WHERE message_id = $1",
            &[&odd.id],
        )
        .await
        .expect("the quarantined row");
    assert_eq!(row.get::<_, Vec<u8>>(0), odd.body);
    assert_eq!(
        row.get::<_, String>(1),
        r#"unknown routing key "dropcowboy.sms\0x""#
    );
    assert_eq!(
        row.get::<_, Option<String>>(2).as_deref(),
        Some(r"dropcowboy.sms\u0000x")
    );
    let metrics = settled(&worker, QUARANTINED, 1.0).await;
    assert_eq!(metrics.get(STORED), 1.0);
    assert_eq!(metrics.get(DB_TRANSIENT), 0.0);
    worker.stop().await.expect("the worker stops cleanly");
}

/// An envelope-2 body of one entry whose `id` and `kind` are the JSON
/// strings of `id` and `kind` (so U+0000 travels as `\u0000`), with a valid
/// webhook as its body.
fn envelope_entry(id: &str, kind: &str) -> Vec<u8> {
    let text = |value: &str| serde_json::to_string(value).expect("a JSON string");
    format!(
        r#"{{"webhooks":[{{"id":{},"received_at":"2026-11-28T14:00:00.000001Z","kind":{},"body":{}}}]}}"#,
        text(id),
        text(kind),
        valid("").1
    )
    .into_bytes()
}

/// An envelope-2 message whose entry's `kind` (or `id`) holds U+0000, which
/// serde's error quotes: the message is quarantined whole with the NUL
/// written `\u0000`, and the valid webhook published after it is stored.
/// Before the fix PostgreSQL refused the quarantine row's error, the whole
/// batch failed as if the database were down and was retried forever.
#[tokio::test]
async fn a_nul_in_an_entry_s_kind_or_id_does_not_hold_the_webhooks_behind_it() {
    let stack = worker_stack().start().await;
    let (broker, db) = (stack.broker(), stack.db());
    let at = now_micros();
    let poison = [
        envelope_entry(&Uuid::now_v7().to_string(), "\0"),
        envelope_entry("0190\0", "sms"),
    ];
    let mut ids = Vec::new();
    for body in &poison {
        let id = Uuid::now_v7();
        broker
            .publish(
                Kind::Sms.routing_key(),
                body,
                corral_runtime::amqp::properties(&envelope::Metadata::batch(id, at, 1)),
            )
            .await;
        ids.push(id);
    }
    let good = send_batch(broker, &[(Kind::Rvm, valid("").1.as_bytes())]).await;
    let worker = RunningWorker::start(stack.worker_config()).await;
    let client = db.client().await;
    wait::until_true(
        "both poison messages quarantined and the webhook stored",
        Duration::from_secs(10),
        || async { count(&client, QUARANTINE).await == 2 && count(&client, EVENTS).await == 1 },
    )
    .await;
    assert_each_stored_once(&client, &good).await;
    let errors = [
        "the AMQP message is quarantined whole, its webhooks unread: not a corral envelope-2 body: \
         unknown variant `\\u0000`, expected one of `sms`, `rvm`, `event` at line 1 column 117",
        "the AMQP message is quarantined whole, its webhooks unread: not a corral envelope-2 body: \
         UUID parsing failed: invalid character: found `\\u0000` at 4 at line 1 column 31",
    ];
    for ((id, body), error) in ids.iter().zip(&poison).zip(errors) {
        let row = client
            .query_one(
                "SELECT body, error, routing_key, received_at FROM quarantined_webhooks
                 WHERE message_id = $1",
                &[id],
            )
            .await
            .expect("the poison message's row");
        assert_eq!(&row.get::<_, Vec<u8>>(0), body, "byte for byte");
        assert_eq!(row.get::<_, String>(1), error);
        assert_eq!(
            row.get::<_, Option<String>>(2).as_deref(),
            Some(Kind::Sms.routing_key())
        );
        // A batch message's `received_at` is its `timestamp`, in seconds.
        assert_eq!(
            row.get::<_, Option<DateTime<Utc>>>(3),
            DateTime::from_timestamp(at.timestamp(), 0)
        );
    }
    let metrics = settled(&worker, STORED, 1.0).await;
    assert_eq!(metrics.get(QUARANTINED), 2.0);
    assert_eq!(metrics.get(DB_TRANSIENT), 0.0, "nothing was retried");
    worker.stop().await.expect("the worker stops cleanly");
}

/// A quarantine row PostgreSQL refuses (here a test's CHECK on its error)
/// is split out of its batch like a refused event, and kept in its last
/// resort form: the body, its envelope, and the reason without the values
/// PostgreSQL refused, saying so. The other quarantine row and the valid
/// webhooks of the same batch are stored as usual.
#[tokio::test]
async fn a_quarantine_row_postgresql_refuses_is_kept_in_its_last_resort_form() {
    let stack = worker_stack().migrated().start().await;
    let (broker, db) = (stack.broker(), stack.db());
    let client = db.client().await;
    client
        .batch_execute(
            "ALTER TABLE quarantined_webhooks
             ADD CONSTRAINT test_refuse CHECK (error NOT LIKE '%refuse-me%')",
        )
        .await
        .expect("adding the test's constraint");
    let good = vec![
        send(broker, Kind::Sms.routing_key(), valid("").1).await,
        send(broker, Kind::Rvm.routing_key(), valid("Opted out").1).await,
    ];
    let refused = send(
        broker,
        Kind::Sms.routing_key(),
        r#"{"drop_id":"d-refused","attempt_date":"refuse-me","status":"success"}"#,
    )
    .await;
    let missing = send(
        broker,
        Kind::Rvm.routing_key(),
        r#"{"attempt_date":"2026-11-27T05:24:31Z","status":"success"}"#,
    )
    .await;
    let worker = RunningWorker::start(batches_of(4, stack.worker_config())).await;
    wait_count(&client, QUARANTINE, 2).await;
    wait_count(&client, EVENTS, 2).await;
    assert_each_stored_once(&client, &good).await;
    assert_quarantined(
        &client,
        &refused,
        "`attempt_date` is not an RFC 3339 date-time in years 1-9999 [its full reason \
         could not be stored: PostgreSQL refused it, SQLSTATE 23514: new row for relation \
         \"quarantined_webhooks\" violates check constraint \"test_refuse\"]",
    )
    .await;
    assert_quarantined(&client, &missing, "`drop_id` is missing").await;
    let metrics = settled(&worker, QUARANTINED, 2.0).await;
    assert_eq!(metrics.get(STORED), 2.0);
    assert_eq!(
        metrics.get("corral_worker_batch_size_count"),
        1.0,
        "one batch, committed once"
    );
    assert_eq!(metrics.get(DB_TRANSIENT), 0.0, "nothing was retried");
    worker.stop().await.expect("the worker stops cleanly");
}
