//! The newest state wins whatever the arrival order.

use corral_contract::envelope::Kind;
use corral_testkit::{
    apps::RunningWorker,
    broker::TestBroker,
    database::TestDatabase,
    fixtures::{self},
};

use super::helpers::*;

#[tokio::test]
async fn deliveries_keep_the_newest_state_whatever_the_arrival_order() {
    let stack = worker_stack().start().await;
    let (broker, db) = (stack.broker(), stack.db());
    let newer = "2026-11-27T10:00:00.500Z";
    let older = "2026-11-27T10:00:00.499Z";
    let body = |drop_id: &str, date: &str, reason: &str| {
        fixtures::delivery_status(drop_id, date, reason, "order-9")
    };

    // Same batch, newest first: published before the worker starts, batches of 2.
    let same = "aaaaaaaaaaaaaaaaaaaaaa01";
    let same_new = send(broker, Kind::Sms.routing_key(), body(same, newer, "")).await;
    send(
        broker,
        Kind::Sms.routing_key(),
        body(same, older, "Too Many"),
    )
    .await;
    let mut config = stack.worker_config();
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
    let apart_new = send(broker, Kind::Sms.routing_key(), body(apart, newer, "")).await;
    wait_count(&client, EVENTS, 3).await;
    let (_, _, updated_at) = delivery(&client, apart).await;
    let apart_old = send(
        broker,
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
        broker,
        Kind::Sms.routing_key(),
        body(forward, older, "Internal DNC"),
    )
    .await;
    wait_count(&client, EVENTS, 5).await;
    let forward_new = send(broker, Kind::Sms.routing_key(), body(forward, newer, "")).await;
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

/// Publishes `body` as ingress would, received at `received_at`.
async fn send_received(
    broker: &TestBroker,
    body: String,
    received_at: chrono::DateTime<chrono::Utc>,
) -> Sent {
    let id = uuid::Uuid::now_v7();
    broker
        .publish(
            Kind::Sms.routing_key(),
            body.as_bytes(),
            corral_runtime::amqp::properties(&corral_contract::envelope::Metadata::single(
                id,
                received_at,
            )),
        )
        .await;
    Sent {
        id,
        received_at,
        routing_key: Kind::Sms.routing_key().to_owned(),
        body: body.into_bytes(),
    }
}

/// Two webhooks of one `drop_id` with the same `attempt_date`: the one
/// received later is the provider's correction and becomes the state, in
/// one batch or in two — even when its fingerprint is the smaller one.
#[tokio::test]
async fn of_two_states_with_the_same_attempt_date_the_later_received_wins() {
    let stack = worker_stack().start().await;
    let (broker, db) = (stack.broker(), stack.db());
    let date = "2026-11-27T10:00:00.500Z";
    // The earlier one gets the greater fingerprint, so ordering by
    // fingerprint alone would keep it.
    let pair = |drop_id: &str| {
        let a = fixtures::delivery_status(drop_id, date, "", "order-5");
        let b = fixtures::delivery_status(drop_id, date, "No Funds", "order-5");
        let fingerprint = |body: &str| corral_payload::parse(body.as_bytes()).unwrap().fingerprint;
        if fingerprint(&a) > fingerprint(&b) {
            (a, b)
        } else {
            (b, a)
        }
    };
    let first_received = now_micros();
    let later_received = first_received + chrono::Duration::milliseconds(1);

    // One batch: both published before the worker starts, batches of 2.
    let same = "aaaaaaaaaaaaaaaaaaaaaa11";
    let (earlier, later) = pair(same);
    send_received(broker, earlier, first_received).await;
    let same_later = send_received(broker, later, later_received).await;
    let mut config = stack.worker_config();
    config.batch_max = 2;
    config.batch_linger_ms = 300;
    let worker = RunningWorker::start(config).await;
    let client = db.client().await;
    wait_count(&client, EVENTS, 2).await;
    assert_current(&client, same, &same_later).await;

    // Two batches: the correction arrives once the first is the state.
    let apart = "aaaaaaaaaaaaaaaaaaaaaa12";
    let (earlier, later) = pair(apart);
    let apart_earlier = send_received(broker, earlier, first_received).await;
    wait_count(&client, EVENTS, 3).await;
    assert_eq!(
        delivery(&client, apart).await.0.message_id,
        apart_earlier.id
    );
    let apart_later = send_received(broker, later, later_received).await;
    wait_count(&client, EVENTS, 4).await;
    assert_current(&client, apart, &apart_later).await;

    // And the earlier one, arriving after the correction, does not undo it.
    let back = "aaaaaaaaaaaaaaaaaaaaaa13";
    let (earlier, later) = pair(back);
    let back_later = send_received(broker, later, later_received).await;
    wait_count(&client, EVENTS, 5).await;
    send_received(broker, earlier, first_received).await;
    wait_count(&client, EVENTS, 6).await;
    assert_eq!(delivery(&client, back).await.0.message_id, back_later.id);
    worker.stop().await.expect("the worker stops cleanly");
}

/// Asserts `drop_id`'s current state in `deliveries` is `sent`, and points
/// at `sent`'s event.
async fn assert_current(client: &tokio_postgres::Client, drop_id: &str, sent: &Sent) {
    let (state, state_event, _) = delivery(client, drop_id).await;
    assert_eq!(state.message_id, sent.id, "{state:?}");
    assert_eq!(state_event, event_id(client, sent.id).await);
}

/// Migration 2 on data the previous rule wrote: `received_at` is filled from
/// each state's event, and a state chosen among same-date events by
/// fingerprint is chosen again by arrival.
#[tokio::test]
async fn the_received_at_migration_backfills_and_re_chooses_tied_states() {
    let db = TestDatabase::new().await;
    let client = db.client().await;
    client
        .batch_execute(include_str!(
            "../../../../../worker/migrations/V1__initial.sql"
        ))
        .await
        .expect("the first migration");
    // `tied`: two events of one date, the earlier received with the greater
    // fingerprint, which the previous rule made the state. `single`: one
    // event. `pruned`: a state whose event is gone.
    client
        .batch_execute(
            r#"
            INSERT INTO delivery_events (id, fingerprint, message_id, kind, drop_id, attempt_date,
                                         status, payload, received_at)
            OVERRIDING SYSTEM VALUE VALUES
              (1, '\x02', '00000000-0000-0000-0000-000000000001', 'sms', 'tied',
               '2026-11-27T10:00:00Z', 'success', '{}', '2026-11-27T10:00:01Z'),
              (2, '\x01', '00000000-0000-0000-0000-000000000002', 'sms', 'tied',
               '2026-11-27T10:00:00Z', 'failure', '{}', '2026-11-27T10:00:02Z'),
              (3, '\x03', '00000000-0000-0000-0000-000000000003', 'rvm', 'single',
               '2026-11-27T09:00:00Z', 'success', '{}', '2026-11-27T09:00:05Z');
            INSERT INTO deliveries (drop_id, kind, event_id, fingerprint, message_id,
                                    attempt_date, status) VALUES
              ('tied', 'sms', 1, '\x02', '00000000-0000-0000-0000-000000000001',
               '2026-11-27T10:00:00Z', 'success'),
              ('single', 'rvm', 3, '\x03', '00000000-0000-0000-0000-000000000003',
               '2026-11-27T09:00:00Z', 'success'),
              ('pruned', 'sms', 99, '\x09', '00000000-0000-0000-0000-000000000009',
               '2026-11-27T08:00:00Z', 'success');
            "#,
        )
        .await
        .expect("rows as the previous version wrote them");
    client
        .batch_execute(include_str!(
            "../../../../../worker/migrations/V2__deliveries_ties_by_received_at.sql"
        ))
        .await
        .expect("the second migration");
    let rows = client
        .query(
            "SELECT drop_id, event_id, status, nullif(received_at, '-infinity')
             FROM deliveries ORDER BY drop_id",
            &[],
        )
        .await
        .expect("the states");
    type State = (String, i64, String, Option<chrono::DateTime<chrono::Utc>>);
    let states: Vec<State> = rows
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2), row.get(3)))
        .collect();
    let state = |drop_id: &str, event: i64, status: &str, received_at: Option<&str>| {
        (
            drop_id.to_owned(),
            event,
            status.to_owned(),
            received_at.map(instant),
        )
    };
    assert_eq!(
        states,
        [
            // Unknown: any later webhook of the same date replaces it.
            state("pruned", 99, "success", None),
            state("single", 3, "success", Some("2026-11-27T09:00:05Z")),
            state("tied", 2, "failure", Some("2026-11-27T10:00:02Z")),
        ]
    );
}
