//! A private corner of the shared RabbitMQ for one test.

use std::time::Duration;

use corral_contract::envelope::{self, batch};
use corral_runtime::{
    amqp::{self, AmqpError, Topology},
    config::AmqpSettings,
};
use lapin::{
    BasicProperties, Channel, Connection,
    message::BasicGetMessage,
    options::{
        BasicAckOptions, BasicGetOptions, ConfirmSelectOptions, ExchangeDeleteOptions,
        QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
    },
    types::{AMQPValue, FieldTable},
};

use uuid::Uuid;

use crate::wait;

const TIMEOUT: Duration = Duration::from_secs(10);

/// A test's AMQP prefix, with a connection to inspect it. Dropping it deletes
/// the queues and exchanges the prefix owns.
pub struct TestBroker {
    /// Settings naming the local broker and this test's prefix.
    pub settings: AmqpSettings,
    /// The names under the prefix.
    pub topology: Topology,
    connection: Connection,
    channel: Channel,
}

impl std::fmt::Debug for TestBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestBroker")
            .field("prefix", &self.settings.prefix)
            .finish()
    }
}

impl TestBroker {
    /// A fresh prefix with the topology declared.
    pub async fn new() -> Self {
        Self::with_prefix(crate::unique_name("test")).await
    }

    /// [`TestBroker::new`] under a prefix of the caller's choosing, e.g. one
    /// the documented `^corral\.` permissions cover (`corral.<unique>`); it
    /// must be unique to the test, since dropping deletes what it owns.
    pub async fn with_prefix(prefix: impl Into<String>) -> Self {
        let settings = crate::config::amqp(prefix);
        let topology = Topology::new(&settings);
        let (connection, channel) = amqp::connect_and_declare(&settings, &topology, "corral-tests")
            .await
            .expect("the test suite needs RabbitMQ on 127.0.0.1:5672 (scripts/services)");
        amqp::deadline(
            "confirm mode",
            TIMEOUT,
            channel.confirm_select(ConfirmSelectOptions::default()),
        )
        .await
        .expect("confirm mode");
        Self {
            settings,
            topology,
            connection,
            channel,
        }
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.settings.prefix
    }

    /// The main (delivery-status) queue of this prefix.
    pub fn queue(&self) -> String {
        self.topology.queue()
    }

    /// Deletes `queue` under whatever is using it, as an operator might by
    /// mistake. The next (re)connect of ingress or worker declares it again.
    pub async fn delete_queue(&self, queue: &str) {
        amqp::deadline(
            "queue.delete",
            TIMEOUT,
            self.channel
                .queue_delete(queue.into(), QueueDeleteOptions::default()),
        )
        .await
        .expect("deleting the queue");
    }

    /// Deletes `exchange` under whatever is publishing to it, as an operator
    /// might by mistake: the broker closes the channel of the next publish to
    /// it (404). The next (re)connect of ingress declares it again.
    pub async fn delete_exchange(&self, exchange: &str) {
        amqp::deadline(
            "exchange.delete",
            TIMEOUT,
            self.channel
                .exchange_delete(exchange.into(), ExchangeDeleteOptions::default()),
        )
        .await
        .expect("deleting the exchange");
    }

    /// Removes the main queue's binding, as an operator might by mistake:
    /// the webhooks exchange can then route nothing to it.
    pub async fn unbind_main_queue(&self) {
        self.unbind(
            &self.topology.queue(),
            &self.topology.exchange(),
            "dropcowboy.#",
        )
        .await;
    }

    /// Removes the binding of `queue` to `exchange` under `routing_key`.
    pub async fn unbind(&self, queue: &str, exchange: &str, routing_key: &str) {
        amqp::deadline(
            "queue.unbind",
            TIMEOUT,
            self.channel.queue_unbind(
                queue.into(),
                exchange.into(),
                routing_key.into(),
                FieldTable::default(),
            ),
        )
        .await
        .expect("unbinding a queue");
    }

