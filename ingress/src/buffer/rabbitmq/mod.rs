//! The RabbitMQ buffer: publishing with publisher confirms over a
//! self-healing broker link.
//!
//! One [`RabbitMq`] serves every request: it owns one AMQP connection with a
//! few confirm-mode channels (requests are spread round-robin over them, never
//! a connection or channel per request) and a supervisor task that replaces the
//! whole link when it fails. A request gets `Ok` only when the broker acked
//! its publish *and* did not return it as unroutable; everything else (no
//! link, a nack, a return, a closed channel, no confirm by the deadline, too
//! many publishes in flight) is a [`PublishError`] the handler turns into 503.
//!
//! Publishes awaiting a confirm are bounded by a semaphore of
//! `CORRAL_MAX_IN_FLIGHT` permits, and the bodies they hold by the request's
//! [`Lease`] of `CORRAL_MAX_IN_FLIGHT_BYTES`. A confirm nobody waits for any
//! more (its request timed out, or its client went away) goes to a
//! background task that keeps the permit until the broker answers (or the
//! link is declared dead), so a stalled broker cannot pile up forgotten
//! confirms.
//!
//! # Layout
//!
//! - this module: the handle, one publish from permit to verdict, shutdown.
//! - `link`: the connection and its channels, and the supervisor that
//!   keeps one up.

mod link;

use std::{
    pin::Pin,
    sync::{
        Arc, RwLock,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use corral_shared::{
    admin::Health,
    amqp::{self, Refused, Topology},
    config::AmqpSettings,
    envelope,
    telemetry::{labels::PublishFailure, metrics},
};
use lapin::{Confirmation, PublisherConfirm, types::ShortString};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use uuid::Uuid;

use self::link::Link;
use super::{Buffer, Refusal, Webhook};
use crate::budget::Lease;

/// Why a webhook could not be handed to the broker.
#[derive(Debug, thiserror::Error)]
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
}

/// Settings of the RabbitMQ buffer.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Broker and naming.
    pub amqp: AmqpSettings,
    /// Confirm-mode channels per connection.
    pub channels: u16,
    /// Bound on publishes awaiting a confirm.
    pub max_in_flight: u32,
    /// Longest wait for an in-flight slot.
    pub in_flight_wait: Duration,
    /// Deadline for a confirm.
    pub publish_timeout: Duration,
}

/// Shared handle; clone freely.
#[derive(Clone, Debug)]
pub struct RabbitMq {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    settings: Settings,
    topology: Topology,
    /// Exchange name, made once (a `ShortString` per publish is only a clone).
    exchange: ShortString,
    /// The current link; `None` while disconnected.
    link: RwLock<Option<Arc<Link>>>,
    /// Bounds publishes awaiting confirms (and the memory they hold).
    permits: Arc<Semaphore>,
    /// Publishes awaiting confirms, for the gauge.
    in_flight: AtomicUsize,
    /// Readiness shared with the admin listener.
    health: Health,
    /// Stops the supervisor and fails new publishes.
    shutdown: CancellationToken,
    /// Late confirms still being awaited after their request answered 503.
    orphans: TaskTracker,
}

/// A confirm still to come, boxed so it can be handed to a background task.
type Pending = Pin<Box<PublisherConfirm>>;

/// A publish on the wire whose confirm the request is waiting for. Dropped
/// before the confirm came (the deadline passed, or actix dropped the
/// handler because the client went away), it hands the confirm to a
/// background task instead of dropping it unresolved inside lapin.
struct Awaited {
    buffer: RabbitMq,
    link: Arc<Link>,
    confirm: Option<Pending>,
    sent_ms: u64,
    held: Option<(OwnedSemaphorePermit, InFlight)>,
    timed_out: bool,
}

impl Awaited {
    /// The broker's answer; once it came, nothing is left to hand over.
    async fn outcome(&mut self) -> lapin::Result<Confirmation> {
        let confirm = self.confirm.as_mut().expect("a confirm is awaited once");
        let outcome = confirm.await;
        self.confirm = None;
        outcome
    }

