//! The RabbitMQ buffer: publishing with publisher confirms over a
//! self-healing broker link, several webhooks per message.
//!
//! One [`RabbitMq`] serves every request: it owns one AMQP connection with a
//! few confirm-mode channels (messages are spread round-robin over them, never
//! a connection or channel per request) and a supervisor task that replaces the
//! whole link when it fails. Requests queue their webhooks; the group-commit
//! engine sends whatever is waiting as one message whenever a publish slot is
//! free (`publish`). A request gets `Ok` only when the broker acked the message
//! carrying its webhook *and* did not return it as unroutable; everything else
//! (no link, a nack, a return, a closed channel, no confirm by the deadline,
//! too many webhooks in flight) is a [`PublishError`]: the spool takes the
//! webhook instead where it may (`fallback`), else the handler answers 503.
//!
//! Webhooks awaiting a verdict are bounded by `CORRAL_MAX_IN_FLIGHT` request
//! slots, the bodies they hold by each request's [`Lease`] of
//! `CORRAL_MAX_IN_FLIGHT_BYTES`, and messages awaiting a confirm by
//! `CORRAL_PUBLISH_CONCURRENCY` publish slots, each held until the broker
//! resolves the confirm (or the link is declared dead), so a stalled broker
//! cannot pile up forgotten confirms.
//!
//! # Layout
//!
//! - this module: the handle, its refusals, shutdown.
//! - `publish`: the sink: one message from publish to the verdict of each
//!   of its webhooks.
//! - `link`: the connection and its channels, and the supervisor that
//!   keeps one up.

mod link;
mod publish;

use std::{
    sync::{Arc, RwLock},
    time::Duration,
};

use corral_runtime::{
    admin::Health,
    amqp::{self, Topology},
    config::AmqpSettings,
    telemetry::labels::{PublishFailure, SpoolCause},
};
use lapin::types::ShortString;
use tokio_util::sync::CancellationToken;

use self::link::Link;
use super::{
    Buffer, Kept, Publishing, Refusal, Webhook,
    engine::{Engine, Stopped},
};
use crate::budget::Lease;

/// Why a webhook could not be handed to the broker. Cloned to every
/// webhook of the message it befell.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PublishError {
    /// No broker link right now (down, reconnecting).
    #[error("not connected to RabbitMQ")]
    Unavailable,
    /// The broker blocked publishing (memory or disk alarm).
    #[error("RabbitMQ is blocking publishers: {0}")]
    Blocked(String),
    /// Too many publishes already await their confirm.
    #[error("too many publishes in flight")]
    Overloaded,
    /// The broker refused to take responsibility for the message.
    #[error("RabbitMQ nacked the publish")]
    Nacked,
    /// No queue is bound for the routing key (topology deleted under us).
    #[error("RabbitMQ returned the message as unroutable: {0}")]
    Unroutable(String),
    /// The channel or connection died with the publish outstanding.
    #[error("the channel closed before the publish was confirmed")]
    ChannelClosed(#[source] lapin::Error),
    /// No confirm within `CORRAL_PUBLISH_TIMEOUT_MS`.
    #[error("no confirm from RabbitMQ within {0:?}")]
    Timeout(Duration),
    /// Shutdown closed the link before the publish was confirmed.
    #[error("shutting down")]
    ShuttingDown,
}

impl From<Stopped> for PublishError {
    fn from(stopped: Stopped) -> Self {
        match stopped {
            Stopped::Overloaded => PublishError::Overloaded,
            Stopped::Timeout(timeout) => PublishError::Timeout(timeout),
            Stopped::ShuttingDown => PublishError::ShuttingDown,
        }
    }
}

impl Refusal for PublishError {
    fn failure(&self) -> PublishFailure {
        match self {
            PublishError::Unavailable => PublishFailure::Unavailable,
            PublishError::Blocked(_) => PublishFailure::Blocked,
            PublishError::Overloaded => PublishFailure::Overloaded,
            PublishError::Nacked => PublishFailure::Nack,
            PublishError::Unroutable(_) => PublishFailure::Unroutable,
            PublishError::ChannelClosed(_) => PublishFailure::ChannelClosed,
            PublishError::Timeout(_) => PublishFailure::Timeout,
            PublishError::ShuttingDown => PublishFailure::ShuttingDown,
        }
    }

