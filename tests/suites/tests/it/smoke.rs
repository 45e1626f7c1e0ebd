use corral_testkit::{
    apps::{RunningIngress, RunningWorker},
    fixtures,
    stack::Stack,
    wait,
};
use std::time::Duration;

/// The whole path in one process: a sample posted to ingress becomes a row.
#[tokio::test]
async fn a_posted_sample_becomes_a_row() {
    let stack = Stack::builder().database().start().await;
    let db = stack.db();
    let ingress = RunningIngress::start(stack.ingress_config()).await;
    let worker = RunningWorker::start(stack.worker_config()).await;

    let response = ingress.post("sms", fixtures::SMS_SUCCESS).await;
    assert_eq!(response.status(), 200);
    let id: serde_json::Value = response.json().await.unwrap();
    let id: uuid::Uuid = id["id"].as_str().unwrap().parse().unwrap();

    let client = db.client().await;
    let status: String = wait::until("the row", Duration::from_secs(20), || {
        let client = &client;
        async move {
            client
                .query_opt(
                    "SELECT status FROM delivery_events WHERE message_id = $1",
                    &[&id],
                )
                .await
                .unwrap()
                .map(|row| row.get(0))
        }
    })
    .await;
    assert_eq!(status, "success");
    worker.stop().await.unwrap();
    ingress.stop().await.unwrap();
}