    /// Binds to `routing_key` an extra queue that refuses every message
    /// (`x-max-length` 0 with `reject-publish`), so the broker nacks every
    /// publish routed there — and only those. The queue is exclusive to this
    /// broker's connection, so it goes when the test does.
    pub async fn refuse(&self, routing_key: &str) {
        let queue = format!("{}.refuse.{routing_key}", self.prefix());
        let mut args = FieldTable::default();
        args.insert("x-max-length".into(), AMQPValue::LongInt(0));
        args.insert(
            "x-overflow".into(),
            AMQPValue::LongString("reject-publish".into()),
        );
        let options = QueueDeclareOptions {
            exclusive: true,
            ..Default::default()
        };
        amqp::deadline(
            "declaring a refusing queue",
            TIMEOUT,
            self.channel
                .queue_declare(queue.as_str().into(), options, args),
        )
        .await
        .expect("declaring the refusing queue");
        amqp::deadline(
            "binding the refusing queue",
            TIMEOUT,
            self.channel.queue_bind(
                queue.as_str().into(),
                self.topology.exchange().into(),
                routing_key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            ),
        )
        .await
        .expect("binding the refusing queue");
    }

    /// Declares a queue of this test's own, `<prefix>.results.<name>`, bound
    /// to the result events' fan-out exchange (declared first, as the
    /// worker's relay does), as a customer's service would. Exclusive to this
    /// broker's connection, so it goes when the test does.
    pub async fn bind_results(&self, name: &str) -> String {
        self.bind_results_with(name, FieldTable::default()).await
    }

    /// [`TestBroker::bind_results`] with queue arguments, e.g. a length
    /// limit (`x-max-length`, `x-overflow`).
    pub async fn bind_results_with(&self, name: &str, arguments: FieldTable) -> String {
        self.topology
            .declare_delivery_results(&self.channel, TIMEOUT)
            .await
            .expect("declaring the delivery-results exchange");
        let queue = format!("{}.results.{name}", self.prefix());
        let options = QueueDeclareOptions {
            exclusive: true,
            ..Default::default()
        };
        amqp::deadline(
            "declaring a results queue",
            TIMEOUT,
            self.channel
                .queue_declare(queue.as_str().into(), options, arguments),
        )
        .await
        .expect("declaring the results queue");
        amqp::deadline(
            "binding the results queue",
            TIMEOUT,
            self.channel.queue_bind(
                queue.as_str().into(),
                self.topology.delivery_results().into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            ),
        )
        .await
        .expect("binding the results queue");
        queue
    }

    /// Takes messages off `queue` until at least `count` have been taken, or
    /// panics once `timeout` has passed. Returns every message taken (more
    /// than `count` if more were there), so a caller can assert the exact number.
    pub async fn take(&self, queue: &str, count: usize, timeout: Duration) -> Vec<BasicGetMessage> {
        let taken = std::cell::RefCell::new(Vec::new());
        let taken_ref = &taken;
        wait::until_true(
            &format!("{count} messages in {queue}"),
            timeout,
            move || async move {
                while let Some(message) = self.get(queue).await {
                    taken_ref.borrow_mut().push(message);
                }
                taken_ref.borrow().len() >= count
            },
        )
        .await;
        taken.into_inner()
    }

    /// Messages ready in a queue (passive declare).
    pub async fn ready_count(&self, queue: &str) -> u32 {
        self.declared(queue).await.message_count()
    }

    /// Consumers on a queue (passive declare).
    pub async fn consumer_count(&self, queue: &str) -> u32 {
        self.declared(queue).await.consumer_count()
    }

    async fn declared(&self, queue: &str) -> lapin::Queue {
        amqp::deadline(
            "passive queue declare",
            TIMEOUT,
            self.channel.queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            ),
        )
        .await
        .expect("passive declare")
    }

    /// Takes one message off `queue` and acknowledges it, or `None` if empty.
    pub async fn get(&self, queue: &str) -> Option<BasicGetMessage> {
        let message = amqp::deadline(
            "basic.get",
            TIMEOUT,
            self.channel
                .basic_get(queue.into(), BasicGetOptions { no_ack: false }),
        )
        .await
        .expect("basic.get")?;
        amqp::deadline(
            "ack",
            TIMEOUT,
            message.delivery.acker.ack(BasicAckOptions::default()),
        )
        .await
        .expect("ack");
        Some(message)
    }

    /// Takes every message currently in `queue`.
    pub async fn drain(&self, queue: &str) -> Vec<BasicGetMessage> {
        let mut messages = Vec::new();
        while let Some(message) = self.get(queue).await {
            messages.push(message);
        }
        messages
    }

    /// Publishes `webhooks` as one envelope-2 message, packed, routed and
    /// with the properties ingress gives one, and waits for the confirm.
    /// Returns the message's own `message_id` (each webhook keeps its id).
    pub async fn publish_batch(&self, webhooks: &[batch::Packing<'_>]) -> Uuid {
        let message_id = Uuid::now_v7();
        let message = envelope::batch_message(message_id, webhooks, envelope::Charset::Any);
        self.publish(
            message.routing_key,
            &message.body,
            amqp::properties(&message.metadata),
        )
        .await;
        message_id
    }

    /// Publishes `body` to the webhooks exchange with `routing_key` and waits
    /// for the confirm, as ingress would (tests of the worker start here).
    pub async fn publish(&self, routing_key: &str, body: &[u8], properties: BasicProperties) {
        amqp::publish_confirmed(
            &self.channel,
            &self.topology.exchange(),
            routing_key,
            body,
            properties,
            TIMEOUT,
        )
        .await
        .expect("the broker takes the test publish (acked and routed)");
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        let prefix = self.settings.prefix.clone();
        crate::block_on_cleanup(async move { delete_prefix(&prefix).await });
        let _ = &self.connection;
    }
}