    /// A confirm nobody waits for any more — its request missed the deadline
    /// and was answered 503, or the handler was dropped — is awaited in the
    /// background with its in-flight slot until lapin resolves it, so the
    /// slots keep counting exactly what lapin still tracks; it is never
    /// dropped unresolved on a live link. A timed-out one on a link that
    /// acked nothing since it was sent means the link is dead in a way the
    /// socket has not noticed (a cut network path): replace it.
    fn hand_over(&mut self, mut confirm: Pending) {
        let inner = &self.buffer.inner;
        let (link, held, timed_out) = (self.link.clone(), self.held.take(), self.timed_out);
        let timeout = inner.settings.publish_timeout;
        if timed_out && !link.acked_since(self.sent_ms) && !link.is_blocked() {
            tracing::warn!(
                "no confirm from RabbitMQ on this link for {timeout:?}; replacing the connection"
            );
            link.mark_broken();
        }
        inner.orphans.spawn(async move {
            loop {
                match tokio::time::timeout(timeout, &mut confirm).await {
                    Ok(Ok(confirmation)) => {
                        if confirmation.is_ack() {
                            link.acked();
                            if timed_out {
                                tracing::warn!(
                                    "a confirm arrived after its request was answered 503; \
                                     if the sender retries, the worker stores the webhook once"
                                );
                            }
                        }
                        break;
                    }
                    Ok(Err(_closed)) => break,
                    // A blocked broker answers once it unblocks; until then
                    // the slot stays taken (new publishes are refused anyway).
                    Err(_) if link.is_blocked() => {}
                    // Replacing the link closes its channels, which resolves
                    // every confirm lapin still tracks on them.
                    Err(_) if !link.is_broken() => link.mark_broken(),
                    // Replaced and still unresolved: the link, and lapin's
                    // state with it, is gone; nothing is left to pile up.
                    Err(_) => break,
                }
            }
            drop(held);
        });
    }
}

impl Drop for Awaited {
    fn drop(&mut self) {
        if let Some(confirm) = self.confirm.take() {
            self.hand_over(confirm);
        }
    }
}

impl Buffer for RabbitMq {
    type Error = PublishError;

    fn keep(
        &self,
        webhook: Webhook<'_>,
        lease: Lease,
    ) -> impl Future<Output = Result<Duration, PublishError>> + Send {
        self.publish(webhook, lease)
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
        let inner = Arc::new(Inner {
            exchange: topology.exchange().into(),
            topology,
            permits: Arc::new(Semaphore::new(settings.max_in_flight as usize)),
            settings,
            link: RwLock::new(None),
            in_flight: AtomicUsize::new(0),
            health,
            shutdown,
            orphans: TaskTracker::new(),
        });
        let supervisor = tokio::spawn(link::supervise(inner.clone()));
        (Self { inner }, supervisor)
    }

    fn current(&self) -> Option<Arc<Link>> {
        self.inner.link.read().expect("link lock poisoned").clone()
    }

    /// Publishes the webhook persistently and mandatorily, and waits for the
    /// confirm. Returns how long the confirm took.
    pub async fn publish(
        &self,
        webhook: Webhook<'_>,
        lease: Lease,
    ) -> Result<Duration, PublishError> {
        let timeout = self.inner.settings.publish_timeout;
        let deadline_at = tokio::time::Instant::now() + timeout;
        let permit = self.take_permit(timeout).await?;
        let link = self.current().ok_or(PublishError::Unavailable)?;
        if let Some(reason) = link.blocked_reason() {
            return Err(PublishError::Blocked(reason));
        }
        let guard = InFlight::enter(&self.inner);
        let sent_ms = link.now_ms();
        let confirm = self.send(&link, &webhook, deadline_at, lease).await?;
        let mut awaited = Awaited {
            buffer: self.clone(),
            link: link.clone(),
            confirm: Some(confirm),
            sent_ms,
            held: Some((permit, guard)),
            timed_out: false,
        };
        let confirm_started = Instant::now();
        let confirmation = match tokio::time::timeout_at(deadline_at, awaited.outcome()).await {
            Ok(Ok(confirmation)) => confirmation,
            Ok(Err(err)) => {
                link.mark_broken();
                return Err(PublishError::ChannelClosed(err));
            }
            Err(_elapsed) => {
                awaited.timed_out = true;
                return Err(PublishError::Timeout(timeout));
            }
        };
        drop(awaited);
        judge(&link, confirmation, webhook.message_id)?;
        Ok(confirm_started.elapsed())
    }

