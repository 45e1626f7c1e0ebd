//! The queues the webhooks exchange routes to: one, or `CORRAL_AMQP_QUEUES`
//! shards, each a quorum queue with its own leader.
//!
//! A webhook keeps its routing key (`dropcowboy.sms`, ...) whatever the
//! number of queues, so a customer's own queue bound to the webhooks
//! exchange sees every webhook. With one queue, `<prefix>.delivery-status`
//! is bound to the exchange directly, as it always was. With N, the
//! webhooks exchange routes to the internal headers exchange
//! `<prefix>.shards` instead (an exchange-to-exchange binding with the same
//! pattern), where shard `k` is bound to the value `"k"` of the
//! [`SHARD_HEADER`] that ingress sets in turn on each message
//! ([`ShardPicker`]). All of it is core RabbitMQ (3.10 on), without plugins:
//! 4.3's modulus-hash exchange and the consistent-hash plugin would pick a
//! queue by a hash instead, which needs 4.3 or a plugin and spreads only as
//! evenly as the hashed values, where taking turns spreads evenly always.
//!
//! Shard 0 is `<prefix>.delivery-status` whatever N, shard `k` is
//! `<prefix>.delivery-status.<k>`. Ingress stamps the header at N = 1 too
//! (always `"0"`), so whichever bindings a change of N leaves on the broker
//! route each message to one queue; a message no binding of the shards
//! exchange matches goes to its alternate exchange, the unroutable one,
//! which the worker consumes. Shards past N that a higher setting left are
//! still consumed by the worker ([`Topology::leftover_queues`]) until an
//! operator deletes them.

