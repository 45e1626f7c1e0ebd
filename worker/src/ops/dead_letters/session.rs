//! The channel the dead-letter commands work on: its own connection in
//! confirm mode, checked passively, and the two moves a message can make —
//! back to the webhooks exchange (replay) or to the tail of the dead-letter
//! queue (kept) — each acknowledged only after the copy is confirmed. Both go
//! through corral's own exchanges: the documented broker permissions
//! (`^corral\.`) do not cover the default exchange.

use std::time::Duration;

use corral_runtime::{
    amqp::{self, Topology, deadline},
    config::AmqpSettings,
    error_chain,
};
use lapin::{
    BasicProperties, Channel, Connection, ExchangeKind,
    message::Delivery,
    options::{BasicAckOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable},
};

use crate::ops::{MoveError, OpsError};

/// Header a message gets when it is moved to the tail of the dead-letter queue
/// without an `x-death` header to remember its routing key (a message someone
/// published there by hand): the routing key it will be replayed with.
pub(super) const ROUTING_KEY_HEADER: &str = "x-corral-routing-key";

/// Broker-owned header that counts deliveries from the queue a message was
/// in; it means nothing on a copy, so a replay drops it.
const DELIVERY_COUNT_HEADER: &str = "x-delivery-count";

/// A confirm-mode channel on its own connection, and the names.
pub(super) struct Session {
    connection: Connection,
    pub(super) channel: Channel,
    pub(super) topology: Topology,
    pub(super) timeout: Duration,
}

impl Session {
    /// Connects and checks (passively: an operator command never creates
    /// topology) that the queue and the exchanges exist.
    pub(super) async fn open(settings: &AmqpSettings) -> Result<(Self, u32), OpsError> {
        let timeout = settings.connect_timeout();
        let connection = amqp::connect(settings, "corral-worker ops").await?;
        let session = Self {
            channel: deadline("opening a channel", timeout, connection.create_channel()).await?,
            connection,
            topology: Topology::new(settings),
            timeout,
        };
        match session.check().await {
            Ok(count) => Ok((session, count)),
            Err(err) => {
                session.close().await;
                Err(err)
            }
        }
    }

