//! One consuming session: batches fill from the source, up to
//! `CORRAL_DB_WRITERS` of them are written at once (each on its own pooled
//! connection, so PostgreSQL works on them in parallel while the next batch
//! fills), and they are acknowledged strictly in delivery order: an ack of a
//! batch's last delivery then never covers a message of a batch that has not
//! committed yet.
//!
//! A batch closes at `CORRAL_BATCH_MAX` webhooks, or at a sixteenth of the
//! byte budget of bodies (a batch being written holds several copies of its
//! bodies: rows, parameters, the statement), or, when the byte budget cut
//! the prefetch below `CORRAL_PREFETCH`, at its share of the prefetch,
//! prefetch ÷ (`CORRAL_DB_WRITERS` + 1) messages, so that a prefetch of few
//! messages still keeps every writer busy (small messages fill it long
//! before `CORRAL_BATCH_MAX` webhooks); and a batch that holds all the source will send
//! before an acknowledgement is written at once rather than after the
//! linger, since waiting could bring nothing.

use corral_runtime::{admin::Health, error_chain, telemetry::metrics};
use deadpool_postgres::Pool;
use futures_util::{StreamExt, stream::FuturesOrdered};
use tokio::{sync::watch, time::Instant};
use tokio_util::sync::CancellationToken;

use super::{
    ConsumerSettings, SessionEnd,
    write::{self, Write, Written},
};
use crate::source::{Ack, Delivery, Source, SourceError};

/// Consumes from `source` until it ends, fails, or shutdown has drained.
pub(super) async fn session<S: Source>(
    settings: &ConsumerSettings,
    source: &mut S,
    pool: &Pool,
    health: &Health,
    shutdown: &CancellationToken,
) -> SessionEnd {
    let (drain_tx, _) = watch::channel(None);
    let mut batcher = Batcher {
        settings,
        pool,
        health,
        writes: FuturesOrdered::new(),
        filling: Vec::with_capacity(settings.batch_max),
        filling_webhooks: 0,
        filling_bytes: 0,
        linger_until: None,
        flush: false,
        drain_deadline: None,
        drain_tx,
        ended: None,
        held: 0,
        max_messages: match source.limit() {
            Some(limit) if limit < usize::from(settings.prefetch_cap) => {
                (limit / (settings.writers + 1)).max(1)
            }
            _ => usize::MAX,
        },
    };
    loop {
        if !batcher.filling.is_empty() && source.saturated(batcher.in_hand()) {
            batcher.flush = true;
        }
        if batcher.ready() && batcher.writes.len() < settings.writers {
            batcher.start_write();
            continue;
        }
        if batcher.filling.is_empty()
            && batcher.writes.is_empty()
            && let Some(end) = batcher.ended.take()
        {
            return end;
        }
        let next = batcher.next(source, shutdown).await;
        if let Some(end) = batcher.handle(next, source).await {
            return end;
        }
    }
}

/// The state of a session between two events.
struct Batcher<'a, A> {
    settings: &'a ConsumerSettings,
    pool: &'a Pool,
    health: &'a Health,
    /// Batches being written, in delivery order.
    writes: FuturesOrdered<Write<A>>,
    /// The batch being filled: whole messages, never part of one.
    filling: Vec<Delivery<A>>,
    /// Webhooks in `filling`, which `CORRAL_BATCH_MAX` bounds.
    filling_webhooks: usize,
    /// Bytes of the bodies in `filling`.
    filling_bytes: usize,
    /// When the batch being filled must be written, full or not.
    linger_until: Option<Instant>,
    /// Write the batch being filled as soon as a writer is free.
    flush: bool,
    /// Set at shutdown: past it, whatever is uncommitted is left to redelivery.
    drain_deadline: Option<Instant>,
    /// Tells batches already being written when the drain must end, so a
    /// write stuck on a dead database cannot outlive CORRAL_SHUTDOWN_TIMEOUT_MS.
    drain_tx: watch::Sender<Option<Instant>>,
    /// Why the session ends, once the source has stopped delivering.
    ended: Option<SessionEnd>,
    /// Messages (of the buffer, as the prefetch counts them) in batches
    /// being written or waiting for their ack.
    held: usize,
    /// Messages a batch holds at most, so that a prefetch the byte budget
    /// cut to few messages still keeps every writer busy.
    max_messages: usize,
}

/// What woke the session.
enum Next<A> {
    Written(Result<Written<A>, SessionEnd>),
    Delivery(Delivery<A>),
    LingerOver,
    Shutdown,
    DrainDeadline,
    Ended,
    Failed(SourceError),
}