/// Deletes the queues and exchanges of an AMQP prefix (best effort: a test's
/// or a benchmark's clean-up must not fail the run).
pub async fn delete_prefix(prefix: &str) {
    let settings = crate::config::amqp(prefix);
    let topology = Topology::new(&settings);
    if let Ok((connection, channel)) =
        amqp::connect_and_declare(&settings, &topology, "corral-tests-cleanup").await
    {
        // Shards a test declared past the one queue.
        let shards = topology.leftover_queues(&connection, TIMEOUT).await;
        for queue in shards.unwrap_or_default() {
            let _ = amqp::deadline(
                "deleting a shard",
                TIMEOUT,
                channel.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()),
            )
            .await;
        }
        let _ = delete_topology(&topology, &channel, TIMEOUT).await;
        amqp::close(&connection, TIMEOUT, "cleanup").await;
    }
}

/// Deletes the queues, then the exchanges, that [`Topology::declare`] makes
/// under the topology's prefix, and the result events' exchange.
pub async fn delete_topology(
    topology: &Topology,
    channel: &Channel,
    timeout: Duration,
) -> Result<(), AmqpError> {
    let queues = topology.queues().into_iter();
    for queue in queues.chain([topology.dead_letter_queue(), topology.unroutable_queue()]) {
        amqp::deadline(
            "deleting a queue",
            timeout,
            channel.queue_delete(queue.into(), QueueDeleteOptions::default()),
        )
        .await?;
    }
    // The webhooks exchange first: it names the unroutable one as its alternate.
    // The result events' exchange last: only a worker with result events on
    // declares it.
    for exchange in [
        topology.exchange(),
        topology.shard_exchange(),
        topology.dead_letter_exchange(),
        topology.unroutable_exchange(),
        topology.delivery_results(),
    ] {
        amqp::deadline(
            "deleting an exchange",
            timeout,
            channel.exchange_delete(exchange.into(), ExchangeDeleteOptions::default()),
        )
        .await?;
    }
    Ok(())
}

/// The node leading each of `queues` (e.g. [`Topology::queues`]), as
/// `rabbitmqctl list_queues name leader` says: `node` names the node to ask
/// (`-n`, for a cluster the test started), `None` the local default one. A
/// queue the broker does not list is left out.
pub fn queue_leaders(
    node: Option<&str>,
    queues: &[String],
) -> std::collections::BTreeMap<String, String> {
    let mut command = std::process::Command::new("rabbitmqctl");
    if let Some(node) = node {
        command.args(["-n", node]);
    }
    let args = ["list_queues", "-q", "-p", "/", "name", "leader"];
    let output = command
        .args(args)
        .args(["--formatter", "json"])
        .output()
        .expect("rabbitmqctl (RabbitMQ's CLI) on PATH");
    assert!(
        output.status.success(),
        "rabbitmqctl list_queues: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let listed: Vec<serde_json::Value> =
        serde_json::from_slice(&output.stdout).expect("rabbitmqctl's JSON");
    listed
        .into_iter()
        .filter_map(|entry| {
            let name = entry["name"].as_str()?.to_owned();
            let leader = entry["leader"].as_str()?.to_owned();
            queues.contains(&name).then_some((name, leader))
        })
        .collect()
}
