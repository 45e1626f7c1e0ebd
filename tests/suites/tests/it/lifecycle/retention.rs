//! With `CORRAL_RETENTION` set, the database stays the same size under a
//! steady load: many simulated days, each a day's webhooks written as the
//! worker writes them and a maintenance round at that day's clock.

use corral_testkit::database::TestDatabase;

use super::*;

/// Webhooks per simulated day.
const PER_DAY: usize = 300;
/// Days kept.
const KEPT: u64 = 14;
/// Days simulated.
const DAYS: i64 = 45;

/// The bytes of the tables that grow with the load, indexes and TOAST
/// included: the events (every partition), deliveries and the outbox.
const SIZE: &str = "
SELECT (SELECT coalesce(sum(pg_total_relation_size(name::regclass)), 0)
        FROM delivery_event_partitions)::bigint
     + pg_total_relation_size('deliveries')
     + pg_total_relation_size('delivery_results_outbox')";

/// A day's webhooks, each a drop of its own, spread over the day.
fn days_webhooks(at: DateTime<Utc>) -> Vec<String> {
    (0..PER_DAY)
        .map(|i| {
            let drop_id = format!("{}-{i}", at.format("%Y%m%d"));
            body(&drop_id, at + TimeDelta::seconds(i as i64 * 280))
        })
        .collect()
}

#[tokio::test]
async fn the_database_stays_flat_over_many_days_with_a_retention() {
    let db = TestDatabase::migrated().await;
    let (pool, mut client) = (pool(&db), db.client().await);
    let mut sizes = Vec::new();
    let mut dropped = 0;
    // Days in the future, so the migration's legacy partition (everything
    // before the day after tomorrow) ages out like any other day.
    for d in 3..3 + DAYS {
        for chunk in days_webhooks(day(d)).chunks(100) {
            assert_eq!(write(&pool, chunk).await.stored, chunk.len());
        }
        // The day is over: the horizon is a midnight, `KEPT` days ago.
        let now = day(d + 1);
        let done = maintain(&mut client, now, &keep(KEPT)).await;
        dropped += done.dropped.len();
        // What autovacuum does in production; this clock runs faster.
        client
            .batch_execute("VACUUM deliveries, delivery_results_outbox")
            .await
            .unwrap();
        sizes.push(number(&client, SIZE).await);
        let events = number(&client, "SELECT count(*) FROM delivery_events").await;
        let days_held = (d - 2).min(KEPT as i64);
        assert_eq!(events, days_held * PER_DAY as i64, "events on day {d}");
        // Every stored event has its result event waiting (no relay runs)
        // and nothing else: those of dropped days went with them.
        let outbox = number(&client, "SELECT count(*) FROM delivery_results_outbox").await;
        assert_eq!(outbox, events, "outbox rows on day {d}");
        let deliveries = number(&client, "SELECT count(*) FROM deliveries").await;
        assert_eq!(deliveries, events, "deliveries on day {d}");
    }
    // The kept days and a week ahead, whatever day it is.
    let held = partitions(&client).await;
    assert_eq!(held.len(), KEPT as usize + 7, "{held:?}");
    assert_eq!(
        held.first(),
        Some(&partition_of(day(3 + DAYS - KEPT as i64)))
    );
    // Days 2 (the first the migration made) to the last one past, and the
    // legacy partition.
    assert_eq!(dropped, (DAYS - KEPT as i64 + 2) as usize);
    // Flat: the last weeks' sizes are the size of the first steady day, give
    // or take free space a vacuum leaves in place.
    let steady = &sizes[KEPT as usize..];
    let (low, high) = (steady.iter().min().unwrap(), steady.iter().max().unwrap());
    eprintln!("sizes by day (bytes): {sizes:?}");
    assert!(
        *high as f64 <= *low as f64 * 1.15,
        "the size grows with a retention: {steady:?}"
    );
}