    /// An in-flight slot, waiting at most `CORRAL_IN_FLIGHT_WAIT_MS`.
    async fn take_permit(&self, timeout: Duration) -> Result<OwnedSemaphorePermit, PublishError> {
        let inner = &self.inner;
        let wait = inner.settings.in_flight_wait.min(timeout);
        match tokio::time::timeout(wait, inner.permits.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_closed)) => Err(PublishError::ShuttingDown),
            Err(_elapsed) => Err(PublishError::Overloaded),
        }
    }

    /// Puts the message on the wire; the confirm comes later. Once the frames
    /// are written the client library holds no copy of the body, so the
    /// lease goes back; frames still queued when the deadline passes stay
    /// with the link (which is being replaced), and so does the lease.
    async fn send(
        &self,
        link: &Link,
        webhook: &Webhook<'_>,
        deadline_at: tokio::time::Instant,
        lease: Lease,
    ) -> Result<Pending, PublishError> {
        let publish = link.channel().publish(
            self.inner.exchange.clone(),
            webhook.kind.routing_key().into(),
            webhook.body,
            envelope::properties(webhook.message_id, webhook.received_at),
        );
        match tokio::time::timeout_at(deadline_at, publish).await {
            Ok(Ok(confirm)) => Ok(Box::pin(confirm)),
            Ok(Err(err)) => {
                link.mark_broken();
                Err(PublishError::ChannelClosed(err))
            }
            Err(_elapsed) => {
                link.strand(lease);
                link.mark_broken_unless_blocked();
                Err(PublishError::Timeout(self.inner.settings.publish_timeout))
            }
        }
    }

    /// Stops reconnecting, waits for late confirms (bounded), and closes the
    /// link. Until then the supervisor keeps repairing the link, so webhooks
    /// still arriving during the shutdown drain are served.
    pub async fn close(&self, timeout: Duration) {
        self.inner.shutdown.cancel();
        self.inner.orphans.close();
        let _ = tokio::time::timeout(timeout, self.inner.orphans.wait()).await;
        let link = self.inner.link.write().expect("link lock poisoned").take();
        if let Some(link) = link {
            link.close(timeout).await;
        }
        self.inner.health.set_broker(false);
    }
}

/// What the broker's answer means for this publish.
fn judge(link: &Link, confirmation: Confirmation, message_id: Uuid) -> Result<(), PublishError> {
    match amqp::check_confirmation(confirmation) {
        Ok(()) => {
            link.acked();
            Ok(())
        }
        Err(Refused::Unroutable {
            reply_text,
            returned_message_id,
        }) => {
            // Every routing key matches the binding we declare, so a return
            // means the topology is gone (a queue deleted under us). Only a
            // reconnect re-declares it; without this the link stays "up" and
            // every webhook gets 503 until something else breaks it.
            link.mark_broken();
            if returned_message_id.as_deref() != Some(message_id.to_string().as_str()) {
                // The return may belong to another publish of the same ack,
                // which may then have been answered 200 unrouted.
                tracing::error!(
                    %message_id,
                    returned = returned_message_id.as_deref().unwrap_or("none"),
                    "RabbitMQ returned another publish than this one as unroutable: \
                     that webhook may have been answered 200 without being queued \
                     (the queue or its binding was removed under live traffic)"
                );
            }
            Err(PublishError::Unroutable(reply_text))
        }
        // confirm_select is set on every channel before it is used, so
        // `NotConfirmed` cannot happen; were it to, it is no promise either.
        Err(Refused::Nacked | Refused::NotConfirmed) => Err(PublishError::Nacked),
    }
}

/// Counts a publish in flight for as long as it lives.
struct InFlight(Arc<Inner>);

impl InFlight {
    fn enter(inner: &Arc<Inner>) -> Self {
        let now = inner.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        metrics::ingress_in_flight(now);
        Self(inner.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let now = self.0.in_flight.fetch_sub(1, Ordering::Relaxed) - 1;
        metrics::ingress_in_flight(now);
    }
}

impl std::fmt::Debug for InFlight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InFlight")
    }
}