use std::{
    hash::BuildHasher,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use lapin::{
    BasicProperties, Channel, Connection, ExchangeKind,
    options::{ExchangeBindOptions, ExchangeDeclareOptions},
    types::{AMQPValue, FieldTable},
};

use super::{AmqpError, Topology, deadline};

/// The message header the shards exchange routes on; its value is the
/// shard's number as text. Not `x-`: RabbitMQ's headers exchange ignores
/// binding arguments starting with `x-`.
pub const SHARD_HEADER: &str = "corral-shard";

/// The most queues `CORRAL_AMQP_QUEUES` may ask for.
pub const MAX_QUEUES: u16 = 64;

/// The pattern the webhooks exchange routes to corral's own queue(s) by.
const PATTERN: &str = "dropcowboy.#";

impl Topology {
    /// How many queues share the webhooks (`CORRAL_AMQP_QUEUES`).
    pub fn shards(&self) -> u16 {
        self.queues
    }

    /// The name of shard `shard`: `<prefix>.delivery-status` for shard 0,
    /// so that one queue is the queue corral always had.
    pub fn shard_queue(&self, shard: u16) -> String {
        match shard {
            0 => self.queue(),
            shard => format!("{}.{shard}", self.queue()),
        }
    }

    /// Every queue the webhooks are spread over, shard 0 first.
    pub fn queues(&self) -> Vec<String> {
        (0..self.queues).map(|k| self.shard_queue(k)).collect()
    }

    /// Internal headers exchange between the webhooks exchange and the
    /// shards, declared only with more than one queue.
    pub fn shard_exchange(&self) -> String {
        format!("{}.shards", self.prefix)
    }

    /// A shard's arguments: the main queue's, and for shards past 0 the
    /// `balanced` leader locator (RabbitMQ 3.10 on), so their leaders spread
    /// over the nodes instead of all landing on the node the declaring
    /// client is connected to. Shard 0 keeps the arguments it always had: a
    /// different argument on an existing queue is refused (PRECONDITION_FAILED).
    fn shard_arguments(&self, shard: u16) -> FieldTable {
        let mut arguments = self.queue_arguments();
        if shard > 0 {
            arguments.insert(
                "x-queue-leader-locator".into(),
                AMQPValue::LongString("balanced".into()),
            );
        }
        arguments
    }

    /// Declares the queue(s) and binds them: one queue to the webhooks
    /// exchange, or N shards through the shards exchange.
    pub(super) async fn declare_queues(
        &self,
        channel: &Channel,
        timeout: Duration,
    ) -> Result<(), AmqpError> {
        let (queue, exchange) = (self.queue(), self.exchange());
        if self.queues == 1 {
            Self::declare_queue(channel, &queue, self.queue_arguments(), false, timeout).await?;
            let none = FieldTable::default();
            return Self::bind_queue(channel, &queue, &exchange, PATTERN, none, timeout).await;
        }
        let shards = self.shard_exchange();
        self.declare_shard_exchange(channel, timeout).await?;
        for shard in 0..self.queues {
            let name = self.shard_queue(shard);
            let arguments = self.shard_arguments(shard);
            Self::declare_queue(channel, &name, arguments, false, timeout).await?;
            let header = shard_binding(shard);
            Self::bind_queue(channel, &name, &shards, "", header, timeout).await?;
        }
        deadline(
            "binding the shards exchange",
            timeout,
            channel.exchange_bind(
                shards.as_str().into(),
                exchange.as_str().into(),
                PATTERN.into(),
                ExchangeBindOptions::default(),
                FieldTable::default(),
            ),
        )
        .await?;
        // Only once every shard is reachable, so that no webhook finds
        // neither route; until then shard 0 may get one twice, which the
        // worker stores once.
        deadline(
            "unbinding the single queue",
            timeout,
            channel.queue_unbind(
                queue.as_str().into(),
                exchange.as_str().into(),
                PATTERN.into(),
                FieldTable::default(),
            ),
        )
        .await
    }

    /// The shards exchange: headers, internal (only the webhooks exchange
    /// routes to it), and with the unroutable exchange as its alternate, so
    /// a message without a shard it knows is kept, not dropped.
    async fn declare_shard_exchange(
        &self,
        channel: &Channel,
        timeout: Duration,
    ) -> Result<(), AmqpError> {
        deadline(
            "declaring the shards exchange",
            timeout,
            channel.exchange_declare(
                self.shard_exchange().into(),
                ExchangeKind::Headers,
                ExchangeDeclareOptions {
                    durable: true,
                    internal: true,
                    ..Default::default()
                },
                self.exchange_arguments(),
            ),
        )
        .await
    }

    /// Shard queues past `CORRAL_AMQP_QUEUES` that a higher setting left on
    /// the broker, in order, up to the first missing: what they hold must
    /// still be stored. Each is looked up on a channel of its own, since the
    /// broker closes the channel of a lookup that finds nothing.
    pub async fn leftover_queues(
        &self,
        connection: &Connection,
        timeout: Duration,
    ) -> Result<Vec<String>, AmqpError> {
        let mut found = Vec::new();
        for shard in self.queues..MAX_QUEUES {
            let queue = self.shard_queue(shard);
            let channel = deadline("opening a channel", timeout, connection.create_channel());
            let channel = channel.await?;
            let none = FieldTable::default();
            match Self::declare_queue(&channel, &queue, none, true, timeout).await {
                Ok(()) => found.push(queue),
                Err(err) if err.is_not_found() => return Ok(found),
                Err(err) => return Err(err),
            }
            let _ = deadline("closing a channel", timeout, channel.close(200, "".into())).await;
        }
        Ok(found)
    }
}

/// Shard `shard`'s binding to the shards exchange.
fn shard_binding(shard: u16) -> FieldTable {
    let mut arguments = FieldTable::default();
    arguments.insert("x-match".into(), AMQPValue::LongString("all".into()));
    arguments.insert(
        SHARD_HEADER.into(),
        AMQPValue::LongString(shard.to_string().into()),
    );
    arguments
}

/// Picks each message's shard in turn, from a random start so that many
/// ingress processes do not all begin with shard 0.
#[derive(Debug)]
pub struct ShardPicker {
    queues: u16,
    next: AtomicU64,
}

impl ShardPicker {
    /// Turns over `topology`'s shards.
    pub fn new(topology: &Topology) -> Self {
        let start = std::collections::hash_map::RandomState::new().hash_one(std::process::id());
        Self {
            queues: topology.shards(),
            next: AtomicU64::new(start),
        }
    }

    /// `properties` with the next shard in [`SHARD_HEADER`].
    pub fn stamp(&self, properties: BasicProperties) -> BasicProperties {
        let shard = self.next.fetch_add(1, Ordering::Relaxed) % u64::from(self.queues);
        let mut headers = properties.headers().clone().unwrap_or_default();
        headers.insert(
            SHARD_HEADER.into(),
            AMQPValue::LongString(shard.to_string().into()),
        );
        properties.with_headers(headers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AmqpSettings;
    use clap::Parser;

    #[derive(Parser)]
    struct Settings {
        #[command(flatten)]
        amqp: AmqpSettings,
    }

    fn topology(queues: &str) -> Topology {
        let settings = Settings::parse_from(["t", "--amqp-prefix", "p", "--amqp-queues", queues]);
        Topology::new(&settings.amqp)
    }

    #[test]
    fn one_queue_is_the_queue_corral_always_had_and_shards_follow_it() {
        assert_eq!(topology("1").queues(), ["p.delivery-status"]);
        assert_eq!(
            topology("3").queues(),
            [
                "p.delivery-status",
                "p.delivery-status.1",
                "p.delivery-status.2"
            ]
        );
    }

    #[test]
    fn messages_take_the_shards_in_turn() {
        let picker = ShardPicker::new(&topology("3"));
        let shards: Vec<String> = (0..6)
            .map(|_| {
                let properties = picker.stamp(BasicProperties::default());
                let headers = properties.headers().clone().expect("headers");
                match headers.inner().get(SHARD_HEADER) {
                    Some(AMQPValue::LongString(shard)) => shard.to_string(),
                    other => panic!("{other:?}"),
                }
            })
            .collect();
        assert_eq!(shards[..3], shards[3..], "a turn repeats");
        let mut turn = shards[..3].to_vec();
        turn.sort();
        assert_eq!(turn, ["0", "1", "2"], "a turn visits every shard once");
    }
}