    fn spool_cause(&self) -> Option<SpoolCause> {
        match self {
            PublishError::Unavailable => Some(SpoolCause::Unavailable),
            PublishError::Blocked(_) => Some(SpoolCause::Blocked),
            // Ingress's own bound on webhooks in flight: spooling them
            // would hold their bodies past it.
            PublishError::Overloaded => None,
            PublishError::Nacked => Some(SpoolCause::Nack),
            PublishError::Unroutable(_) => Some(SpoolCause::Unroutable),
            PublishError::ChannelClosed(_) => Some(SpoolCause::ChannelClosed),
            PublishError::Timeout(_) => Some(SpoolCause::Slow),
            PublishError::ShuttingDown => Some(SpoolCause::ShuttingDown),
        }
    }
}

/// Settings of the RabbitMQ buffer.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Broker and naming.
    pub amqp: AmqpSettings,
    /// Confirm-mode channels per connection.
    pub channels: u16,
    /// The bounds both primaries share (a send is a message's publish and
    /// its confirm).
    pub publishing: Publishing,
    /// Webhooks per message at most.
    pub batch_max: usize,
    /// Bytes per message at most (a single webhook may exceed it alone).
    pub batch_max_bytes: usize,
}

/// Shared handle; clone freely.
#[derive(Clone, Debug)]
pub struct RabbitMq {
    engine: Engine<Broker>,
    broker: Arc<Broker>,
}

/// The broker as the sink and its supervisor share it.
#[derive(Debug)]
struct Broker {
    settings: Settings,
    topology: Topology,
    /// Exchange name, made once (a `ShortString` per publish is only a clone).
    exchange: ShortString,
    /// Which queue each message goes to (`CORRAL_AMQP_QUEUES`).
    shards: amqp::ShardPicker,
    /// The current link; `None` while disconnected.
    link: RwLock<Option<Arc<Link>>>,
    /// Readiness shared with the admin listener.
    health: Health,
    /// Stops the supervisor; the engine publishes what is queued and ends.
    shutdown: CancellationToken,
}

impl Broker {
    /// The current link; `None` while disconnected.
    fn current(&self) -> Option<Arc<Link>> {
        self.link.read().expect("link lock poisoned").clone()
    }
}

impl Buffer for RabbitMq {
    type Error = PublishError;

    /// Waits for the verdict on the message that carries the webhook: how
    /// long that message's confirm took.
    async fn keep(&self, webhook: Webhook, lease: Lease) -> Result<Kept, PublishError> {
        self.engine.keep(webhook, lease).await.map(Kept::Published)
    }
}

impl RabbitMq {
    /// Starts the buffer and its supervisor; it connects in the background
    /// so the process serves /healthz (and 503s) while the broker is away.
    /// `shutdown` stops reconnecting; cancel it through [`RabbitMq::close`].
    pub fn start(
        settings: Settings,
        health: Health,
        shutdown: CancellationToken,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let topology = Topology::new(&settings.amqp);
        let broker = Arc::new(Broker {
            exchange: topology.exchange().into(),
            shards: amqp::ShardPicker::new(&topology),
            topology,
            settings,
            link: RwLock::new(None),
            health,
            shutdown: shutdown.clone(),
        });
        let engine = Engine::start(broker.clone(), shutdown);
        let supervisor = tokio::spawn(link::supervise(broker.clone()));
        (Self { engine, broker }, supervisor)
    }

    /// Stops reconnecting, publishes what is still queued, waits for the
    /// confirms still to come (bounded), and closes the link. Until then the
    /// supervisor keeps repairing the link, so webhooks still arriving during
    /// the shutdown drain are served.
    pub async fn close(&self, timeout: Duration) {
        self.engine.close(timeout).await;
        let link = self.broker.link.write().expect("link lock poisoned").take();
        if let Some(link) = link {
            link.close(timeout).await;
        }
        self.broker.health.set_broker(false);
    }
}
