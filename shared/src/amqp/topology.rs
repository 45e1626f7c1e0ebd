//! The names corral uses on the broker, and declaring them.

use std::time::Duration;

use lapin::{
    Channel, ExchangeKind,
    options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable, ShortString},
};

use super::{AmqpError, deadline};
use crate::config::AmqpSettings;

/// The names corral uses on the broker, all under one prefix.
#[derive(Debug, Clone)]
pub struct Topology {
    /// `CORRAL_AMQP_PREFIX`: keeps tests and tenants apart on one broker.
    prefix: String,
    /// `x-delivery-limit` of the main queue.
    delivery_limit: u32,
}

impl Topology {
    /// The topology for `settings`.
    pub fn new(settings: &AmqpSettings) -> Self {
        Self {
            prefix: settings.prefix.clone(),
            delivery_limit: settings.delivery_limit,
        }
    }

    /// Topic exchange webhooks are published to.
    pub fn exchange(&self) -> String {
        format!("{}.webhooks", self.prefix)
    }

    /// Quorum queue the worker consumes.
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

    /// Arguments of the main queue. Any difference from an existing queue of
    /// the same name makes the broker refuse the declaration
    /// (PRECONDITION_FAILED), which [`Topology::declare`] reports as such.
    fn queue_arguments(&self) -> FieldTable {
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
        // reject-publish overflow for it.
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

    /// Declares exchanges, queues and bindings; idempotent.
    pub async fn declare(&self, channel: &Channel, timeout: Duration) -> Result<(), AmqpError> {
        let durable_exchange = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        let durable_queue = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        let mut quorum = FieldTable::default();
        quorum.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );

        deadline(
            "declaring the dead-letter exchange",
            timeout,
            channel.exchange_declare(
                self.dead_letter_exchange().into(),
                ExchangeKind::Fanout,
                durable_exchange,
                FieldTable::default(),
            ),
        )
        .await?;
        deadline(
            "declaring the dead-letter queue",
            timeout,
            channel.queue_declare(self.dead_letter_queue().into(), durable_queue, quorum),
        )
        .await?;
        deadline(
            "binding the dead-letter queue",
            timeout,
            channel.queue_bind(
                self.dead_letter_queue().into(),
                self.dead_letter_exchange().into(),
                ShortString::from(""),
                QueueBindOptions::default(),
                FieldTable::default(),
            ),
        )
        .await?;
        deadline(
            "declaring the webhooks exchange",
            timeout,
            channel.exchange_declare(
                self.exchange().into(),
                ExchangeKind::Topic,
                durable_exchange,
                FieldTable::default(),
            ),
        )
        .await?;
        deadline(
            "declaring the delivery-status queue",
            timeout,
            channel.queue_declare(self.queue().into(), durable_queue, self.queue_arguments()),
        )
        .await?;
        deadline(
            "binding the delivery-status queue",
            timeout,
            channel.queue_bind(
                self.queue().into(),
                self.exchange().into(),
                "dropcowboy.#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            ),
        )
        .await?;
        Ok(())
    }
}
