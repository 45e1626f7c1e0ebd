//! The names corral uses on the broker, and declaring them.

use std::time::Duration;

use lapin::{
    Channel, Connection, ExchangeKind,
    options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable, ShortString},
};

use super::{AmqpError, deadline};
use crate::config::AmqpSettings;

/// The names corral uses on the broker, all under one prefix.
#[derive(Debug, Clone)]
pub struct Topology {
    /// `CORRAL_AMQP_PREFIX`: keeps tests and tenants apart on one broker.
    pub(super) prefix: String,
    /// `x-delivery-limit` of the main queue.
    delivery_limit: u32,
    /// `CORRAL_AMQP_QUEUES`: how many queues share the webhooks.
    pub(super) queues: u16,
}

impl Topology {
    /// The topology for `settings`.
    pub fn new(settings: &AmqpSettings) -> Self {
        Self {
            prefix: settings.prefix.clone(),
            delivery_limit: settings.delivery_limit,
            queues: settings.queues,
        }
    }

    /// Topic exchange webhooks are published to.
    pub fn exchange(&self) -> String {
        format!("{}.webhooks", self.prefix)
    }

    /// Quorum queue the worker consumes: the only one, or shard 0
    /// ([`Topology::queues`]).
    pub fn queue(&self) -> String {
        format!("{}.delivery-status", self.prefix)
    }

    /// Exchange the main queue dead-letters to.
    pub fn dead_letter_exchange(&self) -> String {
        format!("{}.dead-letter", self.prefix)
    }

    /// Queue holding dead-lettered messages until an operator replays them.
    pub fn dead_letter_queue(&self) -> String {
        format!("{}.dead-letter", self.prefix)
    }

    /// The webhooks exchange's alternate exchange: whatever the webhooks
    /// exchange cannot route (its queue or binding deleted under live
    /// traffic) goes here instead of back to the publisher.
    pub fn unroutable_exchange(&self) -> String {
        format!("{}.unroutable", self.prefix)
    }

    /// Quorum queue behind [`Topology::unroutable_exchange`]; the worker
    /// consumes it like the main queue, and it dead-letters like the main
    /// queue ([`Topology::queue_arguments`]).
    pub fn unroutable_queue(&self) -> String {
        format!("{}.unroutable", self.prefix)
    }

    /// Durable fan-out exchange the worker publishes result events to
    /// (`CORRAL_RESULT_EVENTS`); customers bind their own queues to it.
    pub fn delivery_results(&self) -> String {
        format!("{}.delivery-results", self.prefix)
    }

    /// Declares [`Topology::delivery_results`] on `channel` (idempotent); no
    /// queue: who listens is the customer's choice.
    pub async fn declare_delivery_results(
        &self,
        channel: &Channel,
        timeout: Duration,
    ) -> Result<(), AmqpError> {
        deadline(
            "declaring the delivery-results exchange",
            timeout,
            channel.exchange_declare(
                self.delivery_results().into(),
                ExchangeKind::Fanout,
                ExchangeDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            ),
        )
        .await
    }

