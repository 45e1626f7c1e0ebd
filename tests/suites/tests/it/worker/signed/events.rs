//! Signed webhooks (kind `event`) reach a worker that does not store them
//! yet: each is quarantined on its own, byte for byte with its reason, even
//! one whose body would type as a delivery status, and the rest of its
//! message is stored.

use corral_shared::envelope::Kind;
use corral_testkit::{apps::RunningWorker, broker::TestBroker, database::TestDatabase, fixtures};

use super::helpers::*;

#[tokio::test]
async fn each_signed_event_is_quarantined_alone_and_the_rest_of_its_message_stored() {
    let broker = TestBroker::new().await;
    let db = TestDatabase::new().await;
    let worker = RunningWorker::start(config(&db.url, broker.prefix())).await;
    let client = db.client().await;
    let (_, status) = valid("");
    let (_, typeable) = valid("No Funds");
    let sent = send_batch(
        &broker,
        &[
            (Kind::Sms, status.as_bytes()),
            (Kind::Event, fixtures::V2_WEBHOOK_RVM_STATUS.as_bytes()),
            (Kind::Event, typeable.as_bytes()),
        ],
    )
    .await;

    let metrics = settled(&worker, QUARANTINED, 2.0).await;
    assert_eq!(metrics.get(STORED), 1.0);
    assert_each_stored_once(&client, &sent[..1]).await;
    for event in &sent[1..] {
        assert_quarantined(
            &client,
            event,
            "a signed event (kind event): this corral-worker does not store them yet…",
        )
        .await;
    }
    worker.stop().await.expect("the worker stops cleanly");
    assert_eq!(broker.ready_count(&broker.queue()).await, 0, "acknowledged");
}
