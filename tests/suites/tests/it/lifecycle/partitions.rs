//! Exactly-once across partitions: every copy of a webhook carries the
//! same provider time, so it meets the first copy in the same partition;
//! a copy with no readable time is quarantined as before; one whose day
//! has no partition (past the retention, or far ahead) is quarantined and
//! counted, never lost.

use corral_runtime::telemetry;
use corral_testkit::{database::TestDatabase, metrics::Metrics};

use super::*;

const UNPARTITIONED: &str = "corral_worker_events_unpartitioned_total";

fn unpartitioned() -> f64 {
    Metrics::parse(&telemetry::prometheus().render()).get(UNPARTITIONED)
}

#[tokio::test]
async fn a_resend_after_its_partition_was_created_is_a_duplicate() {
    let db = TestDatabase::migrated().await;
    let (pool, mut client) = (pool(&db), db.client().await);
    let at = day(12) + TimeDelta::hours(5);
    // The day's partition does not exist yet (the migration made a week).
    assert!(!partitions(&client).await.contains(&partition_of(at)));
    maintain(&mut client, day(10), &LifecycleSettings::default()).await;
    assert!(partitions(&client).await.contains(&partition_of(at)));

    let first = body("resent-later", at);
    assert_eq!(write(&pool, std::slice::from_ref(&first)).await.stored, 1);
    // Days come and go meanwhile; the resend finds its first copy.
    maintain(&mut client, day(15), &LifecycleSettings::default()).await;
    let again = write(&pool, &[first.clone(), first.clone()]).await;
    assert_eq!((again.stored, again.duplicate), (0, 2));
    // A copy of a webhook stored before the day partitions (the legacy
    // partition's range) is found there the same way.
    let old = body("before-the-days", day(-30));
    assert_eq!(write(&pool, std::slice::from_ref(&old)).await.stored, 1);
    assert_eq!(write(&pool, &[old]).await.duplicate, 1);

    let rows = client
        .query(
            "SELECT drop_id, tableoid::regclass::text FROM delivery_events ORDER BY drop_id",
            &[],
        )
        .await
        .unwrap();
    let rows: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        rows,
        [
            (
                "before-the-days".to_owned(),
                "delivery_events_legacy".to_owned()
            ),
            ("resent-later".to_owned(), partition_of(at)),
        ]
    );
    assert_eq!(number(&client, "SELECT count(*) FROM deliveries").await, 2);
    assert_eq!(
        number(&client, "SELECT count(*) FROM delivery_results_outbox").await,
        2
    );
}

#[tokio::test]
async fn a_resend_without_a_readable_time_is_quarantined_as_before() {
    let db = TestDatabase::migrated().await;
    let (pool, client) = (pool(&db), db.client().await);
    let good = body("no-time", day(1));
    let missing = good.replace(r#""attempt_date":"#, r#""attempted":"#);
    let unreadable = good.replace(&day(1).format("%Y-%m-%d").to_string(), "yesterday");
    for bad in [&missing, &unreadable] {
        let outcome = write(&pool, &[bad.clone(), bad.clone()]).await;
        assert_eq!(
            (outcome.stored, outcome.quarantined, outcome.duplicate),
            (0, 1, 1)
        );
    }
    assert_eq!(
        number(&client, "SELECT count(*) FROM delivery_events").await,
        0
    );
    assert_eq!(
        number(&client, "SELECT count(*) FROM quarantined_webhooks").await,
        2
    );
}

#[tokio::test]
async fn an_event_past_the_retention_or_far_ahead_is_quarantined_and_counted() {
    let db = TestDatabase::migrated().await;
    let (pool, mut client) = (pool(&db), db.client().await);
    let before = unpartitioned();
    // Forty days on with two weeks kept: the oldest day left is day 26.
    let done = maintain(&mut client, day(40), &keep(14)).await;
    assert!(done.dropped.contains(&"delivery_events_legacy".to_owned()));
    assert_eq!(
        partitions(&client).await.first(),
        Some(&partition_of(day(26)))
    );

    let late = body("very-late", day(20) + TimeDelta::hours(3));
    let early = body("far-ahead", day(60));
    let kept = body("in-time", day(30));
    let outcome = write(&pool, &[late.clone(), early, kept]).await;
    assert_eq!((outcome.stored, outcome.quarantined), (1, 2));
    assert_eq!(unpartitioned() - before, 2.0);
    let errors: Vec<String> = client
        .query("SELECT error FROM quarantined_webhooks ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(errors.len(), 2);
    for error in &errors {
        assert!(error.contains("no partition of relation"), "{error}");
    }
    // Sent again, it is the quarantined copy's duplicate (and counted again).
    let again = write(&pool, &[late]).await;
    assert_eq!((again.quarantined, again.duplicate), (0, 1));
    assert_eq!(unpartitioned() - before, 3.0);
    assert_eq!(
        number(&client, "SELECT count(*) FROM delivery_events").await,
        1
    );
}