    /// Arguments of the main queue, and of the unroutable queue: the worker
    /// consumes both the same way, so a message it cannot settle on either
    /// is dead-lettered after as many deliveries. The limit is explicit:
    /// RabbitMQ 3.x has no default and would deliver it forever, 4.x defaults
    /// to 20 and, without a dead-letter exchange, drops it. Any difference
    /// from an existing queue of the same name makes the broker refuse the
    /// declaration (PRECONDITION_FAILED), which [`Topology::declare`] reports
    /// as such (the main queue) or works around (an older unroutable queue).
    pub(super) fn queue_arguments(&self) -> FieldTable {
        let mut args = FieldTable::default();
        args.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
        args.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongLongInt(i64::from(self.delivery_limit)),
        );
        args.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(self.dead_letter_exchange().into()),
        );
        // At-least-once dead-lettering keeps a message in the source queue until
        // the dead-letter queue has confirmed it; RabbitMQ requires
        // reject-publish overflow for it, which also makes a queue capped by
        // a policy refuse a publish (ingress spools it) rather than drop its
        // oldest message, answered 200 long ago.
        args.insert(
            "x-dead-letter-strategy".into(),
            AMQPValue::LongString("at-least-once".into()),
        );
        args.insert(
            "x-overflow".into(),
            AMQPValue::LongString("reject-publish".into()),
        );
        args
    }

    /// Arguments of the webhooks exchange, and of the shards exchange. An
    /// exchange declared by an older corral lacks `alternate-exchange`, and
    /// RabbitMQ refuses to redeclare it with a different one
    /// (PRECONDITION_FAILED).
    pub(super) fn exchange_arguments(&self) -> FieldTable {
        let mut args = FieldTable::default();
        args.insert(
            "alternate-exchange".into(),
            AMQPValue::LongString(self.unroutable_exchange().into()),
        );
        args
    }

    /// A durable fanout exchange.
    async fn declare_fanout(
        &self,
        channel: &Channel,
        exchange: &str,
        timeout: Duration,
    ) -> Result<(), AmqpError> {
        deadline(
            "declaring a fanout exchange",
            timeout,
            channel.exchange_declare(
                exchange.into(),
                ExchangeKind::Fanout,
                ExchangeDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            ),
        )
        .await
    }

    /// Declares a durable queue with `arguments`, or with `passive` checks
    /// that it exists whatever its arguments.
    pub(super) async fn declare_queue(
        channel: &Channel,
        queue: &str,
        arguments: FieldTable,
        passive: bool,
        timeout: Duration,
    ) -> Result<(), AmqpError> {
        deadline(
            "declaring a queue",
            timeout,
            channel.queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    durable: true,
                    passive,
                    ..Default::default()
                },
                arguments,
            ),
        )
        .await
        .map(drop)
    }

    /// Binds `queue` to `exchange` by `routing_key` and `arguments`.
    pub(super) async fn bind_queue(
        channel: &Channel,
        queue: &str,
        exchange: &str,
        routing_key: &str,
        arguments: FieldTable,
        timeout: Duration,
    ) -> Result<(), AmqpError> {
        deadline(
            "binding a queue",
            timeout,
            channel.queue_bind(
                queue.into(),
                exchange.into(),
                ShortString::from(routing_key),
                QueueBindOptions::default(),
                arguments,
            ),
        )
        .await
    }

    /// Binds `queue` to the fanout `exchange`.
    async fn bind_fanout(
        channel: &Channel,
        queue: &str,
        exchange: &str,
        timeout: Duration,
    ) -> Result<(), AmqpError> {
        let none = FieldTable::default();
        Self::bind_queue(channel, queue, exchange, "", none, timeout).await
    }

    /// The dead-letter exchange and queue, then the unroutable ones; returns
    /// the channel to go on with.
    ///
    /// An unroutable queue corral 0.2 declared has no dead-letter arguments
    /// and cannot be redeclared with them: the broker closes the channel
    /// (PRECONDITION_FAILED). corral then goes on with the queue as it is, on
    /// a new channel, and says how to replace it, rather than leave both
    /// binaries unready mid-upgrade.
    async fn declare_fanouts(
        &self,
        connection: &Connection,
        mut channel: Channel,
        timeout: Duration,
    ) -> Result<Channel, AmqpError> {
        let (dead_letters, unroutable) = (self.dead_letter_exchange(), self.unroutable_queue());
        self.declare_fanout(&channel, &dead_letters, timeout)
            .await?;
        let mut quorum = FieldTable::default();
        quorum.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
        Self::declare_queue(&channel, &self.dead_letter_queue(), quorum, false, timeout).await?;
        Self::bind_fanout(&channel, &self.dead_letter_queue(), &dead_letters, timeout).await?;
        self.declare_fanout(&channel, &self.unroutable_exchange(), timeout)
            .await?;
        let declared = Self::declare_queue(
            &channel,
            &unroutable,
            self.queue_arguments(),
            false,
            timeout,
        )
        .await;
        match declared {
            Ok(()) => {}
            Err(err) if err.is_precondition_failed() => {
                tracing::warn!(
                    queue = unroutable,
                    "the unroutable queue exists with other arguments (as corral 0.2 declared \
                     it, without dead-lettering): a message that keeps failing there is dropped \
                     at RabbitMQ 4.x's default delivery limit, or comes back forever on 3.x, \
                     instead of going to {}. Delete it while it is empty (it holds only what \
                     the webhooks exchange could not route, normally nothing: `rabbitmqctl \
                     list_queues name messages`) with `rabbitmqctl delete_queue {}` (`-p \
                     <vhost>` outside the default vhost; quorum queues refuse `--if-empty`); \
                     the next connect declares it again with dead-lettering",
                    self.dead_letter_queue(),
                    unroutable,
                );
                channel =
                    deadline("opening a channel", timeout, connection.create_channel()).await?;
                let unchecked = FieldTable::default();
                Self::declare_queue(&channel, &unroutable, unchecked, true, timeout).await?;
            }
            Err(err) => return Err(err),
        }
        Self::bind_fanout(&channel, &unroutable, &self.unroutable_exchange(), timeout).await?;
        Ok(channel)
    }

    /// Declares exchanges, queues and bindings on a new channel of
    /// `connection`, and returns the channel, open; idempotent.
    ///
    /// A webhooks exchange an older corral declared without the alternate
    /// exchange cannot be redeclared with it: the broker closes the channel
    /// (PRECONDITION_FAILED). corral then goes on with the exchange as it is,
    /// on a new channel, and says how to add the safety net, rather than
    /// refusing to start mid-upgrade while older instances still use it
    /// (an older unroutable queue likewise, [`Topology::declare_fanouts`]).
    pub async fn declare(
        &self,
        connection: &Connection,
        timeout: Duration,
    ) -> Result<Channel, AmqpError> {
        let open = deadline("opening a channel", timeout, connection.create_channel());
        let channel = self
            .declare_fanouts(connection, open.await?, timeout)
            .await?;
        let channel = self.declare_exchange(connection, channel, timeout).await?;
        self.declare_queues(&channel, timeout).await?;
        Ok(channel)
    }

    /// Declares the webhooks exchange with its alternate exchange on
    /// `channel`; one an older corral declared without it is kept as it is
    /// (checked, on a new channel: the refusal closed this one).
    async fn declare_exchange(
        &self,
        connection: &Connection,
        mut channel: Channel,
        timeout: Duration,
    ) -> Result<Channel, AmqpError> {
        let exchange = deadline(
            "declaring the webhooks exchange",
            timeout,
            channel.exchange_declare(
                self.exchange().into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                self.exchange_arguments(),
            ),
        )
        .await;
        match exchange {
            Ok(()) => {}
            Err(err) if err.is_precondition_failed() => {
                tracing::warn!(
                    exchange = self.exchange(),
                    "the webhooks exchange was declared by an older corral without the \
                     alternate exchange {}: a webhook it cannot route is refused (503) instead \
                     of kept. Once no older corral runs, delete the exchange (e.g. `rabbitmqadmin \
                     delete exchange name={}`); the next connect declares it again with the \
                     alternate exchange and its binding, and the queue keeps every message",
                    self.unroutable_exchange(),
                    self.exchange(),
                );
                channel =
                    deadline("opening a channel", timeout, connection.create_channel()).await?;
                deadline(
                    "checking the webhooks exchange",
                    timeout,
                    channel.exchange_declare(
                        self.exchange().into(),
                        ExchangeKind::Topic,
                        ExchangeDeclareOptions {
                            passive: true,
                            ..Default::default()
                        },
                        FieldTable::default(),
                    ),
                )
                .await?;
            }
            Err(err) => return Err(err),
        }
        Ok(channel)
    }
}
