//! Migration V7 on a populated table, as a previous release left it: the
//! table becomes the legacy partition as it is (same rows, same ids), a
//! resend of a webhook stored before finds it, ids go on, and the outbox
//! rows whose event was already gone are removed.

use corral_testkit::database::TestDatabase;
use corral_worker::db;

use super::*;

/// Webhooks stored by the previous release.
const BEFORE: i64 = 500;

/// Stores `bodies` as V6's worker did (its unique key was the fingerprint
/// alone), each with an outbox row.
async fn store_as_v6(client: &Client, bodies: &[String]) {
    for body in bodies {
        let typed = corral_payload::parse(body.as_bytes()).expect("a callback");
        let status = &typed.status;
        client
            .execute(
                "WITH e AS (
                     INSERT INTO delivery_events (fingerprint, message_id, kind, drop_id,
                         attempt_date, status, reason, payload, received_at)
                     VALUES ($1, gen_random_uuid(), 'sms', $2, $3, 'success', '', $4::text::jsonb, now())
                     ON CONFLICT (fingerprint) DO NOTHING
                     RETURNING id)
                 INSERT INTO delivery_results_outbox (event_id, latest, suppressions, new_suppressions)
                 SELECT id, true, '{}', '{}' FROM e",
                &[&&typed.fingerprint.0[..], &status.drop_id, &status.attempt_date, body],
            )
            .await
            .expect("a V6 insert");
    }
}

#[tokio::test]
async fn an_existing_table_becomes_the_first_partition_as_it_is() {
    let db = TestDatabase::new().await;
    let target = Target::new(&db.url, None, Duration::from_secs(30)).unwrap();
    db::migrate_to(&target, Some(6)).await.expect("V1 to V6");
    let client = db.client().await;
    let bodies: Vec<String> = (0..BEFORE)
        .map(|i| body(&format!("old-{i}"), day(-(i % 60)) + TimeDelta::minutes(i)))
        .collect();
    store_as_v6(&client, &bodies).await;
    // An outbox row whose event was deleted by hand, as docs once said to.
    client
        .batch_execute(
            "DELETE FROM delivery_events WHERE drop_id = 'old-0';
             ANALYZE delivery_events",
        )
        .await
        .unwrap();
    let ids = "SELECT count(*), sum(id)::bigint, max(id) FROM delivery_events";
    let before = client.query_one(ids, &[]).await.unwrap();
    let (count, sum, max): (i64, i64, i64) = (before.get(0), before.get(1), before.get(2));

    assert_eq!(db::migrate(&target).await.expect("V7"), 1);
    let after = client.query_one(ids, &[]).await.unwrap();
    assert_eq!(
        (after.get::<_, i64>(0), after.get::<_, i64>(1)),
        (count, sum)
    );
    assert_eq!(
        number(
            &client,
            "SELECT count(*) FROM delivery_events WHERE tableoid = 'delivery_events_legacy'::regclass"
        )
        .await,
        count
    );
    let kind: i8 = client
        .query_one(
            "SELECT relkind::\"char\" FROM pg_class WHERE oid = 'delivery_events'::regclass",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(kind as u8, b'p');
    // Every index is valid: none was left half-built by the preparation.
    assert_eq!(
        number(
            &client,
            "SELECT count(*) FROM pg_index WHERE NOT indisvalid"
        )
        .await,
        0
    );
    // The orphan went; the others know their event's time.
    assert_eq!(
        number(
            &client,
            "SELECT count(*) FROM delivery_results_outbox o
             JOIN delivery_events e ON e.id = o.event_id AND e.attempt_date = o.attempt_date"
        )
        .await,
        count
    );
    assert_eq!(
        number(&client, "SELECT count(*) FROM delivery_results_outbox").await,
        count
    );

    // Resends of webhooks stored before are duplicates; a new one is stored
    // in a day partition with the next id.
    let pool = pool(&db);
    let resent = write(&pool, &bodies[1..11]).await;
    assert_eq!((resent.stored, resent.duplicate), (0, 10));
    let new = body("new-after-v7", day(3));
    assert_eq!(write(&pool, &[new]).await.stored, 1);
    let row = client
        .query_one(
            "SELECT id, tableoid::regclass::text FROM delivery_events WHERE drop_id = 'new-after-v7'",
            &[],
        )
        .await
        .unwrap();
    assert!(row.get::<_, i64>(0) > max);
    assert_eq!(row.get::<_, String>(1), partition_of(day(3)));
}
