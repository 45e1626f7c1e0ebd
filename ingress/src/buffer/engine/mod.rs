//! Group commit, written once for every durable path: requests queue their
//! webhooks, and whenever one of the sink's slots is free a dispatcher takes
//! everything waiting (up to a count and a size, lingering for more where
//! the sink asks) and hands it to the sink as one round.
//!
//! The engine owns what every sink needs alike: the queues (one per lane),
//! the bounds of a round, the slots (rounds in progress at once), the bound
//! on webhooks awaiting a verdict with its gauge, each request's deadline,
//! and shutdown, which sends what is queued, waits (bounded) for the rounds
//! in progress, and stops. A [`Sink`] supplies only its [`Bounds`], what a
//! webhook weighs, and how one round is sent (a RabbitMQ message confirmed,
//! a `SendMessageBatch` answered, a spool INSERT committed); where it needs
//! them, a lane per webhook and a check that refuses at once.
//!
//! A round holds its slot until the sink is done with it, even after its
//! requests gave up waiting: a stalled service cannot pile up unresolved
//! sends. A webhook whose request stopped waiting before its round formed is
//! left out of it: sending it would store a copy nobody waits for.
//!
//! # Layout
//!
//! - this module: the [`Sink`] seam, a request from its slot to its verdict,
//!   the dispatchers, shutdown.
//! - `round`: a round as a sink sees it, and the answers to its requests.
//! - `rounds`: the queue, forming rounds.

mod round;
mod rounds;
#[cfg(test)]
mod tests;

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use corral_runtime::telemetry::metrics;
use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore, mpsc},
    time::Instant,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use self::{round::Entry, rounds::Rounds};
pub(super) use self::{round::Round, rounds::Limits};
use super::Webhook;
use crate::budget::Lease;

/// What a request learns about its webhook: how long the sink took to make
/// it durable, or why it did not.
pub(super) type Verdict<E> = Result<Duration, E>;

/// Why the engine itself refused a webhook, before or instead of its sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stopped {
    /// Every in-flight slot stayed taken for the whole wait.
    Overloaded,
    /// No verdict by the request's deadline (the sink's timeout).
    Timeout(Duration),
    /// The engine is closing.
    ShuttingDown,
}

/// How a sink's rounds are formed and bounded.
#[derive(Debug, Clone, Copy)]
pub(super) struct Bounds {
    /// A round's count and size.
    pub(super) round: Limits,
    /// How long a round that is not full waits for more; zero sends at once.
    pub(super) linger: Duration,
    /// Queues, each with its own dispatcher (rounds never mix lanes); they
    /// share the slots.
    pub(super) lanes: usize,
    /// Rounds in progress at once.
    pub(super) slots: usize,
    /// A request's whole wait for its verdict.
    pub(super) timeout: Duration,
    /// The bound on webhooks awaiting a verdict, when the engine keeps one
    /// (`corral_ingress_publishes_in_flight` counts them).
    pub(super) in_flight: Option<InFlightBound>,
}

/// `CORRAL_MAX_IN_FLIGHT`, and how long a request waits for a slot of it.
#[derive(Debug, Clone, Copy)]
pub(super) struct InFlightBound {
    /// Webhooks awaiting a verdict at most.
    pub(super) max: usize,
    /// The longest wait for one of those slots.
    pub(super) wait: Duration,
}

/// A durable service rounds are sent to.
pub(super) trait Sink: std::fmt::Debug + Send + Sync + 'static {
    /// Why a webhook was not taken; cloned to every webhook a failure befell.
    type Error: From<Stopped> + Clone + std::fmt::Debug + Send + Sync + 'static;

    /// How rounds are formed and bounded.
    fn bounds(&self) -> Bounds;

    /// What `webhook` adds to a round's size.
    fn size(&self, webhook: &Webhook) -> usize;

    /// The lane of `webhook`, below [`Bounds::lanes`].
    fn lane(&self, _webhook: &Webhook) -> usize {
        0
    }

    /// `Err` when the sink would refuse any webhook now: it is refused at
    /// once rather than after a wait in the queue.
    fn ready(&self) -> Result<(), Self::Error> {
        Ok(())
    }

    /// Sends one round, answering each of its webhooks (as soon as its own
    /// verdict is known: a round may take several calls).
    fn send(&self, round: Round<Self::Error>) -> impl Future<Output = ()> + Send;
}

/// Group commit over a sink; clone freely.
#[derive(Debug)]
pub(super) struct Engine<S: Sink> {
    inner: Arc<Inner<S>>,
}

impl<S: Sink> Clone for Engine<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

#[derive(Debug)]
struct Inner<S: Sink> {
    sink: Arc<S>,
    bounds: Bounds,
    /// Where requests queue their webhooks, one queue per lane.
    queues: Vec<mpsc::UnboundedSender<Entry<S::Error>>>,
    /// Bounds webhooks awaiting a verdict, when the sink has that bound.
    permits: Option<Arc<Semaphore>>,
    /// Webhooks awaiting a verdict, for the gauge.
    in_flight: Arc<InFlightCount>,
    /// Bounds rounds in progress.
    slots: Arc<Semaphore>,
    /// Ends the dispatchers once what is queued has been sent.
    shutdown: CancellationToken,
    /// The dispatchers and every round until the sink is done with it.
    sending: TaskTracker,
}

