//! A signed webhook takes the spool like any other when the broker cannot:
//! answered 200 from the spool, kept as kind `event`, and the worker stores
//! it from there under the answered id.

use corral_runtime::telemetry::labels::SpoolCause;
use corral_testkit::apps::RunningWorker;

use super::helpers::*;
use crate::{
    ingress::{
        helpers::{accepted, send},
        signed::{Delivery, SECRET, fresh_event},
    },
    worker::helpers::{EVENTS, QUARANTINE, STORED, count, settled, wait_count},
};

#[tokio::test]
async fn with_the_broker_down_a_signed_delivery_is_answered_200_from_the_spool() {
    let mut stack = stage()
        .ingress_settings(|ingress| ingress.signing.secrets = vec![SECRET.into()])
        .start()
        .await;
    without_broker(&mut stack).await;
    let (ingress, client) = (stack.ingress(), stack.client().await);
    let delivery = Delivery::new(SECRET, fresh_event());

    let before = ingress.metrics().await;
    let id = accepted(send(delivery.request(ingress)).await).await;
    let after = ingress.metrics().await;
    let cause = SpoolCause::Unavailable;
    assert_eq!(spooled(&after, cause) - spooled(&before, cause), 1.0);
    let rows = spool_rows(&client).await;
    let [row] = rows.as_slice() else {
        panic!("exactly the one webhook in the spool: {rows:?}");
    };
    assert_eq!(
        (row.message_id, row.kind.as_str(), row.body.as_slice()),
        (id, "event", delivery.body.as_slice())
    );

    let worker = RunningWorker::start_unready(stack.worker_config()).await;
    wait_count(&client, SPOOLED_ROWS, 0).await;
    settled(&worker, STORED, 1.0).await;
    let row = client
        .query_one(
            "SELECT body, event FROM provider_events WHERE message_id = $1",
            &[&id],
        )
        .await
        .expect("the signed webhook, kept");
    let body: serde_json::Value = serde_json::from_slice(&delivery.body).expect("JSON");
    assert_eq!(row.get::<_, serde_json::Value>(0), body);
    assert_eq!(row.get::<_, &str>(1), "contact.msg.received");
    assert_eq!(count(&client, QUARANTINE).await, 0);
    assert_eq!(count(&client, EVENTS).await, 0);
    worker.stop().await.expect("the worker stops cleanly");
}
