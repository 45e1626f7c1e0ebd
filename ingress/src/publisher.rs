//! Publishing with publisher confirms over a self-healing broker link.
//!
//! One [`Publisher`] serves every request: it owns one AMQP connection with a
//! few confirm-mode channels (requests are spread round-robin over them, never
//! a connection or channel per request) and a supervisor task that replaces the
//! whole link when it fails. A request gets `Ok` only when the broker acked
//! its publish *and* did not return it as unroutable; everything else (no
//! link, a nack, a return, a closed channel, no confirm by the deadline, too
//! many publishes in flight) is a [`PublishError`] the handler turns into 503.
//!
//! Memory is bounded by a semaphore of `CORRAL_MAX_IN_FLIGHT` permits. A
//! request that times out waiting for its confirm hands the confirm to a
//! background task that keeps the permit until the broker answers (or the
//! link is declared dead), so a stalled broker cannot pile up forgotten
//! confirms.

use std::{
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use corral_shared::{
    admin::Health,
    amqp::{self, AmqpError, Topology, deadline},
    config::AmqpSettings,
    envelope::{self, Kind},
    telemetry::metrics,
};
use futures_util::StreamExt;
use lapin::{
    Channel, Confirmation, Connection, Event, PublisherConfirm,
    options::{BasicPublishOptions, ConfirmSelectOptions},
    types::ShortString,
};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use uuid::Uuid;

/// Why a webhook could not be handed to the broker. Each maps to a
/// `corral_ingress_publish_failures_total{cause}` label.
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

impl PublishError {
    /// The metric label for this failure.
    pub fn cause(&self) -> &'static str {
        match self {
            PublishError::Unavailable => "unavailable",
            PublishError::Blocked(_) => "blocked",
            PublishError::Overloaded => "overloaded",
            PublishError::Nacked => "nack",
            PublishError::Unroutable(_) => "unroutable",
            PublishError::ChannelClosed(_) => "channel_closed",
            PublishError::Timeout(_) => "timeout",
            PublishError::ShuttingDown => "shutting_down",
        }
    }
}

/// Settings of the publisher.
#[derive(Debug, Clone)]
pub struct PublisherSettings {
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
pub struct Publisher {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    settings: PublisherSettings,
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

/// One connection and its confirm channels.
#[derive(Debug)]
struct Link {
    connection: Connection,
    channels: Vec<Channel>,
    /// Round-robin cursor over `channels`.
    next: AtomicUsize,
    /// Set by the first request that sees the link fail; wakes the supervisor.
    broken: AtomicBool,
    failed: Notify,
    /// Milliseconds since `born` of the last ack, to tell a dead link from a slow one.
    last_ack_ms: AtomicU64,
    born: Instant,
    /// Broker flow control reason while blocked.
    blocked: RwLock<Option<String>>,
}

impl Link {
    fn channel(&self) -> &Channel {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.channels.len();
        &self.channels[i]
    }

    /// A broker alarm stops RabbitMQ reading the socket, so confirms stall on
    /// a healthy link; replacing it would only bring a fresh, unblocked-looking
    /// link that stalls again (and reset the blocked gauge the alert watches).
    fn mark_broken_unless_blocked(&self) {
        if !self.is_blocked() {
            self.mark_broken();
        }
    }

    fn is_blocked(&self) -> bool {
        self.blocked
            .read()
            .expect("blocked lock poisoned")
            .is_some()
    }

    fn mark_broken(&self) {
        if !self.broken.swap(true, Ordering::SeqCst) {
            self.failed.notify_one();
        }
    }

    fn now_ms(&self) -> u64 {
        self.born.elapsed().as_millis() as u64
    }
}

impl Publisher {
    /// Starts the publisher and its supervisor; it connects in the background
    /// so the process serves /healthz (and 503s) while the broker is away.
    pub fn start(
        settings: PublisherSettings,
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
        let supervisor = tokio::spawn(supervise(inner.clone()));
        (Self { inner }, supervisor)
    }

