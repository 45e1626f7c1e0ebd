//! The broker link: one connection with its confirm-mode channels, and the
//! supervisor that keeps one up.

use std::{
    sync::{
        Arc, PoisonError, RwLock,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    task::Poll,
    time::{Duration, Instant},
};

use corral_runtime::{
    amqp::{self, AmqpError, deadline},
    error_chain, retry,
    telemetry::metrics,
};
use futures_util::StreamExt;
use lapin::{
    BasicProperties, Channel, Connection, Event, PublisherConfirm, options::ConfirmSelectOptions,
    types::ShortString,
};
use tokio::sync::Notify;

use super::Broker;
use crate::budget::Lease;

/// One connection and its confirm channels.
#[derive(Debug)]
pub(super) struct Link {
    connection: Connection,
    channels: Vec<ConfirmChannel>,
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
    /// Leases of bodies whose frames were still queued when their publish
    /// gave up: lapin holds them until this connection is gone.
    stranded: std::sync::Mutex<Vec<Lease>>,
}

/// A confirm-mode channel shared by every HTTP worker thread, with the lock
/// that keeps its delivery tags in wire order.
///
/// lapin numbers a publish (the delivery tag its confirm will carry) under
/// one lock and queues its frames under another. Two threads publishing on
/// one channel can take tags 7 and 8 and put their frames on the wire as 8,
/// 7: the broker's verdict on message 7 then resolves the other request's
/// confirm, and a nacked webhook can be answered 200. Both steps happen in
/// the first poll of lapin's `basic_publish` (it only awaits afterwards, for
/// the frames to be written), so that first poll runs under `order`; the
/// wait for the socket does not.
#[derive(Debug)]
pub(super) struct ConfirmChannel {
    channel: Channel,
    order: std::sync::Mutex<()>,
}

impl ConfirmChannel {
    fn new(channel: Channel) -> Self {
        Self {
            channel,
            order: std::sync::Mutex::new(()),
        }
    }

    /// A mandatory publish whose delivery tag matches its place on the wire.
    pub(super) async fn publish(
        &self,
        exchange: ShortString,
        routing_key: ShortString,
        body: &[u8],
        properties: BasicProperties,
    ) -> lapin::Result<PublisherConfirm> {
        let mut publish = std::pin::pin!(amqp::publish_mandatory(
            &self.channel,
            exchange,
            routing_key,
            body,
            properties,
        ));
        let first = std::future::poll_fn(|cx| {
            // Nothing panics while the lock is held, so a poisoned lock still
            // guards nothing broken.
            let _order = self.order.lock().unwrap_or_else(PoisonError::into_inner);
            Poll::Ready(publish.as_mut().poll(cx))
        })
        .await;
        match first {
            Poll::Ready(result) => result,
            Poll::Pending => publish.await,
        }
    }

    fn status(&self) -> &lapin::ChannelStatus {
        self.channel.status()
    }

    fn id(&self) -> u16 {
        self.channel.id()
    }
}

impl Link {
    /// The next channel, round-robin.
    pub(super) fn channel(&self) -> &ConfirmChannel {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.channels.len();
        &self.channels[i]
    }

    /// A broker alarm stops RabbitMQ reading the socket, so confirms stall on
    /// a healthy link; replacing it would only bring a fresh, unblocked-looking
    /// link that stalls again (and reset the blocked gauge the alert watches).
    pub(super) fn mark_broken_unless_blocked(&self) {
        if !self.is_blocked() {
            self.mark_broken();
        }
    }

    /// Why the broker blocks publishing, while it does.
    pub(super) fn blocked_reason(&self) -> Option<String> {
        self.blocked.read().expect("blocked lock poisoned").clone()
    }

    pub(super) fn is_blocked(&self) -> bool {
        self.blocked
            .read()
            .expect("blocked lock poisoned")
            .is_some()
    }

    /// Whether the link was asked to be replaced.
    pub(super) fn is_broken(&self) -> bool {
        self.broken.load(Ordering::SeqCst)
    }

    /// Asks the supervisor to replace this link.
    pub(super) fn mark_broken(&self) {
        if !self.broken.swap(true, Ordering::SeqCst) {
            self.failed.notify_one();
        }
    }

    /// Milliseconds since the link was made: the clock of `last_ack_ms`.
    pub(super) fn now_ms(&self) -> u64 {
        self.born.elapsed().as_millis() as u64
    }

    /// Records an ack now.
    pub(super) fn acked(&self) {
        self.last_ack_ms.fetch_max(self.now_ms(), Ordering::Relaxed);
    }

    /// Whether anything was acked after `sent_ms`.
    pub(super) fn acked_since(&self, sent_ms: u64) -> bool {
        self.last_ack_ms.load(Ordering::Relaxed) >= sent_ms
    }

    /// Keeps `leases` until this link is dropped.
    pub(super) fn strand(&self, leases: Vec<Lease>) {
        self.stranded
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(leases);
    }

    /// Closes the connection (bounded by `timeout`).
    pub(super) async fn close(&self, timeout: Duration) {
        amqp::close(&self.connection, timeout, "corral-ingress closing").await;
    }
}

/// Keeps a link up: connect (backing off while that fails), declare, serve
/// until it fails, pause, repeat.
pub(super) async fn supervise(broker: Arc<Broker>) {
    let settings = &broker.settings.amqp;
    loop {
        let connected = amqp::reconnect(&broker.shutdown, settings, || async {
            let established = establish(&broker).await;
            broker.health.broker_attempted();
            established
        })
        .await;
        let Some((link, events)) = connected else {
            return;
        };
        tracing::info!(
            channels = link.channels.len(),
            "connected to RabbitMQ; topology declared"
        );
        *broker.link.write().expect("link lock poisoned") = Some(link.clone());
        broker.health.set_broker(true);
        let reason = tokio::select! {
            () = broker.shutdown.cancelled() => return,
            reason = watch(&link, events) => reason,
        };
        broker.link.write().expect("link lock poisoned").take();
        broker.health.set_broker(false);
        metrics::broker_blocked(false);
        tracing::warn!(
            reason,
            "lost the RabbitMQ link; until it is back webhooks go to the spool, or get 503 without one"
        );
        let timeout = settings.connect_timeout();
        tokio::spawn(async move { link.close(timeout).await });
        retry::pause(&broker.shutdown, settings.reconnect_max()).await;
    }
}

type Events = std::pin::Pin<Box<dyn futures_util::Stream<Item = Event> + Send>>;

/// Connects, declares the topology and opens the confirm channels.
async fn establish(broker: &Broker) -> Result<(Arc<Link>, Events), AmqpError> {
    let settings = &broker.settings.amqp;
    let timeout = settings.connect_timeout();
    let (connection, first) =
        amqp::connect_and_declare(settings, &broker.topology, "corral-ingress").await?;
    let events: Events = Box::pin(connection.events_listener());
    let channels =
        match confirm_channels(&connection, first, broker.settings.channels, timeout).await {
            Ok(channels) => channels,
            Err(err) => {
                amqp::close(&connection, timeout, "setup failed").await;
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
        stranded: std::sync::Mutex::new(Vec::new()),
    });
    Ok((link, events))
}

/// `first` and more channels up to `count`, all in confirm mode.
async fn confirm_channels(
    connection: &Connection,
    first: Channel,
    count: u16,
    timeout: Duration,
) -> Result<Vec<ConfirmChannel>, AmqpError> {
    let mut channels = Vec::with_capacity(usize::from(count));
    channels.push(first);
    while channels.len() < usize::from(count) {
        channels.push(deadline("opening a channel", timeout, connection.create_channel()).await?);
    }
    for channel in &channels {
        deadline(
            "enabling publisher confirms",
            timeout,
            channel.confirm_select(ConfirmSelectOptions::default()),
        )
        .await?;
    }
    Ok(channels.into_iter().map(ConfirmChannel::new).collect())
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
                Some(Event::Error(err)) => return error_chain(&err),
                Some(Event::ConnectionBlocked(reason)) => {
                    tracing::warn!(
                        reason,
                        "RabbitMQ blocked publishing; until it unblocks webhooks go to the spool, or get 503 without one"
                    );
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
