//! The PostgreSQL spool: the second durable path, for webhooks RabbitMQ
//! cannot take in time.
//!
//! A webhook is spooled by one row in `spooled_webhooks` (its exact bytes,
//! id, `received_at` and kind), and its request is answered 200 only after
//! that row's COMMIT, with `synchronous_commit` on whatever the server's
//! default (so with a synchronous standby, after the standby has it too).
//! The worker drains the table into the same tables as queued webhooks.
//!
//! Group commit, as on the broker path: webhooks wait in one queue; a writer
//! takes one of `CORRAL_SPOOL_CONNECTIONS` slots once something waits, then
//! everything waiting (up to [`BATCH_MAX`] rows and [`BATCH_MAX_BYTES`]), and
//! inserts it with one multi-row INSERT. A burst that finds the broker gone
//! costs the database one COMMIT per round, not one per webhook.
//!
//! Ingress connects as a role that may only INSERT into that one table
//! (`corral_spool_writer`, from the migrations): a leaked ingress credential
//! can add webhooks, never read or remove one.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use corral_shared::{admin::Health, error_chain, telemetry::metrics};
use deadpool_postgres::Pool;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use uuid::Uuid;

use super::{
    Webhook,
    rounds::{Limits, Rounds, Waiting},
};
use crate::budget::Lease;

/// Rows per INSERT at most: a round's statement stays small (its parameters
/// are four arrays) and a failing round refuses a bounded number of requests.
pub const BATCH_MAX: usize = 256;

/// Body bytes per INSERT at most (a single larger webhook still goes, alone).
pub const BATCH_MAX_BYTES: usize = 4 * 1024 * 1024;

/// One INSERT for every row of a round: arrays in, rows out, no statement
/// text growing with the round. Only INSERT is needed: no table is read.
pub const INSERT: &str = "INSERT INTO spooled_webhooks (message_id, kind, body, received_at) \
                      SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::bytea[], $4::timestamptz[])";

/// What a spool write needs, without writing: the table, and the right to
/// INSERT into it. Reaching the server is not enough: a role never made a
/// member of `corral_spool_writer`, or a database not yet migrated, fails
/// every write.
const MAY_INSERT: &str = "SELECT has_table_privilege('spooled_webhooks', 'INSERT')";

/// How often the spool's reachability is checked while no webhook is spooled,
/// so `/readyz` and `corral_ingress_spool_connected` do not wait for an outage
/// of the broker to find out.
const CHECK_EVERY: Duration = Duration::from_secs(3);

/// Why the spool did not commit a webhook. Cloned to every webhook of the
/// round it befell.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SpoolError {
    // Neither holds its error as a `source`: both libraries already print
    // their cause in their message, so a chain would show it twice.
    /// No connection to the spool's database could be had.
    #[error("no connection to the spool database: {0}")]
    Pool(Arc<deadpool_postgres::PoolError>),
    /// PostgreSQL refused or failed the INSERT (or its COMMIT).
    #[error("the spool INSERT failed: {0}")]
    Database(Arc<tokio_postgres::Error>),
    /// No COMMIT by the request's deadline.
    #[error("the spool did not commit within the request's deadline")]
    Timeout,
    /// The spool is closing.
    #[error("the spool is shutting down")]
    ShuttingDown,
}

/// What a request learns: how long its round took to commit, or why not.
type Verdict = Result<Duration, SpoolError>;

/// Settings of the spool.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Writers (and connections) at once.
    pub connections: usize,
    /// Longest a round may take, connection included.
    pub timeout: Duration,
}

/// Shared handle; clone freely.
#[derive(Clone, Debug)]
pub struct Spool {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    pool: Pool,
    settings: Settings,
    queue: mpsc::UnboundedSender<Entry>,
    slots: Arc<Semaphore>,
    health: Health,
    shutdown: CancellationToken,
    writing: TaskTracker,
}

/// A webhook waiting for a round, with its request's reply.
#[derive(Debug)]
struct Entry {
    webhook: Webhook,
    /// Counts the body against `CORRAL_MAX_IN_FLIGHT_BYTES` until its round ends.
    _lease: Lease,
    reply: oneshot::Sender<Verdict>,
}

impl Waiting for Entry {
    /// Its request already has its answer (RabbitMQ confirmed it after all,
    /// or the deadline passed): nothing to keep.
    fn abandoned(&self) -> bool {
        self.reply.is_closed()
    }

    fn size(&self) -> usize {
        self.webhook.body.len()
    }
}

