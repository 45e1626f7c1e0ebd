//! Nesting depth: a payload nested past the worker's cap — one that reached
//! the queue without passing ingress — is quarantined with the reason, and
//! the queue keeps moving.

use corral_contract::envelope::Kind;
use corral_payload::MAX_DEPTH;
use corral_testkit::apps::RunningWorker;

use super::helpers::*;

/// A typeable webhook whose extra field `x` makes it nest `depth` levels in
/// all (the top-level object is one).
fn nested_webhook(drop_id: &str, depth: usize) -> String {
    let inner = depth - 1;
    format!(
        r#"{{"drop_id":"{drop_id}","status":"success","attempt_date":"2026-11-27T05:24:31Z","x":{}1{}}}"#,
        "[".repeat(inner),
        "]".repeat(inner)
    )
}

#[tokio::test]
async fn a_payload_nested_far_past_the_cap_is_quarantined_and_the_next_one_stored() {
    let stack = worker_stack().start().await;
    let (broker, db) = (stack.broker(), stack.db());
    let deep = send(
        broker,
        Kind::Sms.routing_key(),
        nested_webhook("deep-30000", 30_000),
    )
    .await;
    let at_cap = send(
        broker,
        Kind::Sms.routing_key(),
        nested_webhook("deep-at-cap", MAX_DEPTH),
    )
    .await;
    let (_, body) = valid("");
    let normal = send(broker, Kind::Rvm.routing_key(), body).await;
    // All three in one batch: the deep one must not fail its neighbours.
    let worker = RunningWorker::start(batches_of(3, stack.worker_config())).await;
    let client = db.client().await;
    wait_count(&client, QUARANTINE, 1).await;
    wait_count(&client, EVENTS, 2).await;

    let row = client
        .query_one(
            "SELECT body, error, message_id FROM quarantined_webhooks",
            &[],
        )
        .await
        .expect("the quarantined row");
    assert_eq!(row.get::<_, Vec<u8>>(0), deep.body, "kept byte for byte");
    assert_eq!(
        row.get::<_, String>(1),
        "objects and arrays are nested deeper than 128 levels"
    );
    assert_eq!(row.get::<_, Option<uuid::Uuid>>(2), Some(deep.id));
    assert_each_stored_once(&client, &[at_cap, normal.clone()]).await;

    let metrics = settled(&worker, STORED, 2.0).await;
    assert_eq!(metrics.get(QUARANTINED), 1.0);
    assert_eq!(metrics.get(DB_TRANSIENT), 0.0, "no attempt failed");
    assert_eq!(
        metrics.get("corral_worker_batch_size_count"),
        1.0,
        "the three were one batch"
    );
    worker.stop().await.expect("the worker stops cleanly");
}
