//! Sharded queues (`CORRAL_AMQP_QUEUES`): the webhooks spread over N quorum
//! queues through the `<prefix>.shards` headers exchange, every one stored
//! once; a customer's own binding of `dropcowboy.sms` still gets every SMS;
//! a shard dead-letters and the unroutable path stores as before; one queue
//! is today's topology; and going from three queues back to one loses
//! nothing (the worker drains the shards left behind).

use corral_runtime::{
    amqp::{self, SHARD_HEADER, Topology},
    config::AmqpSettings,
};
use corral_testkit::{
    apps::{RunningIngress, RunningWorker, TOKEN},
    broker::TestBroker,
    config,
    database::TestDatabase,
    fixtures,
};
use lapin::{
    BasicProperties,
    options::{BasicGetOptions, QueueBindOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable},
};
use serde_json::{Value, json};

use crate::{
    ingress::helpers::{CapturedLogs, accepted},
    topology::{dead_lettering, queue_arguments, rabbitmqctl, returned_until_dead_lettered},
    worker::helpers::{DUPLICATE, EVENTS, STORED, count, wait_count},
};

/// `broker`'s settings with `queues` queues.
fn sharded(broker: &TestBroker, queues: u16) -> AmqpSettings {
    let mut settings = broker.settings.clone();
    settings.queues = queues;
    settings
}

async fn ingress(broker: &TestBroker, queues: u16) -> RunningIngress {
    let mut config = config::ingress(broker.prefix(), TOKEN);
    config.amqp.queues = queues;
    RunningIngress::start(config).await
}

async fn worker(broker: &TestBroker, db: &TestDatabase, queues: u16) -> RunningWorker {
    let mut config = crate::worker::helpers::config(&db.url, broker.prefix());
    config.amqp.queues = queues;
    RunningWorker::start(config).await
}

/// Posts `count` distinct SMS webhooks, one at a time (so each is a message
/// of its own), numbered from `first`.
async fn post_sms(ingress: &RunningIngress, first: usize, count: usize) {
    for n in first..first + count {
        let body = fixtures::delivery_status(&format!("drop-{n}"), "2026-12-07T10:00:00Z", "", "f");
        accepted(ingress.post("sms", body).await).await;
    }
}

/// What `rabbitmqctl list_<what>` says of the entities under `prefix`, as
/// JSON objects with `fields`.
fn listed(what: &str, fields: &[&str], prefix: &str) -> Vec<Value> {
    let mut args = vec![what, "-q", "-p", "/"];
    args.extend(fields);
    args.extend(["--formatter", "json"]);
    let all: Vec<Value> = serde_json::from_str(&rabbitmqctl(&args)).expect("rabbitmqctl's JSON");
    let mine = |value: &Value| value.as_str().is_some_and(|name| name.starts_with(prefix));
    let mut found: Vec<Value> = all
        .into_iter()
        .filter(|entry| mine(&entry[fields[0]]) || mine(&entry["destination_name"]))
        .collect();
    found.sort_by_key(Value::to_string);
    found
}

/// The bindings under `prefix`: source, destination, routing key.
fn bindings(prefix: &str) -> Vec<(String, String, String)> {
    let fields = ["source_name", "destination_name", "routing_key"];
    listed("list_bindings", &fields, prefix)
        .into_iter()
        .filter(|binding| binding["source_name"] != "")
        .map(|binding| {
            let text = |field: &str| binding[field].as_str().expect("text").to_owned();
            (text(fields[0]), text(fields[1]), text(fields[2]))
        })
        .collect()
}