impl Spool {
    /// Starts the writers over `pool` (made for the spool's role) and the
    /// reachability check.
    pub fn start(pool: Pool, settings: Settings, health: Health) -> Self {
        health.enable_spool();
        // Unbounded, because what enters is bounded before: every entry
        // holds its body's lease of `CORRAL_MAX_IN_FLIGHT_BYTES`.
        let (queue, receiver) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            pool,
            slots: Arc::new(Semaphore::new(settings.connections)),
            settings,
            queue,
            health,
            shutdown: CancellationToken::new(),
            writing: TaskTracker::new(),
        });
        inner.writing.spawn(dispatch(inner.clone(), receiver));
        tokio::spawn(check(inner.clone()));
        Self { inner }
    }

    /// Spools `webhook` and waits for the COMMIT of the round carrying it,
    /// at most until `deadline`. Once this future is dropped, a webhook not
    /// yet in a round is left out of it.
    pub async fn keep(
        &self,
        webhook: Webhook,
        lease: Lease,
        deadline: tokio::time::Instant,
    ) -> Verdict {
        let (reply, verdict) = oneshot::channel();
        let entry = Entry {
            webhook,
            _lease: lease,
            reply,
        };
        if self.inner.queue.send(entry).is_err() {
            return Err(SpoolError::ShuttingDown);
        }
        let verdict = match tokio::time::timeout_at(deadline, verdict).await {
            Ok(Ok(verdict)) => verdict,
            Ok(Err(_dropped)) => Err(SpoolError::ShuttingDown),
            Err(_elapsed) => Err(SpoolError::Timeout),
        };
        // Counted here, per request that learnt it, whether its round failed
        // or its deadline passed while it still waited for a connection.
        if verdict.is_err() {
            metrics::ingress_spool_failed(1);
        }
        verdict
    }

    /// Writes what is queued, waits (bounded) for the rounds in progress,
    /// and closes the pool.
    pub async fn close(&self, timeout: Duration) {
        self.inner.shutdown.cancel();
        self.inner.writing.close();
        let _ = tokio::time::timeout(timeout, self.inner.writing.wait()).await;
        self.inner.pool.close();
    }
}

/// Forms rounds from the queue until shutdown; then writes what is still
/// queued and ends.
async fn dispatch(inner: Arc<Inner>, queue: mpsc::UnboundedReceiver<Entry>) {
    let mut rounds = Rounds::new(
        queue,
        Limits {
            count: BATCH_MAX,
            bytes: BATCH_MAX_BYTES,
            overhead: 0,
        },
    );
    while let Some(first) = rounds.first(&inner.shutdown).await {
        let Ok(slot) = inner.slots.clone().acquire_owned().await else {
            return;
        };
        let round = rounds.fill(first);
        if !round.is_empty() {
            inner.writing.spawn(write(inner.clone(), round, slot));
        }
    }
}

/// Inserts one round and answers each of its requests.
async fn write(inner: Arc<Inner>, round: Vec<Entry>, slot: OwnedSemaphorePermit) {
    metrics::ingress_spool_batch(round.len());
    let started = Instant::now();
    let verdict = tokio::time::timeout(inner.settings.timeout, insert(&inner.pool, &round))
        .await
        .unwrap_or(Err(SpoolError::Timeout))
        .map(|()| started.elapsed());
    drop(slot);
    inner.health.set_spool(verdict.is_ok());
    if let Err(err) = &verdict {
        tracing::warn!(
            webhooks = round.len(),
            error = error_chain(err),
            "the spool could not commit webhooks; those RabbitMQ did not confirm get 503"
        );
    }
    for entry in round {
        let _gone = entry.reply.send(verdict.clone());
    }
}

async fn insert(pool: &Pool, round: &[Entry]) -> Result<(), SpoolError> {
    let client = pool
        .get()
        .await
        .map_err(|err| SpoolError::Pool(Arc::new(err)))?;
    let database = |err| SpoolError::Database(Arc::new(err));
    let statement = client.prepare_cached(INSERT).await.map_err(database)?;
    let ids: Vec<Uuid> = round.iter().map(|e| e.webhook.message_id).collect();
    let kinds: Vec<&str> = round.iter().map(|e| e.webhook.kind.as_str()).collect();
    let bodies: Vec<&[u8]> = round.iter().map(|e| &e.webhook.body[..]).collect();
    let received: Vec<DateTime<Utc>> = round.iter().map(|e| e.webhook.received_at).collect();
    client
        .execute(&statement, &[&ids, &kinds, &bodies, &received])
        .await
        .map_err(database)?;
    Ok(())
}

/// Keeps the spool's readiness current while nothing is spooled.
async fn check(inner: Arc<Inner>) {
    let mut tick = tokio::time::interval(CHECK_EVERY);
    loop {
        tokio::select! {
            () = inner.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let ok = match tokio::time::timeout(inner.settings.timeout, inner.pool.get()).await {
            Ok(Ok(client)) => client
                .query_one(MAY_INSERT, &[])
                .await
                .is_ok_and(|row| row.get::<_, bool>(0)),
            _ => false,
        };
        if inner.health.spool() != ok {
            tracing::info!(reachable = ok, "the spool database's reachability changed");
        }
        inner.health.set_spool(ok);
    }
}