impl<S: Sink> Engine<S> {
    /// Starts a dispatcher per lane of `sink`. `shutdown` ends them; cancel
    /// it through [`Engine::close`].
    pub(super) fn start(sink: Arc<S>, shutdown: CancellationToken) -> Self {
        let bounds = sink.bounds();
        // Unbounded, because what enters them is bounded before: every entry
        // holds its body's lease of `CORRAL_MAX_IN_FLIGHT_BYTES` (and, where
        // the sink has one, an in-flight slot).
        let (queues, receivers): (Vec<_>, Vec<_>) =
            (0..bounds.lanes).map(|_| mpsc::unbounded_channel()).unzip();
        let inner = Arc::new(Inner {
            sink,
            permits: bounds.in_flight.map(|b| Arc::new(Semaphore::new(b.max))),
            in_flight: Arc::default(),
            slots: Arc::new(Semaphore::new(bounds.slots)),
            bounds,
            queues,
            shutdown,
            sending: TaskTracker::new(),
        });
        for receiver in receivers {
            inner.sending.spawn(dispatch(inner.clone(), receiver));
        }
        Self { inner }
    }

    /// Queues `webhook` and waits for the verdict on the round carrying it,
    /// at most the sink's timeout.
    pub(super) async fn keep(&self, webhook: Webhook, lease: Lease) -> Verdict<S::Error> {
        let deadline = Instant::now() + self.inner.bounds.timeout;
        self.keep_until(webhook, lease, deadline).await
    }

    /// As [`Engine::keep`], waiting at most until `deadline`. Once this
    /// future is dropped, a webhook not yet in a round is left out of it.
    pub(super) async fn keep_until(
        &self,
        webhook: Webhook,
        lease: Lease,
        deadline: Instant,
    ) -> Verdict<S::Error> {
        let inner = &*self.inner;
        let permit = self.admit().await?;
        inner.sink.ready()?;
        let _in_flight = permit.as_ref().map(|_| InFlight::enter(&inner.in_flight));
        let lane = inner.sink.lane(&webhook);
        let size = inner.sink.size(&webhook);
        let (entry, verdict) = Entry::new(webhook, size, lease);
        if inner.queues[lane].send(entry).is_err() {
            // The lane's dispatcher has stopped.
            return Err(Stopped::ShuttingDown.into());
        }
        match tokio::time::timeout_at(deadline, verdict).await {
            Ok(Ok(verdict)) => verdict,
            Ok(Err(_dropped)) => Err(Stopped::ShuttingDown.into()),
            Err(_elapsed) => Err(Stopped::Timeout(inner.bounds.timeout).into()),
        }
    }

    /// An in-flight slot, where the sink has that bound, waiting at most
    /// `CORRAL_IN_FLIGHT_WAIT_MS`.
    async fn admit(&self) -> Result<Option<OwnedSemaphorePermit>, Stopped> {
        let inner = &*self.inner;
        let (Some(permits), Some(bound)) = (&inner.permits, inner.bounds.in_flight) else {
            return Ok(None);
        };
        let wait = bound.wait.min(inner.bounds.timeout);
        match tokio::time::timeout(wait, permits.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(Some(permit)),
            Ok(Err(_closed)) => Err(Stopped::ShuttingDown),
            Err(_elapsed) => Err(Stopped::Overloaded),
        }
    }

    /// Sends what is still queued, and waits (at most `timeout`) for the
    /// rounds in progress to end.
    pub(super) async fn close(&self, timeout: Duration) {
        self.inner.shutdown.cancel();
        self.inner.sending.close();
        let _ = tokio::time::timeout(timeout, self.inner.sending.wait()).await;
    }
}

/// Forms rounds from one lane's queue until shutdown; then sends what is
/// still queued and ends.
async fn dispatch<S: Sink>(inner: Arc<Inner<S>>, queue: mpsc::UnboundedReceiver<Entry<S::Error>>) {
    let linger = inner.bounds.linger;
    let mut rounds = Rounds::new(queue, inner.bounds.round);
    while let Some(first) = rounds.first(&inner.shutdown).await {
        // Lingering counts from the first webhook's turn, so time spent
        // waiting for a free slot (the service slow) is not added to it.
        let until = Instant::now() + linger;
        // A slot only once there is something to send: the slots are shared
        // with the other lanes, which must not wait behind one held by an
        // idle queue. Whatever arrives while this waits goes too.
        let Ok(slot) = inner.slots.clone().acquire_owned().await else {
            return;
        };
        let entries = if linger.is_zero() {
            rounds.fill(first)
        } else {
            rounds.gather(first, until, &inner.shutdown).await
        };
        if !entries.is_empty() {
            inner.sending.spawn(send(inner.clone(), entries, slot));
        }
    }
}

/// Hands one round to the sink; its slot is free once the sink is done.
async fn send<S: Sink>(
    inner: Arc<Inner<S>>,
    entries: Vec<Entry<S::Error>>,
    slot: OwnedSemaphorePermit,
) {
    inner.sink.send(Round::new(entries)).await;
    drop(slot);
}

/// Webhooks awaiting a verdict (`corral_ingress_publishes_in_flight`).
#[derive(Debug, Default)]
struct InFlightCount(AtomicUsize);

/// Counts a webhook awaiting its verdict for as long as it lives.
struct InFlight(Arc<InFlightCount>);

impl InFlight {
    fn enter(count: &Arc<InFlightCount>) -> Self {
        let now = count.0.fetch_add(1, Ordering::Relaxed) + 1;
        metrics::ingress_in_flight(now);
        Self(count.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let now = self.0.0.fetch_sub(1, Ordering::Relaxed) - 1;
        metrics::ingress_in_flight(now);
    }
}
