//! The RabbitMQ queues the worker consumes, one [`RabbitMqConnector`] each:
//! every shard of `CORRAL_AMQP_QUEUES`, shards a higher setting left on the
//! broker (until they are deleted), and the unroutable queue. `/readyz`
//! reports the broker up only while every shard's consumer has its link
//! ([`Links`]); left-over shards and the unroutable queue, normally idle,
//! do not count.

use std::sync::{Arc, Mutex};

use corral_runtime::{
    admin::Health,
    amqp::{self, Topology},
    config::AmqpSettings,
};
use tokio_util::sync::CancellationToken;

use super::{budget::Prefetch, rabbitmq::RabbitMqConnector};

/// Which shard consumers have their link, told to `/readyz` as one.
#[derive(Debug)]
struct Shared {
    health: Health,
    up: Mutex<Vec<bool>>,
}

/// One shard consumer's part of the broker's health.
#[derive(Debug, Clone)]
pub struct Links {
    shared: Arc<Shared>,
    index: usize,
}

impl Links {
    /// Records whether this consumer has its link; the broker counts as
    /// connected while every shard consumer has.
    pub fn set(&self, connected: bool) {
        // Under the lock, so that two consumers changing at once cannot
        // leave the older verdict last.
        let mut up = self.shared.up.lock().expect("links lock poisoned");
        up[self.index] = connected;
        self.shared.health.set_broker(up.iter().all(|&up| up));
    }
}

/// What every RabbitMQ consumer of the worker shares.
#[derive(Debug)]
pub struct Consumers<'a> {
    /// Broker and names.
    pub amqp: &'a AmqpSettings,
    /// The shard consumers' and the unroutable consumer's prefetch.
    pub prefetch: Prefetch,
    /// The largest message the prefetch is sized for.
    pub largest: u64,
    /// `/readyz`.
    pub health: &'a Health,
}

impl Consumers<'_> {
    /// A connector for each queue to consume; `None` once shutdown came
    /// before the broker could be asked for left-over shards.
    pub async fn connectors(&self, shutdown: &CancellationToken) -> Option<Vec<RabbitMqConnector>> {
        let topology = Topology::new(self.amqp);
        let shards = topology.queues();
        let leftovers = leftover_queues(self.amqp, &topology, shutdown).await?;
        let prefetch = self.prefetch.per_queue(shards.len() + leftovers.len());
        let shared = Arc::new(Shared {
            health: self.health.clone(),
            up: Mutex::new(vec![false; shards.len()]),
        });
        let connector = |queue: String, prefetch: u16, health: Option<Links>| RabbitMqConnector {
            amqp: self.amqp.clone(),
            topology: topology.clone(),
            unroutable: queue == topology.unroutable_queue(),
            queue,
            prefetch,
            largest: self.largest,
            health,
        };
        let mut connectors: Vec<_> = shards
            .into_iter()
            .enumerate()
            .map(|(index, queue)| {
                let links = Links {
                    shared: shared.clone(),
                    index,
                };
                connector(queue, prefetch, Some(links))
            })
            .collect();
        connectors.extend(
            leftovers
                .into_iter()
                .map(|queue| connector(queue, prefetch, None)),
        );
        let unroutable = topology.unroutable_queue();
        connectors.push(connector(unroutable, self.prefetch.unroutable, None));
        Some(connectors)
    }
}

/// Shard queues past `CORRAL_AMQP_QUEUES` on the broker, asked once at start
/// (a change of the setting restarts the worker), logged when there are any.
async fn leftover_queues(
    settings: &AmqpSettings,
    topology: &Topology,
    shutdown: &CancellationToken,
) -> Option<Vec<String>> {
    let timeout = settings.connect_timeout();
    let leftovers = amqp::reconnect(shutdown, settings, || async {
        let (connection, _) =
            amqp::connect_and_declare(settings, topology, "corral-worker").await?;
        let found = topology.leftover_queues(&connection, timeout).await;
        amqp::close(&connection, timeout, "corral-worker looked for shards").await;
        found
    })
    .await?;
    if !leftovers.is_empty() {
        tracing::warn!(
            queues = ?leftovers,
            queues_setting = topology.shards(),
            "shard queues past CORRAL_AMQP_QUEUES are on the broker (a higher setting made \
             them): consuming them too, so nothing left in them is lost. Once they stay \
             empty and every ingress runs with the new setting, delete each with \
             `rabbitmqctl delete_queue <name>` (docs/operations/configure-and-size.md)"
        );
    }
    Some(leftovers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_broker_is_up_only_while_every_shard_consumer_is() {
        let health = Health::new(true);
        let shared = Arc::new(Shared {
            health: health.clone(),
            up: Mutex::new(vec![false; 3]),
        });
        let links: Vec<Links> = (0..3)
            .map(|index| Links {
                shared: shared.clone(),
                index,
            })
            .collect();
        links[0].set(true);
        links[1].set(true);
        assert!(!health.broker(), "shard 2 not connected yet");
        links[2].set(true);
        assert!(health.broker());
        links[1].set(false);
        assert!(!health.broker(), "shard 1 lost its link");
        links[1].set(true);
        assert!(health.broker());
    }
}