/// With three queues, ingress spreads its messages over them in turn, a
/// customer's queue bound with `dropcowboy.sms` gets every SMS once, and the
/// worker consumes every shard and stores each webhook once.
#[tokio::test]
async fn three_queues_share_the_webhooks_and_a_customer_binding_still_gets_every_sms() {
    let broker = TestBroker::new().await;
    let topology = Topology::new(&sharded(&broker, 3));
    let connection = amqp::connect(&broker.settings, "corral-tests customer")
        .await
        .expect("connecting");
    let channel = connection.create_channel().await.expect("a channel");
    let exclusive = QueueDeclareOptions {
        exclusive: true,
        ..Default::default()
    };
    let customer = channel
        .queue_declare("".into(), exclusive, FieldTable::default())
        .await
        .expect("the customer's queue");
    channel
        .queue_bind(
            customer.name().clone(),
            topology.exchange().into(),
            "dropcowboy.sms".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("the customer's binding");

    let ingress = ingress(&broker, 3).await;
    post_sms(&ingress, 0, 30).await;
    let mut spread = Vec::new();
    for queue in topology.queues() {
        spread.push(broker.ready_count(&queue).await);
    }
    eprintln!("30 messages over {:?}: {spread:?}", topology.queues());
    assert_eq!(spread, [10, 10, 10], "in turn, each shard a third");
    assert_eq!(broker.ready_count(&topology.unroutable_queue()).await, 0);
    let mut drops = Vec::new();
    while let Some(got) = channel
        .basic_get(customer.name().clone(), BasicGetOptions { no_ack: true })
        .await
        .expect("basic.get")
    {
        assert_eq!(got.delivery.routing_key.as_str(), "dropcowboy.sms");
        // The drop ids the message carries, whatever its envelope.
        let text = String::from_utf8_lossy(&got.delivery.data).into_owned();
        for tail in text.split("drop-").skip(1) {
            let digits: String = tail.chars().take_while(char::is_ascii_digit).collect();
            drops.push(digits);
        }
    }
    drops.sort();
    let got = drops.len();
    drops.dedup();
    assert_eq!(
        (got, drops.len()),
        (30, 30),
        "the customer got every SMS, once"
    );

    let db = TestDatabase::new().await;
    let worker = worker(&broker, &db, 3).await;
    wait_count(&db.client().await, EVENTS, 30).await;
    worker.wait_ready(true).await;
    for queue in topology.queues() {
        assert_eq!(broker.consumer_count(&queue).await, 1, "{queue} consumed");
        assert_eq!(broker.ready_count(&queue).await, 0, "{queue} drained");
    }
    let metrics = worker.metrics().await;
    assert_eq!(metrics.get(STORED), 30.0);
    assert_eq!(metrics.get(DUPLICATE), 0.0);
    worker.stop().await.expect("the worker stops");
    ingress.stop().await.expect("the ingress stops");
    amqp::close(&connection, std::time::Duration::from_secs(5), "done").await;
}

/// One queue is the topology corral always had: the same queues, exchanges,
/// arguments and bindings, no shards exchange. Three add the shards
/// exchange (internal, headers, the unroutable exchange as alternate) with
/// the shards bound to it, shards past 0 with the balanced leader locator,
/// and route the webhooks there instead of to the queue directly.
#[tokio::test]
async fn one_queue_is_the_topology_corral_always_had_and_three_route_through_the_shards() {
    let broker = TestBroker::new().await;
    let (prefix, topology) = (broker.prefix(), &broker.topology);
    let names = |what: &str| {
        listed(what, &["name"], prefix)
            .into_iter()
            .map(|entry| entry["name"].as_str().expect("a name").to_owned())
            .collect::<Vec<_>>()
    };
    let mut queues = vec![
        topology.dead_letter_queue(),
        topology.queue(),
        topology.unroutable_queue(),
    ];
    queues.sort();
    assert_eq!(names("list_queues"), queues);
    let dead_lettering = dead_lettering(topology, broker.settings.delivery_limit);
    assert_eq!(queue_arguments(&topology.queue()), dead_lettering);
    assert!(!names("list_exchanges").contains(&topology.shard_exchange()));
    let direct = (topology.exchange(), topology.queue(), "dropcowboy.#".into());
    assert!(bindings(prefix).contains(&direct));

    let settings = sharded(&broker, 3);
    let sharded = Topology::new(&settings);
    let (connection, _) = amqp::connect_and_declare(&settings, &sharded, "corral-tests")
        .await
        .expect("declaring three queues");
    assert_eq!(
        queue_arguments(&topology.queue()),
        dead_lettering,
        "shard 0 unchanged"
    );
    let mut balanced = dead_lettering.clone();
    balanced.insert("x-queue-leader-locator".into(), json!("balanced"));
    for queue in &sharded.queues()[1..] {
        assert_eq!(&queue_arguments(queue), &balanced, "{queue}");
    }
    // Why shard 0 goes without it: RabbitMQ (3.10 as 4.x) refuses to add
    // the argument to a queue that exists without it.
    let channel = connection.create_channel().await.expect("a channel");
    let probe = format!("{prefix}.probe");
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let mut quorum = FieldTable::default();
    quorum.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    channel
        .queue_declare(probe.as_str().into(), durable, quorum.clone())
        .await
        .expect("a quorum queue");
    quorum.insert(
        "x-queue-leader-locator".into(),
        AMQPValue::LongString("balanced".into()),
    );
    let redeclared = channel
        .queue_declare(probe.as_str().into(), durable, quorum)
        .await
        .map(drop);
    let refused = amqp::AmqpError::Broker {
        operation: "redeclaring",
        source: redeclared.expect_err("a new argument on an existing queue is refused"),
    };
    assert!(refused.is_precondition_failed(), "{refused:?}");
    broker.delete_queue(&probe).await;
    // One node here: it leads every shard.
    let leaders = corral_testkit::broker::queue_leaders(None, &sharded.queues());
    assert_eq!(leaders.len(), 3, "{leaders:?}");
    let exchanges = listed(
        "list_exchanges",
        &["name", "type", "internal", "arguments"],
        prefix,
    );
    let shards = exchanges
        .iter()
        .find(|exchange| exchange["name"] == sharded.shard_exchange().as_str())
        .expect("the shards exchange");
    assert_eq!(shards["type"], "headers");
    assert_eq!(shards["internal"], true);
    assert_eq!(
        shards["arguments"],
        json!([[
            "alternate-exchange",
            "longstr",
            sharded.unroutable_exchange()
        ]])
    );
    let routes = bindings(prefix);
    assert!(!routes.contains(&direct), "no direct route: {routes:#?}");
    let via = (
        sharded.exchange(),
        sharded.shard_exchange(),
        "dropcowboy.#".into(),
    );
    assert!(routes.contains(&via), "{routes:#?}");
    for queue in sharded.queues() {
        let bound = (sharded.shard_exchange(), queue.clone(), String::new());
        assert!(routes.contains(&bound), "{queue}: {routes:#?}");
    }
    amqp::close(&connection, std::time::Duration::from_secs(5), "done").await;
}

/// A message on a shard that keeps failing is dead-lettered from that shard
/// like from the one queue; a message without a shard header (as an older
/// ingress publishes it) goes to the unroutable queue, and the worker
/// stores it from there.
#[tokio::test]
async fn a_shard_dead_letters_and_a_message_without_a_shard_is_stored_through_the_unroutable_queue()
{
    let broker = TestBroker::new().await;
    let topology = Topology::new(&sharded(&broker, 3));
    let (connection, _) =
        amqp::connect_and_declare(&sharded(&broker, 3), &topology, "corral-tests")
            .await
            .expect("declaring three queues");
    let metadata = |id| corral_contract::envelope::Metadata::single(id, chrono::Utc::now());
    let mut headers = FieldTable::default();
    headers.insert(SHARD_HEADER.into(), AMQPValue::LongString("2".into()));
    let on_shard_2 = |properties: BasicProperties| properties.with_headers(headers.clone());
    let failing = fixtures::delivery_status("drop-dead", "2026-12-07T10:00:00Z", "", "f");
    let properties = on_shard_2(amqp::properties(&metadata(uuid::Uuid::now_v7())));
    broker
        .publish("dropcowboy.sms", failing.as_bytes(), properties)
        .await;
    let shard = topology.shard_queue(2);
    assert_eq!(broker.ready_count(&shard).await, 1, "routed by its header");
    let dead = returned_until_dead_lettered(&broker, &shard).await;
    assert_eq!(dead.delivery.data, failing.as_bytes());

    let db = TestDatabase::new().await;
    let worker = worker(&broker, &db, 3).await;
    let older = fixtures::delivery_status("drop-older", "2026-12-07T10:00:00Z", "", "f");
    let properties = amqp::properties(&metadata(uuid::Uuid::now_v7()));
    broker
        .publish("dropcowboy.sms", older.as_bytes(), properties)
        .await;
    wait_count(&db.client().await, EVENTS, 1).await;
    let metrics = worker.metrics().await;
    assert_eq!(metrics.get("corral_worker_unroutable_total"), 1.0);
    worker.stop().await.expect("the worker stops");
    amqp::close(&connection, std::time::Duration::from_secs(5), "done").await;
}

/// From three queues back to one: what the shards past 0 hold is consumed
/// by the worker (which logs how to delete them once empty), what the
/// one-queue ingress publishes reaches shard 0 once, whichever bindings
/// three queues left, and every webhook is stored exactly once.
#[tokio::test]
async fn going_from_three_queues_to_one_loses_nothing() {
    let logs = CapturedLogs::install();
    let broker = TestBroker::new().await;
    let topology = Topology::new(&sharded(&broker, 3));
    let three = ingress(&broker, 3).await;
    post_sms(&three, 0, 30).await;
    three.stop().await.expect("the ingress stops");

    let one = ingress(&broker, 1).await;
    post_sms(&one, 30, 6).await;
    assert_eq!(
        broker.ready_count(&topology.queue()).await,
        16,
        "10 + 6, once each"
    );
    assert_eq!(broker.ready_count(&topology.unroutable_queue()).await, 0);
    let db = TestDatabase::new().await;
    let worker = worker(&broker, &db, 1).await;
    wait_count(&db.client().await, EVENTS, 36).await;
    for queue in topology.queues() {
        assert_eq!(broker.ready_count(&queue).await, 0, "{queue} drained");
    }
    let client = db.client().await;
    let distinct = "SELECT count(DISTINCT drop_id) FROM delivery_events";
    assert_eq!(count(&client, distinct).await, 36);
    let warned = logs.lines().iter().any(|line| {
        line.contains("WARN") && line.contains(&topology.shard_queue(2)) && line.contains("delete")
    });
    assert!(
        warned,
        "the left-over shards are logged: {:#?}",
        logs.lines()
    );
    worker.stop().await.expect("the worker stops");
    one.stop().await.expect("the ingress stops");
}
