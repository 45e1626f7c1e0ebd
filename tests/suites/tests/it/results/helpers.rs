//! What the result-event tests share: a worker with result events on, and
//! the events read off a test's queue.

use std::time::Duration;

use corral_contract::results::{self, DeliveryResult};
use corral_testkit::{broker::TestBroker, config};
use corral_worker::config::WorkerConfig;
use lapin::message::BasicGetMessage;

/// Deadline of every wait.
pub(super) const WAIT: Duration = Duration::from_secs(25);

pub(super) const PUBLISHED: &str = "corral_worker_result_events_published_total";

pub(super) const UNROUTABLE: &str =
    r#"corral_worker_result_events_refused_total{cause="unroutable"}"#;

pub(super) const NACKED: &str = r#"corral_worker_result_events_refused_total{cause="nack"}"#;

pub(super) const PENDING: &str = "corral_worker_result_events_pending";

pub(super) const OLDEST: &str = "corral_worker_result_events_oldest_seconds";

pub(super) const OUTBOX: &str = "SELECT count(*) FROM delivery_results_outbox";

/// The worker tests' quick settings, with result events on.
pub(super) fn results_on(config: &mut WorkerConfig) {
    config::short_waits(config);
    config.results.result_events = true;
}

/// The event a message carries, after checking the properties the contract
/// promises.
pub(super) fn decode(message: &BasicGetMessage) -> DeliveryResult {
    let properties = &message.delivery.properties;
    let event: DeliveryResult = serde_json::from_slice(&message.delivery.data)
        .unwrap_or_else(|err| panic!("a result event that does not parse: {err}"));
    assert_eq!(
        properties.message_id().as_ref().map(|id| id.as_str()),
        Some(event.id.to_string().as_str()),
        "message_id is the event's id"
    );
    assert_eq!(
        properties.kind().as_ref().map(|kind| kind.as_str()),
        Some(results::MESSAGE_TYPE)
    );
    assert_eq!(
        properties.content_type().as_ref().map(|ct| ct.as_str()),
        Some("application/json")
    );
    assert_eq!(properties.delivery_mode(), &Some(2), "persistent");
    assert_eq!(event.version, results::VERSION);
    event
}

/// Takes exactly `count` events off `queue` (panics on more or fewer).
pub(super) async fn take(broker: &TestBroker, queue: &str, count: usize) -> Vec<DeliveryResult> {
    let messages = broker.take(queue, count, WAIT).await;
    assert_eq!(messages.len(), count, "result events in {queue}");
    messages.iter().map(decode).collect()
}
