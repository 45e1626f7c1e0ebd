//! `corral-worker quarantine`: re-processing quarantined webhooks.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use corral_contract::envelope::{self, Kind, batch::Packing};
use corral_testkit::{
    apps::{RunningIngress, RunningWorker},
    config,
    database::TestDatabase,
    fixtures,
    stack::Stack,
    wait,
};
use corral_worker::{
    commands::{self, quarantine::QuarantineCommand},
    ops::{self, ReprocessOptions, Verdict},
    source::unpack,
};
use uuid::Uuid;

use super::helpers::WAIT;

/// Inserts a quarantine row as an older worker would have left it.
async fn quarantine(
    client: &tokio_postgres::Client,
    body: &str,
    routing_key: &str,
    message_id: Option<Uuid>,
    error: &str,
) -> i64 {
    client
        .query_one(
            "INSERT INTO quarantined_webhooks (body_sha256, message_id, routing_key, body, error, received_at)
             VALUES (sha256($1), $2, $3, $1, $4, now() - interval '1 day') RETURNING id",
            &[&body.as_bytes(), &message_id, &routing_key, &error],
        )
        .await
        .unwrap()
        .get(0)
}

/// A check PostgreSQL refuses a "Spam detected" row with: a webhook that
/// types but cannot be stored, until the test drops `test_no_spam`.
async fn forbid_spam(client: &tokio_postgres::Client) {
    client
        .batch_execute(
            "ALTER TABLE delivery_events ADD CONSTRAINT test_no_spam CHECK (reason IS DISTINCT FROM 'Spam detected')",
        )
        .await
        .unwrap();
}

