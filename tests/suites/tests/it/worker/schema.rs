//! A worker never stores into a schema newer than it knows: left running
//! while a newer release migrated the database (the wrong upgrade order), it
//! stops at its next batch with nothing committed or acknowledged, and a
//! worker of the old version started afterwards refuses to start.

use std::time::Duration;

use corral_testkit::{
    fixtures,
    process::{Process, ProcessConfig},
    stack::Stack,
};

use super::helpers::{WAIT, count, send};

/// Records a migration this worker does not have, as a newer release's
/// `migrate` would.
const NEWER_MIGRATION: &str =
    "INSERT INTO refinery_schema_history (version, name, applied_on, checksum)
     VALUES (9999, 'from_a_newer_release', now()::text, '0')";

#[tokio::test]
async fn a_worker_stops_at_its_next_batch_when_the_schema_is_newer_and_acks_nothing() {
    let stack = Stack::builder().migrated().start().await;
    let (broker, db) = (stack.broker(), stack.db());
    let client = db.client().await;
    let mut worker = Process::start_ready(ProcessConfig::worker(&db.url, broker.prefix())).await;
    send(broker, "dropcowboy.sms", fixtures::SMS_SUCCESS).await;
    super::helpers::wait_count(&client, "SELECT count(*) FROM delivery_events", 1).await;

    client
        .batch_execute(NEWER_MIGRATION)
        .await
        .expect("a newer release's migration");
    let held = send(broker, "dropcowboy.sms", fixtures::SMS_FAILURE).await;

    let status = worker.wait_exit(WAIT).await;
    assert_eq!(status.code(), Some(1), "{}", worker.log_tail());
    assert!(
        worker
            .log_tail()
            .contains("newer than this corral-worker knows (V"),
        "{}",
        worker.log_tail()
    );
    // Nothing of the held batch was committed, and its message is back in
    // the queue for a worker that knows the schema.
    assert_eq!(
        count(&client, "SELECT count(*) FROM delivery_events").await,
        1
    );
    let queue = broker.topology.queue();
    corral_testkit::wait::until_true("the message back in the queue", WAIT, || async {
        broker.ready_count(&queue).await == 1
    })
    .await;
    let back = broker.get(&queue).await.expect("the held message");
    assert_eq!(
        back.properties
            .message_id()
            .as_ref()
            .map(|id| id.to_string()),
        Some(held.id.to_string())
    );

    // Started again, the old version refuses the newer schema at once.
    worker.restart();
    let status = worker.wait_exit(Duration::from_secs(60)).await;
    assert_eq!(status.code(), Some(1), "{}", worker.log_tail());
}
