//! One batch: written until it commits (or the drain's deadline passes), then
//! acknowledged and counted.

use std::{
    future::Future,
    pin::Pin,
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use corral_runtime::{
    admin::Health,
    error_chain, retry,
    telemetry::{
        labels::{DbErrorKind, MessageOutcome},
        metrics,
    },
};
use deadpool_postgres::Pool;
use tokio::sync::watch;

use super::{ConsumerSettings, SessionEnd};
use crate::{
    source::{Ack, Contents, Delivery, SourceError},
    store::{self, BatchOutcome, Prepared},
};

/// A batch being written, resolving when it committed (or gave up).
pub(super) type Write<A> = Pin<Box<dyn Future<Output = Result<Written<A>, SessionEnd>> + Send>>;

/// A committed batch, waiting for its turn to be acknowledged.
pub(super) struct Written<A> {
    /// Messages of the buffer in the batch.
    pub(super) messages: usize,
    /// Webhooks in those messages (and messages quarantined whole).
    webhooks: usize,
    /// The ack of the batch's last delivery, which covers the whole batch.
    ack: A,
    outcome: BatchOutcome,
    write_time: Duration,
    /// When ingress received each webhook, for the end-to-end histogram.
    received: Vec<DateTime<Utc>>,
}

/// Why one attempt to write a batch did not commit.
#[derive(Debug, thiserror::Error)]
enum WriteError {
    // Neither holds its error as a `source`: both libraries already print
    // their cause in their message, so a chain would show it twice.
    /// No pooled connection could be had.
    #[error("no database connection: {0}")]
    Pool(deadpool_postgres::PoolError),
    /// PostgreSQL refused or failed a statement.
    #[error("the batch write failed: {0}")]
    Database(tokio_postgres::Error),
    /// The attempt as a whole outlived its deadline.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// Writes one batch, retrying transient database failures with backoff
/// while its messages stay unacknowledged — until it commits, or until the
/// shutdown drain's deadline (once one is set) passes.
pub(super) fn start<A: Ack>(
    settings: ConsumerSettings,
    batch: Vec<Delivery<A>>,
    pool: Pool,
    health: Health,
    drain: watch::Receiver<Option<tokio::time::Instant>>,
) -> Write<A> {
    Box::pin(async move {
        let size = batch.len();
        tokio::select! {
            written = until_committed(&settings, batch, &pool, &health) => written,
            () = drain_deadline_passed(drain) => Err(SessionEnd::DrainTimedOut(size)),
        }
    })
}

async fn drain_deadline_passed(mut drain: watch::Receiver<Option<tokio::time::Instant>>) {
    loop {
        let deadline = *drain.borrow_and_update();
        if let Some(at) = deadline {
            tokio::time::sleep_until(at).await;
            return;
        }
        if drain.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

async fn until_committed<A: Ack>(
    settings: &ConsumerSettings,
    batch: Vec<Delivery<A>>,
    pool: &Pool,
    health: &Health,
) -> Result<Written<A>, SessionEnd> {
    let messages = batch.len();
    let mut webhooks = Vec::with_capacity(batch.iter().map(Delivery::webhooks).sum());
    let mut unreadable = Vec::new();
    let mut last = None;
    for delivery in batch {
        match delivery.contents {
            Contents::Webhooks(inside) => webhooks.extend(inside),
            Contents::Unreadable {
                message,
                error,
                logged,
            } => unreadable.push((message, error, logged)),
        }
        last = Some(delivery.ack);
    }
    let ack = last.expect("a batch is never empty");
    let started = Instant::now();
    let mut prepared = store::prepare_all(&webhooks).with_result_events(settings.result_events);
    for (message, error, logged) in &unreadable {
        prepared.quarantine(message, error, logged);
    }
    let outcome = retry::until_final(
        settings.db_retry_max,
        || attempt(settings, pool, health, &prepared),
        // An ack that cannot reach the source: it gives these out again elsewhere.
        |_| ack.usable(),
    )
    .await
    .map_err(|_| SourceError::Closed("the source closed while the batch was retried"))?;
    if outcome.stored > 0 {
        settings.results.poke();
    }
    Ok(Written {
        messages,
        webhooks: prepared.len(),
        ack,
        outcome,
        write_time: started.elapsed(),
        received: webhooks
            .iter()
            .chain(unreadable.iter().map(|(message, ..)| message))
            .filter_map(|m| m.envelope.received_at)
            .collect(),
    })
}

/// One attempt, bounded as a whole, with readiness and the failure recorded.
async fn attempt(
    settings: &ConsumerSettings,
    pool: &Pool,
    health: &Health,
    batch: &Prepared<'_>,
) -> Result<BatchOutcome, WriteError> {
    let bound = settings.db_timeout * 3;
    let write = async {
        let mut client = pool.get().await.map_err(WriteError::Pool)?;
        store::write_batch(&mut client, batch)
            .await
            .map_err(WriteError::Database)
    };
    let result = tokio::time::timeout(bound, write)
        .await
        .unwrap_or(Err(WriteError::Timeout(bound)));
    match &result {
        Ok(_) => health.set_database(true),
        Err(WriteError::Database(err)) if crate::db::is_newer_schema(err) => {
            crate::db::stop_on_newer_schema(&error_chain(err))
        }
        Err(err) => {
            health.set_database(false);
            metrics::worker_db_error(DbErrorKind::Transient);
            tracing::warn!(
                error = error_chain(err),
                webhooks = batch.len(),
                "batch not committed; retrying (nothing acknowledged)"
            );
        }
    }
    result
}

/// Acknowledges a committed batch and records its metrics.
pub(super) async fn acknowledge<A: Ack>(written: Written<A>) -> Result<(), SessionEnd> {
    let Written {
        messages,
        webhooks,
        ack,
        outcome,
        write_time,
        received,
    } = written;
    tracing::debug!(
        messages,
        webhooks,
        ?ack,
        ?outcome,
        ?write_time,
        "batch committed"
    );
    let acked = ack.ack().await;
    let committed_at = Utc::now();
    metrics::worker_batch(webhooks, write_time);
    metrics::worker_messages(MessageOutcome::Stored, outcome.stored);
    metrics::worker_messages(MessageOutcome::Duplicate, outcome.duplicate);
    metrics::worker_messages(MessageOutcome::Quarantined, outcome.quarantined);
    outcome.deliveries.record();
    for received_at in received {
        let seconds = (committed_at - received_at).num_microseconds().unwrap_or(0) as f64 / 1e6;
        metrics::worker_end_to_end(seconds.max(0.0));
    }
    acked.map_err(|err| {
        metrics::worker_ack_failed();
        err.into()
    })
}
