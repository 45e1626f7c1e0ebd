//! What both binaries declare on the broker, read back from it: the
//! unroutable queue dead-letters like the main queue, and one an older
//! corral declared without dead-lettering is used as it is, with the
//! upgrade step logged, until it is replaced.

use std::time::Duration;

use corral_runtime::amqp::{self, Topology};
use corral_testkit::{
    apps::{RunningIngress, RunningWorker, TOKEN},
    broker::{TestBroker, delete_prefix},
    config,
    database::TestDatabase,
    fixtures, wait,
};
use lapin::{
    options::{BasicGetOptions, BasicNackOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable},
};
use serde_json::{Value, json};

use crate::{
    ingress::helpers::{CapturedLogs, accepted},
    worker::helpers::{EVENTS, wait_count},
};

const WAIT: Duration = Duration::from_secs(30);

/// `rabbitmqctl` with `args`, its standard output; panics if it fails.
pub(crate) fn rabbitmqctl(args: &[&str]) -> String {
    let output = std::process::Command::new("rabbitmqctl")
        .args(args)
        .output()
        .expect("rabbitmqctl (RabbitMQ's CLI) on PATH");
    assert!(
        output.status.success(),
        "rabbitmqctl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8")
}

/// The arguments `queue` was declared with, as the broker holds them, by
/// name (`rabbitmqctl list_queues`); `None` while there is no such queue.
pub(crate) fn listed_arguments(queue: &str) -> Option<serde_json::Map<String, Value>> {
    let listed = rabbitmqctl(&[
        "list_queues",
        "-q",
        "-p",
        "/",
        "name",
        "arguments",
        "--formatter",
        "json",
    ]);
    let queues: Vec<Value> = serde_json::from_str(&listed).expect("rabbitmqctl's JSON");
    let mut found = queues.into_iter().find(|listed| listed["name"] == queue)?;
    // Listed as [name, type, value] triples.
    let Value::Array(triples) = found["arguments"].take() else {
        panic!("arguments of {queue}: {found}");
    };
    Some(
        triples
            .into_iter()
            .map(|triple| {
                (
                    triple[0].as_str().expect("a name").to_owned(),
                    triple[2].clone(),
                )
            })
            .collect(),
    )
}

pub(crate) fn queue_arguments(queue: &str) -> serde_json::Map<String, Value> {
    listed_arguments(queue).unwrap_or_else(|| panic!("{queue} is not on the broker"))
}

/// The arguments both queues the worker consumes must carry.
pub(crate) fn dead_lettering(
    topology: &Topology,
    delivery_limit: u32,
) -> serde_json::Map<String, Value> {
    let expected = json!({
        "x-queue-type": "quorum",
        "x-delivery-limit": delivery_limit,
        "x-dead-letter-exchange": topology.dead_letter_exchange(),
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    });
    expected.as_object().unwrap().clone()
}

/// A webhook the exchange could not route lands in the unroutable queue; a
/// consumer that keeps returning it (as a worker that cannot settle it
/// would) sees it go to the dead-letter queue after the delivery limit,
/// with the reason, instead of dropped (RabbitMQ 4.x's default limit
/// without a dead-letter exchange) or delivered forever (3.x).
#[tokio::test]
async fn the_unroutable_queue_dead_letters_past_the_delivery_limit_like_the_main_queue() {
    let broker = TestBroker::new().await;
    let topology = &broker.topology;
    let limit = broker.settings.delivery_limit;
    let expected = dead_lettering(topology, limit);
    assert_eq!(queue_arguments(&topology.queue()), expected);
    assert_eq!(queue_arguments(&topology.unroutable_queue()), expected);

    broker.unbind_main_queue().await;
    let body = fixtures::SMS_SUCCESS.as_bytes();
    broker
        .publish(
            "dropcowboy.sms",
            body,
            corral_runtime::amqp::properties(&corral_contract::envelope::Metadata::single(
                uuid::Uuid::now_v7(),
                chrono::Utc::now(),
            )),
        )
        .await;
    let unroutable = topology.unroutable_queue();
    let dead = returned_until_dead_lettered(&broker, &unroutable).await;
    assert_eq!(dead.delivery.data, body, "the message itself");
}