    /// Waits until the link is up (tests and start-up logs), up to `timeout`.
    pub async fn wait_connected(&self, timeout: Duration) -> bool {
        let started = Instant::now();
        while started.elapsed() < timeout {
            if self.current().is_some() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    fn current(&self) -> Option<Arc<Link>> {
        self.inner.link.read().expect("link lock poisoned").clone()
    }

    /// Publishes `body` persistently and mandatorily, and waits for the confirm.
    /// Returns how long the confirm took.
    pub async fn publish(
        &self,
        kind: Kind,
        body: &[u8],
        message_id: Uuid,
        received_at: DateTime<Utc>,
    ) -> Result<Duration, PublishError> {
        let inner = &self.inner;
        let timeout = inner.settings.publish_timeout;
        let started = tokio::time::Instant::now();
        let deadline_at = started + timeout;

        let permit = match tokio::time::timeout(
            inner.settings.in_flight_wait.min(timeout),
            inner.permits.clone().acquire_owned(),
        )
        .await
        {
            Ok(Ok(permit)) => permit,
            Ok(Err(_closed)) => return Err(PublishError::ShuttingDown),
            Err(_elapsed) => return Err(PublishError::Overloaded),
        };
        let link = self.current().ok_or(PublishError::Unavailable)?;
        if let Some(reason) = link.blocked.read().expect("blocked lock poisoned").clone() {
            return Err(PublishError::Blocked(reason));
        }
        let guard = InFlight::enter(inner);
        let sent_ms = link.now_ms();

        let publish = link.channel().basic_publish(
            inner.exchange.clone(),
            kind.routing_key().into(),
            BasicPublishOptions {
                mandatory: true,
                immediate: false,
            },
            body,
            envelope::properties(message_id, received_at),
        );
        let confirm = match tokio::time::timeout_at(deadline_at, publish).await {
            Ok(Ok(confirm)) => confirm,
            Ok(Err(err)) => {
                link.mark_broken();
                return Err(PublishError::ChannelClosed(err));
            }
            Err(_elapsed) => {
                link.mark_broken_unless_blocked();
                return Err(PublishError::Timeout(timeout));
            }
        };
        let confirm_started = Instant::now();
        let mut confirm = Box::pin(confirm);
        let confirmation = match tokio::time::timeout_at(deadline_at, &mut confirm).await {
            Ok(Ok(confirmation)) => confirmation,
            Ok(Err(err)) => {
                link.mark_broken();
                return Err(PublishError::ChannelClosed(err));
            }
            Err(_elapsed) => {
                self.await_late_confirm(link, confirm, sent_ms, permit, guard);
                return Err(PublishError::Timeout(timeout));
            }
        };
        drop(guard);
        drop(permit);
        match confirmation {
            Confirmation::Ack(None) => {
                link.last_ack_ms.fetch_max(link.now_ms(), Ordering::Relaxed);
                Ok(confirm_started.elapsed())
            }
            Confirmation::Ack(Some(returned)) | Confirmation::Nack(Some(returned)) => {
                // Every routing key matches the binding we declare, so a return
                // means the topology is gone (a queue deleted under us). Only a
                // reconnect re-declares it; without this the link stayed "up"
                // and every webhook got 503 until something else broke it.
                link.mark_broken();
                let returned_id = returned
                    .delivery
                    .properties
                    .message_id()
                    .as_ref()
                    .map(|id| id.as_str().to_owned());
                if returned_id.as_deref() != Some(message_id.to_string().as_str()) {
                    // lapin hands a channel's returns to whichever confirm a
                    // (multiple) ack completes first, so the return may belong
                    // to another publish of the same ack — which may then have
                    // been answered 200 although the broker did not route it.
                    tracing::error!(
                        %message_id,
                        returned = returned_id.as_deref().unwrap_or("none"),
                        "RabbitMQ returned another publish than this one as unroutable: \
                         that webhook may have been answered 200 without being queued \
                         (the queue or its binding was removed under live traffic)"
                    );
                }
                Err(PublishError::Unroutable(returned.reply_text.to_string()))
            }
            Confirmation::Nack(None) => Err(PublishError::Nacked),
            // confirm_select is set on every channel before it is used.
            Confirmation::NotRequested => Err(PublishError::Nacked),
        }
    }

    /// A confirm that missed its request's deadline: keep awaiting it (and its
    /// permit) in the background. If the link acked nothing since this publish
    /// was sent and still does not within another deadline, the link is dead
    /// in a way the socket has not noticed (a cut network path): replace it.
    fn await_late_confirm(
        &self,
        link: Arc<Link>,
        mut confirm: std::pin::Pin<Box<PublisherConfirm>>,
        sent_ms: u64,
        permit: OwnedSemaphorePermit,
        guard: InFlight,
    ) {
        let timeout = self.inner.settings.publish_timeout;
        if link.last_ack_ms.load(Ordering::Relaxed) < sent_ms && !link.is_blocked() {
            tracing::warn!(
                "no confirm from RabbitMQ on this link for {timeout:?}; replacing the connection"
            );
            link.mark_broken();
        }
        self.inner.orphans.spawn(async move {
            let outcome = tokio::time::timeout(timeout, &mut confirm).await;
            match outcome {
                Ok(Ok(confirmation)) if confirmation.is_ack() => {
                    link.last_ack_ms.fetch_max(link.now_ms(), Ordering::Relaxed);
                    tracing::warn!(
                        "a confirm arrived after its request was answered 503; \
                         if the sender retries, the worker stores the webhook once"
                    );
                }
                Ok(_) => {}
                Err(_) => link.mark_broken_unless_blocked(),
            }
            drop((permit, guard));
        });
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
            close_link(&link, timeout).await;
        }
        self.inner.health.set_broker(false);
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

/// Keeps a link up: connect, declare, serve until it fails, back off, repeat.
async fn supervise(inner: Arc<Inner>) {
    let settings = &inner.settings.amqp;
    let mut backoff = amqp::reconnect_backoff(settings.reconnect_max());
    loop {
        if inner.shutdown.is_cancelled() {
            return;
        }
        let established = tokio::select! {
            () = inner.shutdown.cancelled() => return,
            established = establish(&inner) => established,
        };
        match established {
            Ok((link, events)) => {
                metrics::broker_connect_attempt(true);
                tracing::info!(
                    channels = link.channels.len(),
                    "connected to RabbitMQ; topology declared"
                );
                backoff = amqp::reconnect_backoff(settings.reconnect_max());
                *inner.link.write().expect("link lock poisoned") = Some(link.clone());
                inner.health.set_broker(true);
                let reason = tokio::select! {
                    () = inner.shutdown.cancelled() => return,
                    reason = watch(&link, events) => reason,
                };
                inner.link.write().expect("link lock poisoned").take();
                inner.health.set_broker(false);
                metrics::broker_blocked(false);
                tracing::warn!(
                    reason,
                    "lost the RabbitMQ link; webhooks get 503 until it is back"
                );
                let timeout = settings.connect_timeout();
                tokio::spawn(async move { close_link(&link, timeout).await });
            }
            Err(err) => {
                metrics::broker_connect_attempt(false);
                tracing::warn!(
                    error = amqp::error_chain(&err),
                    "cannot connect to RabbitMQ; retrying"
                );
            }
        }
        let delay = backoff.next().unwrap_or(settings.reconnect_max());
        tokio::select! {
            () = inner.shutdown.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
    }
}

type Events = std::pin::Pin<Box<dyn futures_util::Stream<Item = Event> + Send>>;

async fn establish(inner: &Inner) -> Result<(Arc<Link>, Events), AmqpError> {
    let settings = &inner.settings.amqp;
    let timeout = settings.connect_timeout();
    let (connection, first) =
        amqp::connect_and_declare(settings, &inner.topology, "corral-ingress").await?;
    let events: Events = Box::pin(connection.events_listener());
    let setup = async {
        let mut channels = Vec::with_capacity(inner.settings.channels as usize);
        channels.push(first);
        while channels.len() < inner.settings.channels as usize {
            channels
                .push(deadline("opening a channel", timeout, connection.create_channel()).await?);
        }
        for channel in &channels {
            deadline(
                "enabling publisher confirms",
                timeout,
                channel.confirm_select(ConfirmSelectOptions::default()),
            )
            .await?;
        }
        Ok::<_, AmqpError>(channels)
    };
    let channels = match setup.await {
        Ok(channels) => channels,
        Err(err) => {
            let _ =
                tokio::time::timeout(timeout, connection.close(200, "setup failed".into())).await;
            return Err(err);
        }
    };
    let link = Arc::new(Link {
        connection,
        channels,
        next: AtomicUsize::new(0),
        broken: AtomicBool::new(false),
        failed: Notify::new(),
        last_ack_ms: AtomicU64::new(0),
        born: Instant::now(),
        blocked: RwLock::new(None),
    });
    Ok((link, events))
}

/// Resolves when the link must be replaced, with the reason.
async fn watch(link: &Link, mut events: Events) -> String {
    // A backstop for failures the event stream does not report.
    let mut poll = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            () = link.failed.notified() => return "a publish failed on it".into(),
            event = events.next() => match event {
                None => return "the connection ended".into(),
                Some(Event::Error(err)) => return amqp::error_chain(&err),
                Some(Event::ConnectionBlocked(reason)) => {
                    tracing::warn!(reason, "RabbitMQ blocked publishing; webhooks get 503 until unblocked");
                    metrics::broker_blocked(true);
                    *link.blocked.write().expect("blocked lock poisoned") = Some(reason);
                }
                Some(Event::ConnectionUnblocked) => {
                    tracing::info!("RabbitMQ unblocked publishing");
                    metrics::broker_blocked(false);
                    link.blocked.write().expect("blocked lock poisoned").take();
                }
                Some(_) => {}
            },
            _ = poll.tick() => {
                if link.broken.load(Ordering::SeqCst) {
                    return "a publish failed on it".into();
                }
                if !link.connection.status().connected() {
                    return "the connection is no longer open".into();
                }
                if let Some(closed) = link.channels.iter().find(|c| !c.status().connected()) {
                    return format!("channel {} closed", closed.id());
                }
            }
        }
    }
}

async fn close_link(link: &Link, timeout: Duration) {
    if link.connection.status().connected() {
        let _ = tokio::time::timeout(
            timeout,
            link.connection.close(200, "corral-ingress closing".into()),
        )
        .await;
    }
}