impl<A: Ack> Batcher<'_, A> {
    /// Messages received and not yet acknowledged.
    fn in_hand(&self) -> usize {
        self.held + self.filling.len()
    }

    /// Whether the batch being filled should be written now.
    fn ready(&self) -> bool {
        !self.filling.is_empty() && (self.full() || self.flush || self.ended.is_some())
    }

    /// Whether the batch being filled holds `CORRAL_BATCH_MAX` webhooks (one
    /// message may take it past that alone, since a message is never split
    /// across transactions: its ack covers all of its webhooks), its bytes,
    /// or its share of the prefetch.
    fn full(&self) -> bool {
        self.filling_webhooks >= self.settings.batch_max
            || self.filling_bytes >= self.settings.batch_max_bytes
            || self.filling.len() >= self.max_messages
    }

    fn start_write(&mut self) {
        self.held += self.filling.len();
        metrics::worker_in_hand_changed(self.filling.len() as f64);
        let batch = std::mem::replace(
            &mut self.filling,
            Vec::with_capacity(self.settings.batch_max),
        );
        self.writes.push_back(write::start(
            self.settings.clone(),
            batch,
            self.pool.clone(),
            self.health.clone(),
            self.drain_tx.subscribe(),
        ));
        self.filling_webhooks = 0;
        self.filling_bytes = 0;
        self.linger_until = None;
        self.flush = false;
    }

    /// Waits for the next thing to do: a committed batch first, so acks are
    /// never starved by a busy source.
    async fn next<S: Source<Ack = A>>(
        &mut self,
        source: &mut S,
        shutdown: &CancellationToken,
    ) -> Next<A> {
        let ready = self.ready();
        let taking = self.ended.is_none() && !self.full();
        tokio::select! {
            biased;
            Some(written) = self.writes.next(), if !self.writes.is_empty() => Next::Written(written),
            () = shutdown.cancelled(), if self.drain_deadline.is_none() => Next::Shutdown,
            () = sleep_until(self.drain_deadline), if self.drain_deadline.is_some() && self.ended.is_none() => Next::DrainDeadline,
            () = sleep_until(self.linger_until), if self.linger_until.is_some() && !ready => Next::LingerOver,
            item = source.next(), if taking => match item {
                Some(Ok(delivery)) => Next::Delivery(delivery),
                Some(Err(err)) => Next::Failed(err),
                None => Next::Ended,
            },
        }
    }

    /// Acts on `next`; `Some` ends the session.
    async fn handle<S: Source<Ack = A>>(
        &mut self,
        next: Next<A>,
        source: &mut S,
    ) -> Option<SessionEnd> {
        match next {
            Next::Written(Ok(written)) => {
                self.held -= written.messages;
                metrics::worker_in_hand_changed(-(written.messages as f64));
                return write::acknowledge(written).await.err();
            }
            Next::Written(Err(end)) => return Some(end),
            Next::Delivery(delivery) => {
                if self.linger_until.is_none() {
                    self.linger_until = Some(Instant::now() + self.settings.batch_linger);
                }
                self.filling_webhooks += delivery.webhooks();
                self.filling_bytes += delivery.bytes();
                self.filling.push(delivery);
            }
            Next::LingerOver => self.flush = true,
            Next::Shutdown => self.start_drain(source).await,
            // The source did not end by itself; what is in hand still gets
            // its attempt until here.
            Next::DrainDeadline => {
                let uncommitted = self.held + self.filling.len();
                return Some(if uncommitted == 0 {
                    SessionEnd::Drained
                } else {
                    SessionEnd::DrainTimedOut(uncommitted)
                });
            }
            Next::Ended => {
                self.ended = Some(if self.drain_deadline.is_some() {
                    SessionEnd::Drained
                } else {
                    SourceError::Closed("the source ended without being asked to").into()
                });
            }
            Next::Failed(err) => self.ended = Some(err.into()),
        }
        None
    }

    /// Stops new deliveries; the ones already sent still come through the
    /// source, which then ends.
    async fn start_drain<S: Source<Ack = A>>(&mut self, source: &mut S) {
        let deadline = Instant::now() + self.settings.shutdown_timeout;
        self.drain_deadline = Some(deadline);
        self.drain_tx.send_replace(Some(deadline));
        self.health.start_draining();
        tracing::info!(
            in_hand = self.filling.len() + self.held,
            "draining: cancelling the consumer"
        );
        if let Err(err) = source.stop().await {
            tracing::warn!(error = error_chain(&err), "could not cancel the consumer");
        }
    }
}

/// A session that ends, however it ends, no longer holds its messages: the
/// buffer gives back what was not acknowledged.
impl<A> Drop for Batcher<'_, A> {
    fn drop(&mut self) {
        metrics::worker_in_hand_changed(-(self.held as f64));
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