    async fn check(&self) -> Result<u32, OpsError> {
        let passive_queue = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let dead_letters = self.topology.dead_letter_queue();
        let declared = deadline(
            "checking the dead-letter queue",
            self.timeout,
            self.channel.queue_declare(
                dead_letters.as_str().into(),
                passive_queue,
                FieldTable::default(),
            ),
        )
        .await
        .map_err(|source| OpsError::Missing {
            name: dead_letters,
            source,
        })?;
        for (what, exchange, kind) in [
            (
                "checking the webhooks exchange",
                self.topology.exchange(),
                ExchangeKind::Topic,
            ),
            (
                "checking the dead-letter exchange",
                self.topology.dead_letter_exchange(),
                ExchangeKind::Fanout,
            ),
        ] {
            deadline(
                what,
                self.timeout,
                self.channel.exchange_declare(
                    exchange.as_str().into(),
                    kind,
                    ExchangeDeclareOptions {
                        passive: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                ),
            )
            .await
            .map_err(|source| OpsError::Missing {
                name: exchange,
                source,
            })?;
        }
        deadline(
            "confirm mode",
            self.timeout,
            self.channel.confirm_select(ConfirmSelectOptions::default()),
        )
        .await?;
        Ok(declared.message_count())
    }

    pub(super) async fn close(self) {
        amqp::close(&self.connection, self.timeout, "corral-worker ops done").await;
    }

    /// Publishes a copy with `mandatory` and waits for the broker's confirm;
    /// `target` names where it goes, for the error.
    async fn publish_confirmed(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
        target: impl FnOnce() -> String,
    ) -> Result<(), MoveError> {
        amqp::publish_confirmed(
            &self.channel,
            exchange,
            routing_key,
            body,
            properties,
            self.timeout,
        )
        .await
        .map_err(|error| MoveError::Publish {
            target: target(),
            error,
        })
    }

    async fn ack(&self, delivery: &Delivery) -> Result<(), MoveError> {
        let acked = deadline(
            "acknowledging",
            self.timeout,
            delivery.acker.ack(BasicAckOptions::default()),
        )
        .await
        .map_err(MoveError::Ack)?;
        if acked {
            Ok(())
        } else {
            Err(MoveError::AckChannelClosed)
        }
    }

    /// Moves a message to the tail of the dead-letter queue: publishes a copy
    /// through the dead-letter exchange, then acks the original. That fanout
    /// exchange feeds only the dead-letter queue in corral's topology, so it
    /// reaches that queue as directly as the default exchange would, which
    /// the documented permissions (`^corral\.`) refuse. `mandatory` turns a
    /// missing binding into a failure rather than a lost copy.
    /// `routing_key` is the one the message was first published with, `id`
    /// its `message_id` (for the error).
    pub(super) async fn keep(
        &self,
        delivery: &Delivery,
        routing_key: &str,
        id: &str,
    ) -> Result<(), OpsError> {
        let has_death = delivery
            .properties
            .headers()
            .as_ref()
            .is_some_and(|headers| headers.contains_key("x-death"));
        let properties = if has_death {
            delivery.properties.clone()
        } else {
            with_headers(&delivery.properties, |headers| {
                headers.insert(
                    ROUTING_KEY_HEADER.into(),
                    AMQPValue::LongString(routing_key.into()),
                );
            })
        };
        let failed = |cause: MoveError| OpsError::NotKept {
            message_id: id.to_owned(),
            cause: Box::new(cause),
        };
        // The original routing key, so the copy is delivered with it like
        // the letter RabbitMQ dead-lettered (a fanout exchange ignores it).
        self.publish_confirmed(
            &self.topology.dead_letter_exchange(),
            routing_key,
            &delivery.data,
            properties,
            || {
                format!(
                    "the tail of {} through {}",
                    self.topology.dead_letter_queue(),
                    self.topology.dead_letter_exchange()
                )
            },
        )
        .await
        .map_err(failed)?;
        // The copy is safe; a failed ack only leaves a duplicate.
        self.ack(delivery).await.map_err(failed)
    }

    /// Publishes a message back to the webhooks exchange with `routing_key`,
    /// then acks the dead-letter copy; `id` names it in the log.
    pub(super) async fn replay(
        &self,
        delivery: &Delivery,
        routing_key: &str,
        id: &str,
    ) -> Result<(), MoveError> {
        let properties = without_headers(
            &delivery.properties,
            &[
                DELIVERY_COUNT_HEADER,
                ROUTING_KEY_HEADER,
                amqp::SHARD_HEADER,
            ],
        );
        // A shard of today's CORRAL_AMQP_QUEUES, not the one it had.
        let properties = amqp::ShardPicker::new(&self.topology).stamp(properties);
        let exchange = self.topology.exchange();
        self.publish_confirmed(&exchange, routing_key, &delivery.data, properties, || {
            format!("{exchange} with routing key {routing_key}")
        })
        .await?;
        if let Err(cause) = self.ack(delivery).await {
            // The replayed copy is in the main queue; the dead-letter copy
            // comes back when the connection closes and is a duplicate.
            tracing::warn!(
                message_id = id,
                cause = error_chain(&cause),
                "replayed, but the dead-letter copy could not be acknowledged; it will be replayed again as a duplicate"
            );
        }
        Ok(())
    }
}

fn with_headers(
    properties: &BasicProperties,
    edit: impl FnOnce(&mut FieldTable),
) -> BasicProperties {
    let mut headers = properties.headers().clone().unwrap_or_default();
    edit(&mut headers);
    properties.clone().with_headers(headers)
}

fn without_headers(properties: &BasicProperties, names: &[&str]) -> BasicProperties {
    match properties.headers() {
        Some(headers) if names.iter().any(|name| headers.contains_key(name)) => {
            let mut kept = FieldTable::default();
            for (name, value) in headers {
                if !names.contains(&name.as_str()) {
                    kept.insert(name.clone(), value.clone());
                }
            }
            properties.clone().with_headers(kept)
        }
        _ => properties.clone(),
    }
}
