//! The newest state wins whatever the arrival order.

use corral_shared::envelope::Kind;
use corral_testkit::{
    apps::RunningWorker,
    broker::TestBroker,
    database::TestDatabase,
    fixtures::{self},
};

use super::helpers::*;

#[tokio::test]
async fn deliveries_keep_the_newest_state_whatever_the_arrival_order() {
    let broker = TestBroker::new().await;
    let db = TestDatabase::new().await;
    let newer = "2026-11-27T10:00:00.500Z";
    let older = "2026-11-27T10:00:00.499Z";
    let body = |drop_id: &str, date: &str, reason: &str| {
        fixtures::delivery_status(drop_id, date, reason, "order-9")
    };

    // Same batch, newest first: published before the worker starts, batches of 2.
    let same = "aaaaaaaaaaaaaaaaaaaaaa01";
    let same_new = send(&broker, Kind::Sms.routing_key(), body(same, newer, "")).await;
    send(
        &broker,
        Kind::Sms.routing_key(),
        body(same, older, "Too Many"),
    )
    .await;
    let mut config = config(&db.url, broker.prefix());
    config.batch_max = 2;
    config.batch_linger_ms = 300;
    let worker = RunningWorker::start(config).await;
    let client = db.client().await;
    wait_count(&client, EVENTS, 2).await;
    let (state, state_event, _) = delivery(&client, same).await;
    assert_eq!(
        state,
        Typed::expected(
            &same_new, same, newer, "success", "", false, "0.099", "order-9"
        )
    );
    assert_eq!(state_event, event_id(&client, same_new.id).await);

    // Separate batches, newest first: the older must not overwrite it.
    let apart = "aaaaaaaaaaaaaaaaaaaaaa02";
    let apart_new = send(&broker, Kind::Sms.routing_key(), body(apart, newer, "")).await;
    wait_count(&client, EVENTS, 3).await;
    let (_, _, updated_at) = delivery(&client, apart).await;
    let apart_old = send(
        &broker,
        Kind::Sms.routing_key(),
        body(apart, older, "No Funds"),
    )
    .await;
    wait_count(&client, EVENTS, 4).await;
    let (state, state_event, updated_again) = delivery(&client, apart).await;
    assert_eq!(
        state,
        Typed::expected(
            &apart_new, apart, newer, "success", "", false, "0.099", "order-9"
        )
    );
    assert_eq!(state_event, event_id(&client, apart_new.id).await);
    assert_eq!(
        updated_again, updated_at,
        "the older event touched the state"
    );
    // The older event itself is kept as history.
    event_id(&client, apart_old.id).await;

    // And in order (oldest first, separate batches) the newer one does replace it.
    let forward = "aaaaaaaaaaaaaaaaaaaaaa03";
    send(
        &broker,
        Kind::Sms.routing_key(),
        body(forward, older, "Internal DNC"),
    )
    .await;
    wait_count(&client, EVENTS, 5).await;
    let forward_new = send(&broker, Kind::Sms.routing_key(), body(forward, newer, "")).await;
    wait_count(&client, EVENTS, 6).await;
    let (state, state_event, _) = delivery(&client, forward).await;
    assert_eq!(
        state,
        Typed::expected(
            &forward_new,
            forward,
            newer,
            "success",
            "",
            false,
            "0.099",
            "order-9"
        )
    );
    assert_eq!(state_event, event_id(&client, forward_new.id).await);
    assert_eq!(count(&client, "SELECT count(*) FROM deliveries").await, 3);
    worker.stop().await.expect("the worker stops cleanly");
}