/// Takes the one message of `queue` and returns it (nack, requeue), as a
/// worker that cannot settle it would, until it is dead-lettered: checks it
/// took more deliveries than the limit, left `queue` and went to the
/// dead-letter queue for that reason, and returns the dead letter.
pub(crate) async fn returned_until_dead_lettered(
    broker: &TestBroker,
    queue: &str,
) -> lapin::message::BasicGetMessage {
    let limit = broker.settings.delivery_limit;
    let connection = amqp::connect(&broker.settings, "corral-tests returner")
        .await
        .expect("connecting");
    let channel = connection.create_channel().await.expect("a channel");
    let dead_letters = broker.topology.dead_letter_queue();
    let deliveries = std::cell::Cell::new(0u32);
    wait::until_true(
        "the returned message in the dead-letter queue",
        WAIT,
        || async {
            let got = channel
                .basic_get(queue.into(), BasicGetOptions { no_ack: false })
                .await
                .expect("basic.get");
            if let Some(message) = got {
                deliveries.set(deliveries.get() + 1);
                message
                    .delivery
                    .acker
                    .nack(BasicNackOptions {
                        requeue: true,
                        ..Default::default()
                    })
                    .await
                    .expect("nack with requeue");
            }
            broker.ready_count(&dead_letters).await == 1
        },
    )
    .await;
    let deliveries = deliveries.get();
    eprintln!("dead-lettered after {deliveries} deliveries (limit {limit})");
    assert!(deliveries > limit, "{deliveries} deliveries, limit {limit}");
    assert_eq!(broker.ready_count(queue).await, 0);
    let mut dead = broker.take(&dead_letters, 1, WAIT).await;
    assert_eq!(dead.len(), 1);
    let dead = dead.remove(0);
    {
        let death = first_death(&dead.delivery.properties);
        assert_eq!(death("queue"), queue);
        assert_eq!(death("reason"), "delivery_limit");
    }
    amqp::close(&connection, Duration::from_secs(5), "done").await;
    dead
}

/// A field of the first `x-death` entry, as text.
pub(crate) fn first_death(properties: &lapin::BasicProperties) -> impl Fn(&str) -> String + '_ {
    move |field| {
        let headers = properties.headers().as_ref().expect("headers");
        let Some(AMQPValue::FieldArray(deaths)) = headers.inner().get("x-death") else {
            panic!("no x-death header: {headers:?}");
        };
        let Some(AMQPValue::FieldTable(death)) = deaths.as_slice().first() else {
            panic!("an empty x-death: {deaths:?}");
        };
        match death.inner().get(field) {
            Some(AMQPValue::LongString(text)) => String::from_utf8_lossy(text.as_bytes()).into(),
            other => panic!("x-death {field}: {other:?}"),
        }
    }
}

/// corral 0.2 declared the unroutable queue with `x-queue-type` alone, and
/// RabbitMQ refuses to redeclare it with dead-lettering: both binaries go on
/// with it as it is (ready, a webhook stored) and log the upgrade step; once
/// an operator deletes it (while empty, as the step says) the next connect
/// declares it with dead-lettering.
#[tokio::test]
async fn an_older_unroutable_queue_is_used_as_it_is_until_the_logged_step_replaces_it() {
    let logs = CapturedLogs::install();
    let settings = config::amqp(corral_testkit::unique_name("legacy"));
    let topology = Topology::new(&settings);
    /// Deletes the prefix's topology however the test ends.
    struct Cleanup(String);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let prefix = self.0.clone();
            corral_testkit::block_on_cleanup(async move { delete_prefix(&prefix).await });
        }
    }
    let _cleanup = Cleanup(settings.prefix.clone());
    let connection = amqp::connect(&settings, "corral-tests legacy")
        .await
        .expect("connecting");
    let channel = connection.create_channel().await.expect("a channel");
    let mut quorum = FieldTable::default();
    quorum.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .queue_declare(topology.unroutable_queue().as_str().into(), durable, quorum)
        .await
        .expect("declaring the queue as 0.2 did");

    let db = TestDatabase::new().await;
    let worker = RunningWorker::start(config::worker(&db.url, &settings.prefix)).await;
    let ingress = RunningIngress::start(config::ingress(&settings.prefix, TOKEN)).await;
    accepted(ingress.post("sms", fixtures::SMS_SUCCESS).await).await;
    wait_count(&db.client().await, EVENTS, 1).await;
    let unroutable = topology.unroutable_queue();
    let step = format!("rabbitmqctl delete_queue {unroutable}");
    let warned = logs
        .lines()
        .iter()
        .any(|line| line.contains("WARN") && line.contains(&format!("`{step}`")));
    assert!(warned, "the upgrade step is logged: {:#?}", logs.lines());
    assert_eq!(
        queue_arguments(&unroutable).len(),
        1,
        "the older queue is used as it is"
    );

    // The step: while it is empty, delete it.
    let listed = rabbitmqctl(&["list_queues", "-q", "-p", "/", "name", "messages"]);
    assert!(
        listed
            .lines()
            .any(|line| line == format!("{unroutable}\t0")),
        "empty: {listed}"
    );
    let args: Vec<&str> = step.split(' ').skip(1).collect();
    rabbitmqctl(&args);
    // The worker's consumer of the deleted queue reconnects and declares it.
    let expected = dead_lettering(&topology, settings.delivery_limit);
    wait::until_true("the unroutable queue declared anew", WAIT, || async {
        listed_arguments(&unroutable).as_ref() == Some(&expected)
    })
    .await;
    accepted(ingress.post("rvm", fixtures::SMS_FAILURE).await).await;
    wait_count(&db.client().await, EVENTS, 2).await;
    worker.stop().await.expect("the worker stops");
    ingress.stop().await.expect("the ingress stops");
    amqp::close(&connection, Duration::from_secs(5), "done").await;
}