async fn count(client: &tokio_postgres::Client, table: &str) -> i64 {
    client
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn reprocessing_stores_what_types_now_and_keeps_what_does_not() {
    let db = TestDatabase::migrated().await;
    let client = db.client().await;
    let config = config::worker(&db.url, "unused");

    // Typeable now (a fix since): the same webhook twice, formatted differently.
    let typeable = fixtures::SMS_FAILURE.trim().to_owned();
    let reformatted = serde_json::to_string_pretty(
        &serde_json::from_str::<serde_json::Value>(&typeable).unwrap(),
    )
    .unwrap();
    let message_id = Uuid::now_v7();
    let fixed = quarantine(
        &client,
        &typeable,
        envelope::Kind::Sms.routing_key(),
        Some(message_id),
        "an old bug",
    )
    .await;
    let fixed_twin = quarantine(
        &client,
        &reformatted,
        envelope::Kind::Sms.routing_key(),
        None,
        "an old bug",
    )
    .await;
    // Still not typeable.
    let broken = quarantine(
        &client,
        r#"{"status":"success"}"#,
        envelope::Kind::Rvm.routing_key(),
        None,
        "an old bug",
    )
    .await;

    let targeted = ops::reprocess_quarantined(
        &config,
        &ReprocessOptions {
            dry_run: true,
            ids: vec![broken],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(targeted.rows.len(), 1, "--id takes only that row");

    let dry = ops::reprocess_quarantined(
        &config,
        &ReprocessOptions {
            dry_run: true,
            batch: 2,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!((dry.stored, dry.duplicate, dry.still_failing()), (1, 1, 1));
    assert_eq!(
        count(&client, "quarantined_webhooks").await,
        3,
        "dry run changed nothing"
    );
    assert_eq!(count(&client, "delivery_events").await, 0);
    assert_eq!(count(&client, "deliveries").await, 0);

    let report = ops::reprocess_quarantined(&config, &ReprocessOptions::default())
        .await
        .unwrap();
    assert_eq!((report.stored, report.duplicate), (1, 1));
    let verdicts: BTreeMap<i64, Verdict> = report.rows.into_iter().collect();
    assert_eq!(verdicts[&fixed], Verdict::Resolved);
    assert_eq!(verdicts[&fixed_twin], Verdict::Resolved);
    assert!(
        matches!(&verdicts[&broken], Verdict::StillFailing(error) if error.contains("drop_id")),
        "{verdicts:?}"
    );

    // Stored exactly as the worker stores it.
    let row = client
        .query_one(
            "SELECT e.kind, e.drop_id, e.status, e.reason, e.product_cost::text, e.message_id, d.drop_id AS latest
             FROM delivery_events e JOIN deliveries d ON d.event_id = e.id",
            &[],
        )
        .await
        .unwrap();
    let typed = corral_payload::parse(typeable.as_bytes()).unwrap();
    assert_eq!(row.get::<_, String>("kind"), "sms");
    assert_eq!(row.get::<_, String>("drop_id"), typed.status.drop_id);
    assert_eq!(row.get::<_, String>("latest"), typed.status.drop_id);
    assert_eq!(row.get::<_, String>("status"), typed.status.status);
    assert_eq!(
        row.get::<_, Option<String>>("product_cost"),
        typed.status.product_cost.map(|cost| cost.to_string())
    );
    assert_eq!(count(&client, "delivery_events").await, 1);
    // The row that still fails stays, with today's error.
    let left = client
        .query_one("SELECT id, error FROM quarantined_webhooks", &[])
        .await
        .unwrap();
    assert_eq!(left.get::<_, i64>("id"), broken);
    let error: String = left.get("error");
    assert!(error.contains("drop_id"), "{error}");

    // Running again changes nothing.
    let again = ops::reprocess_quarantined(&config, &ReprocessOptions::default())
        .await
        .unwrap();
    assert_eq!((again.resolved(), again.still_failing()), (0, 1));
    assert_eq!(count(&client, "delivery_events").await, 1);

    // The command's own output.
    let mut out = Vec::new();
    commands::quarantine::run(
        QuarantineCommand::List {
            list: commands::output::ListArgs::first(10),
        },
        &config,
        &mut out,
    )
    .await
    .unwrap();
    let out = String::from_utf8(out).unwrap();
    assert!(
        out.contains(&format!(
            "{broken}\t-\t{}",
            envelope::Kind::Rvm.routing_key()
        )),
        "{out}"
    );
    assert!(out.contains("# listed 1 row(s)"), "{out}");
}

/// Signed events a worker of schema V5 quarantined ("does not store them
/// yet") are stored by reprocessing, as a worker stores them now: a status
/// as a result, another event type kept whole, under the ids they had; one
/// that still cannot be typed stays, with today's reason.
#[tokio::test]
async fn signed_events_an_earlier_worker_quarantined_are_stored_by_reprocessing() {
    let db = TestDatabase::migrated().await;
    let client = db.client().await;
    let config = config::worker(&db.url, "unused");
    let old = "a signed event (kind event): this corral-worker does not store them yet; \
               `corral-worker quarantine reprocess` once one does";
    let event = Kind::Event.routing_key();
    let (status_id, other_id) = (Uuid::now_v7(), Uuid::now_v7());
    let other = fixtures::event_body("0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0");
    let without_id = r#"{"event":"contact.rvm.status","event_at":1796601722000,"data":{}}"#;
    quarantine(
        &client,
        fixtures::V2_WEBHOOK_SMS_STATUS,
        event,
        Some(status_id),
        old,
    )
    .await;
    quarantine(&client, &other, event, Some(other_id), old).await;
    let broken = quarantine(&client, without_id, event, None, old).await;

    let report = ops::reprocess_quarantined(&config, &ReprocessOptions::default())
        .await
        .unwrap();
    assert_eq!((report.stored, report.still_failing()), (2, 1));
    let stored = client
        .query_one(
            "SELECT event_id, reason_code, message_id FROM delivery_events",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (
            stored.get::<_, Option<String>>(0).as_deref(),
            stored.get::<_, Option<i32>>(1),
            stored.get::<_, Uuid>(2),
        ),
        (
            Some("0b6f3c1e-5d2a-4e8f-9c7b-3a1d5e9f2c60"),
            Some(4016),
            status_id
        )
    );
    let kept = client
        .query_one("SELECT event, message_id FROM provider_events", &[])
        .await
        .unwrap();
    assert_eq!(
        (kept.get::<_, String>(0), kept.get::<_, Uuid>(1)),
        ("contact.msg.received".to_owned(), other_id)
    );
    let left = client
        .query_one("SELECT id, error FROM quarantined_webhooks", &[])
        .await
        .unwrap();
    assert_eq!(
        (left.get::<_, i64>(0), left.get::<_, String>(1)),
        (broken, "`event_id` is missing".to_owned())
    );
}

#[tokio::test]
async fn a_row_postgresql_refuses_stays_quarantined_and_none_of_it_is_stored() {
    // A row that types now but that PostgreSQL refuses stays quarantined and
    // nothing of it is stored: the same split as the worker's.
    let db = TestDatabase::migrated().await;
    let client = db.client().await;
    forbid_spam(&client).await;
    let config = config::worker(&db.url, "unused");
    let refused =
        fixtures::delivery_status("d-refused", "2026-11-27T05:24:31Z", "Spam detected", "f-1");
    let accepted = fixtures::delivery_status("d-accepted", "2026-11-27T05:24:31Z", "", "f-2");
    let refused_id = quarantine(
        &client,
        &refused,
        envelope::Kind::Sms.routing_key(),
        None,
        "old",
    )
    .await;
    let accepted_id = quarantine(
        &client,
        &accepted,
        envelope::Kind::Sms.routing_key(),
        None,
        "old",
    )
    .await;

    let report = ops::reprocess_quarantined(&config, &ReprocessOptions::default())
        .await
        .unwrap();
    let verdicts: BTreeMap<i64, Verdict> = report.rows.into_iter().collect();
    assert_eq!(verdicts[&accepted_id], Verdict::Resolved);
    assert!(
        matches!(&verdicts[&refused_id], Verdict::StillFailing(error) if error.contains("test_no_spam")),
        "{verdicts:?}"
    );
    let stored: Vec<String> = client
        .query("SELECT drop_id FROM delivery_events", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(stored, ["d-accepted"]);
    let left: Vec<i64> = client
        .query("SELECT id FROM quarantined_webhooks", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(left, [refused_id]);
}

/// Each webhook of an envelope-2 message is its own quarantine row, so it is
/// re-processed on its own; a message the worker could not unpack is one
/// row that re-typing cannot help, and it keeps the reason it was kept for.
#[tokio::test]
async fn webhooks_of_a_batch_are_reprocessed_one_by_one_and_a_whole_message_keeps_its_reason() {
    let stack = Stack::builder().migrated().start().await;
    let (broker, db) = (stack.broker(), stack.db());
    let client = db.client().await;
    forbid_spam(&client).await;
    let accepted = fixtures::delivery_status("d-batch-ok", "2026-11-27T05:24:31Z", "", "f-1");
    let refused = fixtures::delivery_status(
        "d-batch-spam",
        "2026-11-27T05:24:31Z",
        "Spam detected",
        "f-2",
    );
    let first = DateTime::from_timestamp_micros(Utc::now().timestamp_micros()).unwrap();
    let packing = [
        Packing {
            id: Uuid::now_v7(),
            received_at: first,
            kind: Kind::Sms,
            body: accepted.as_bytes(),
        },
        Packing {
            id: Uuid::now_v7(),
            received_at: first + chrono::Duration::microseconds(1),
            kind: Kind::Rvm,
            body: refused.as_bytes(),
        },
    ];
    broker.publish_batch(&packing).await;
    let unreadable_id = Uuid::now_v7();
    broker
        .publish(
            envelope::MIXED_ROUTING_KEY,
            br#"{"webhooks":42}"#,
            corral_runtime::amqp::properties(&envelope::Metadata::batch(unreadable_id, first, 1)),
        )
        .await;
    let worker = RunningWorker::start(stack.worker_config()).await;
    wait::until_true("two quarantined rows and one stored", WAIT, || async {
        count(&client, "quarantined_webhooks").await == 2
            && count(&client, "delivery_events").await == 1
    })
    .await;
    worker.stop().await.unwrap();

    let row = client
        .query_one(
            "SELECT id, routing_key, body, received_at FROM quarantined_webhooks WHERE message_id = $1",
            &[&packing[1].id],
        )
        .await
        .expect("the refused webhook's own row");
    let webhook_row: i64 = row.get(0);
    assert_eq!(
        row.get::<_, Option<String>>(1).as_deref(),
        Some(Kind::Rvm.routing_key())
    );
    assert_eq!(row.get::<_, Vec<u8>>(2), refused.as_bytes());
    assert_eq!(
        row.get::<_, Option<DateTime<Utc>>>(3),
        Some(packing[1].received_at)
    );
    let whole = client
        .query_one(
            "SELECT id, error FROM quarantined_webhooks WHERE message_id = $1",
            &[&unreadable_id],
        )
        .await
        .expect("the unreadable message's row");
    let whole_row: i64 = whole.get(0);
    let reason: String = whole.get(1);
    assert!(reason.starts_with(unpack::WHOLE_MESSAGE), "{reason}");

    client
        .batch_execute("ALTER TABLE delivery_events DROP CONSTRAINT test_no_spam")
        .await
        .unwrap();
    let report =
        ops::reprocess_quarantined(&config::worker(&db.url, "unused"), &Default::default())
            .await
            .unwrap();
    let verdicts: BTreeMap<i64, Verdict> = report.rows.into_iter().collect();
    assert_eq!(verdicts[&webhook_row], Verdict::Resolved);
    assert_eq!(verdicts[&whole_row], Verdict::StillFailing(reason.clone()));
    let stored = client
        .query_one(
            "SELECT kind, received_at FROM delivery_events WHERE message_id = $1",
            &[&packing[1].id],
        )
        .await
        .expect("stored with its own id");
    assert_eq!(stored.get::<_, String>(0), "rvm");
    assert_eq!(stored.get::<_, DateTime<Utc>>(1), packing[1].received_at);
    let left = client
        .query_one("SELECT id, error FROM quarantined_webhooks", &[])
        .await
        .unwrap();
    assert_eq!(left.get::<_, i64>(0), whole_row);
    assert_eq!(left.get::<_, String>(1), reason, "its reason is kept");
}

/// Ingress upgraded before the workers: a worker older than envelope 2 took
/// each message for one webhook and quarantined it as one. Nothing tells
/// such a row from a body a client posted in that shape, so a routine
/// re-processing types it as one webhook and says why it does not unpack it;
/// the operator names the rows (`--as-messages --id`), and only then is each
/// unpacked and each webhook stored with its own id, time and kind. A
/// message with a webhook that still fails stays whole, saying which, now a
/// whole message, and leaves once that one stores too.
#[tokio::test]
async fn a_batch_an_older_worker_took_for_one_webhook_is_unpacked_only_when_the_operator_says_so() {
    let db = TestDatabase::migrated().await;
    let client = db.client().await;
    forbid_spam(&client).await;
    let at = DateTime::from_timestamp_micros(Utc::now().timestamp_micros()).unwrap();
    let bodies = [
        fixtures::delivery_status("d-old-1", "2026-11-27T05:24:31Z", "", "f-1"),
        fixtures::delivery_status("d-old-2", "2026-11-27T05:24:32Z", "", "f-2"),
        fixtures::delivery_status("d-old-3", "2026-11-27T05:24:33Z", "", "f-3"),
        fixtures::delivery_status("d-old-4", "2026-11-27T05:24:34Z", "Spam detected", "f-4"),
    ];
    let packing: Vec<Packing> = bodies
        .iter()
        .enumerate()
        .map(|(i, body)| Packing {
            id: Uuid::now_v7(),
            received_at: at + chrono::Duration::microseconds(i as i64),
            kind: if i % 2 == 0 { Kind::Sms } else { Kind::Rvm },
            body: body.as_bytes(),
        })
        .collect();
    let message = |webhooks: &[Packing]| {
        let mut body = Vec::new();
        envelope::batch::encode(webhooks.iter().copied(), &mut body);
        String::from_utf8(body).unwrap()
    };
    let old_error = "`drop_id` is missing";
    let clean = quarantine(
        &client,
        &message(&packing[..2]),
        "dropcowboy.sms",
        None,
        old_error,
    )
    .await;
    let spam = quarantine(
        &client,
        &message(&packing[2..]),
        "dropcowboy.sms",
        None,
        old_error,
    )
    .await;
    let worker_config = config::worker(&db.url, "unused");

    let routine = ops::reprocess_quarantined(&worker_config, &Default::default())
        .await
        .unwrap();
    assert_eq!((routine.resolved(), routine.stored), (0, 0));
    for (_, verdict) in &routine.rows {
        assert!(
            matches!(verdict, Verdict::StillFailing(why)
                if why.starts_with("`drop_id` is missing; the body is shaped like a corral envelope-2 message")),
            "{verdict:?}"
        );
    }
    assert_eq!(count(&client, "delivery_events").await, 0);
    let unnamed = ops::reprocess_quarantined(
        &worker_config,
        &ReprocessOptions {
            as_messages: true,
            ..Default::default()
        },
    )
    .await;
    assert!(
        matches!(&unnamed, Err(ops::OpsError::Usage(why)) if why.contains("--id")),
        "{unnamed:?}"
    );

    let named = ReprocessOptions {
        as_messages: true,
        ids: vec![clean, spam],
        ..Default::default()
    };
    let report = ops::reprocess_quarantined(&worker_config, &named)
        .await
        .unwrap();
    let verdicts: BTreeMap<i64, Verdict> = report.rows.iter().cloned().collect();
    assert_eq!(verdicts[&clean], Verdict::Resolved);
    let Verdict::StillFailing(why) = &verdicts[&spam] else {
        panic!("the message with a spam webhook left the quarantine: {verdicts:?}");
    };
    assert!(
        why.starts_with(
            "the AMQP message is quarantined whole; webhook 1 of it still fails: \
             PostgreSQL refused the typed row: "
        ),
        "{why}"
    );
    assert_eq!((report.stored, report.duplicate), (3, 0));
    assert_eq!((report.resolved(), report.still_failing()), (1, 1));
    for webhook in &packing[..3] {
        let row = client
            .query_one(
                "SELECT kind, received_at FROM delivery_events WHERE message_id = $1",
                &[&webhook.id],
            )
            .await
            .expect("stored with its own id");
        assert_eq!(row.get::<_, String>(0), webhook.kind.as_str());
        assert_eq!(row.get::<_, DateTime<Utc>>(1), webhook.received_at);
    }

    // Now a whole message, a routine run unpacks it.
    client
        .batch_execute("ALTER TABLE delivery_events DROP CONSTRAINT test_no_spam")
        .await
        .unwrap();
    let again = ops::reprocess_quarantined(&worker_config, &Default::default())
        .await
        .unwrap();
    assert_eq!(again.rows, vec![(spam, Verdict::Resolved)]);
    assert_eq!((again.stored, again.duplicate), (1, 1));
    assert_eq!(count(&client, "quarantined_webhooks").await, 0);
    assert_eq!(count(&client, "delivery_events").await, 4);
}

/// A client posts a body shaped like corral's envelope 2, whose entry has an
/// id, a `received_at` (9999-12-31, which would win every tie-break) and a
/// kind of its choosing. It is a webhook: it fails typing and is quarantined
/// as one, and re-processing types it as one again, never unpacking it, so
/// nothing of what it carries is stored.
#[tokio::test]
async fn a_posted_body_shaped_like_an_envelope_is_never_unpacked_by_reprocessing() {
    let stack = Stack::builder().migrated().start().await;
    let db = stack.db();
    let client = db.client().await;
    let ingress = RunningIngress::start(stack.ingress_config()).await;
    let worker = RunningWorker::start(stack.worker_config()).await;
    let forged_id = Uuid::now_v7();
    let inner = fixtures::delivery_status("d-forged", "2026-11-27T05:24:31Z", "", "f-1");
    let forged = format!(
        r#"{{"webhooks":[{{"id":"{forged_id}","received_at":"9999-12-31T00:00:00Z","kind":"sms","body":{inner}}}]}}"#
    );
    let response = ingress.post("sms", forged.clone()).await;
    assert_eq!(response.status(), 200);
    let answer: serde_json::Value = response.json().await.unwrap();
    let id: Uuid = answer["id"].as_str().unwrap().parse().unwrap();
    let row: i64 = wait::until("the posted body quarantined", WAIT, || async {
        client
            .query_opt(
                "SELECT id FROM quarantined_webhooks WHERE message_id = $1",
                &[&id],
            )
            .await
            .unwrap()
            .map(|row| row.get(0))
    })
    .await;
    worker.stop().await.unwrap();
    ingress.stop().await.unwrap();

    let report =
        ops::reprocess_quarantined(&config::worker(&db.url, "unused"), &Default::default())
            .await
            .unwrap();
    let carried: i64 = client
        .query_one(
            "SELECT count(*) FROM delivery_events
             WHERE message_id = $1 OR received_at >= '9999-12-31' OR drop_id = 'd-forged'",
            &[&forged_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(carried, 0, "nothing the forged entry carries is stored");
    assert_eq!(count(&client, "delivery_events").await, 0);
    assert_eq!(count(&client, "deliveries").await, 0);
    let why = "`drop_id` is missing; the body is shaped like a corral envelope-2 message but \
               was received as one webhook, so it is not unpacked (only an operator can say \
               otherwise: quarantine reprocess --as-messages --id ID)";
    assert_eq!(
        report.rows,
        vec![(row, Verdict::StillFailing(why.to_owned()))]
    );
    assert_eq!((report.stored, report.duplicate), (0, 0));
    let kept = client
        .query_one(
            "SELECT id, body, error, routing_key FROM quarantined_webhooks",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(kept.get::<_, i64>(0), row, "still quarantined");
    assert_eq!(
        kept.get::<_, Vec<u8>>(1),
        forged.as_bytes(),
        "byte for byte"
    );
    assert_eq!(kept.get::<_, String>(2), why);
    assert_eq!(
        kept.get::<_, Option<String>>(3).as_deref(),
        Some(Kind::Sms.routing_key())
    );
}
