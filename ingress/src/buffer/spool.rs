//! The PostgreSQL spool: the second durable path, for webhooks RabbitMQ
//! cannot take in time.
//!
//! A webhook is spooled by one row in `spooled_webhooks` (its exact bytes,
//! id, `received_at` and kind), and its request is answered 200 only after
//! that row's COMMIT, with `synchronous_commit` on whatever the server's
//! default (so with a synchronous standby, after the standby has it too).
//! The worker drains the table into the same tables as queued webhooks.
//!
//! Group commit, as on the broker path (the same engine): webhooks wait in
//! one queue; a writer takes one of `CORRAL_SPOOL_CONNECTIONS` slots once
//! something waits, then everything waiting (up to [`BATCH_MAX`] rows and
//! [`BATCH_MAX_BYTES`]), and inserts it with one multi-row INSERT. A burst
//! that finds the broker gone costs the database one COMMIT per round, not
//! one per webhook.
//!
//! The spool is a [`Buffer`] like the others; [`Fallback`](super::fallback)
//! puts it behind the primary, within the request's one deadline
//! ([`Spool::keep_until`]).
//!
//! Ingress connects as a role that may only INSERT into that one table
//! (`corral_spool_writer`, from the migrations): a leaked ingress credential
//! can add webhooks, never read or remove one.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use corral_contract::spool::{INSERT, MAY_INSERT};
use corral_runtime::{
    admin::Health,
    error_chain,
    telemetry::{
        labels::{PublishFailure, SpoolCause},
        metrics,
    },
};
use deadpool_postgres::Pool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{
    Buffer, Kept, Refusal, Webhook,
    engine::{Bounds, Engine, Limits, Round, Sink, Stopped, Verdict},
};
use crate::budget::Lease;

/// Rows per INSERT at most: a round's statement stays small (its parameters
/// are four arrays) and a failing round refuses a bounded number of requests.
pub const BATCH_MAX: usize = 256;

/// Body bytes per INSERT at most (a single larger webhook still goes, alone).
pub const BATCH_MAX_BYTES: usize = 4 * 1024 * 1024;

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

impl From<Stopped> for SpoolError {
    fn from(stopped: Stopped) -> Self {
        match stopped {
            // The spool keeps no in-flight bound of its own (what reaches it
            // was bounded on the way to the primary), so only a deadline
            // refuses a webhook before its round.
            Stopped::Overloaded | Stopped::Timeout(_) => SpoolError::Timeout,
            Stopped::ShuttingDown => SpoolError::ShuttingDown,
        }
    }
}

/// For the spool alone (no buffer behind it): [`Fallback`](super::fallback)
/// answers with the primary's refusal instead.
impl Refusal for SpoolError {
    fn failure(&self) -> PublishFailure {
        match self {
            SpoolError::Pool(_) => PublishFailure::Unavailable,
            SpoolError::Database(_) => PublishFailure::Nack,
            SpoolError::Timeout => PublishFailure::Timeout,
            SpoolError::ShuttingDown => PublishFailure::ShuttingDown,
        }
    }

    fn spool_cause(&self) -> Option<SpoolCause> {
        None
    }
}

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
    engine: Engine<Writer>,
    writer: Arc<Writer>,
}

/// The database as the sink and the reachability check share it.
#[derive(Debug)]
struct Writer {
    pool: Pool,
    settings: Settings,
    health: Health,
    shutdown: CancellationToken,
}

impl Spool {
    /// Starts the writers over `pool` (made for the spool's role) and the
    /// reachability check.
    pub fn start(pool: Pool, settings: Settings, health: Health) -> Self {
        health.enable_spool();
        let writer = Arc::new(Writer {
            pool,
            settings,
            health,
            shutdown: CancellationToken::new(),
        });
        let engine = Engine::start(writer.clone(), writer.shutdown.clone());
        tokio::spawn(check(writer.clone()));
        Self { engine, writer }
    }

    /// Spools `webhook` and waits for the COMMIT of the round carrying it,
    /// at most until `deadline`. Once this future is dropped, a webhook not
    /// yet in a round is left out of it.
    pub async fn keep_until(
        &self,
        webhook: Webhook,
        lease: Lease,
        deadline: tokio::time::Instant,
    ) -> Verdict<SpoolError> {
        let verdict = self.engine.keep_until(webhook, lease, deadline).await;
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
        self.engine.close(timeout).await;
        self.writer.pool.close();
    }
}

impl Buffer for Spool {
    type Error = SpoolError;

    /// Alone, the spool is where every webhook goes: as if no broker were
    /// there.
    async fn keep(&self, webhook: Webhook, lease: Lease) -> Result<Kept, SpoolError> {
        let deadline = tokio::time::Instant::now() + self.writer.settings.timeout;
        self.keep_until(webhook, lease, deadline)
            .await
            .map(|_| Kept::Spooled(SpoolCause::Unavailable))
    }
}

impl Sink for Writer {
    type Error = SpoolError;

    fn bounds(&self) -> Bounds {
        Bounds {
            round: Limits {
                count: BATCH_MAX,
                bytes: BATCH_MAX_BYTES,
                overhead: 0,
            },
            linger: Duration::ZERO,
            lanes: 1,
            slots: self.settings.connections,
            timeout: self.settings.timeout,
            in_flight: None,
        }
    }

    fn size(&self, webhook: &Webhook) -> usize {
        webhook.body.len()
    }

    /// Inserts one round and answers each of its requests.
    async fn send(&self, mut round: Round<SpoolError>) {
        metrics::ingress_spool_batch(round.len());
        let started = Instant::now();
        let verdict =
            tokio::time::timeout(self.settings.timeout, insert(&self.pool, round.webhooks()))
                .await
                .unwrap_or(Err(SpoolError::Timeout))
                .map(|()| started.elapsed());
        self.health.set_spool(verdict.is_ok());
        if let Err(err) = &verdict {
            tracing::warn!(
                webhooks = round.len(),
                error = error_chain(err),
                "the spool could not commit webhooks; those RabbitMQ did not confirm get 503"
            );
        }
        round.answer_all(&verdict);
    }
}

async fn insert(pool: &Pool, round: &[Webhook]) -> Result<(), SpoolError> {
    let client = pool
        .get()
        .await
        .map_err(|err| SpoolError::Pool(Arc::new(err)))?;
    let database = |err| SpoolError::Database(Arc::new(err));
    let statement = client.prepare_cached(INSERT).await.map_err(database)?;
    let ids: Vec<Uuid> = round.iter().map(|w| w.message_id).collect();
    let kinds: Vec<&str> = round.iter().map(|w| w.kind.as_str()).collect();
    let bodies: Vec<&[u8]> = round.iter().map(|w| &w.body[..]).collect();
    let received: Vec<DateTime<Utc>> = round.iter().map(|w| w.received_at).collect();
    client
        .execute(&statement, &[&ids, &kinds, &bodies, &received])
        .await
        .map_err(database)?;
    Ok(())
}

/// Keeps the spool's readiness current while nothing is spooled.
async fn check(writer: Arc<Writer>) {
    let mut tick = tokio::time::interval(CHECK_EVERY);
    loop {
        tokio::select! {
            () = writer.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let ok = match tokio::time::timeout(writer.settings.timeout, writer.pool.get()).await {
            Ok(Ok(client)) => client
                .query_one(MAY_INSERT, &[])
                .await
                .is_ok_and(|row| row.get::<_, bool>(0)),
            _ => false,
        };
        if writer.health.spool() != ok {
            tracing::info!(reachable = ok, "the spool database's reachability changed");
        }
        writer.health.set_spool(ok);
    }
}
