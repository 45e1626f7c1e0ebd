//! Result events (`CORRAL_RESULT_EVENTS=true`): the relay from the outbox
//! to the customer's services.
//!
//! The batch that stores an event writes its outbox row in the same
//! statement (`store/insert_events.sql`), so an event is in the outbox
//! exactly when it is stored. This relay publishes the outbox, in rounds of
//! one transaction each: lock the oldest rows no other relay holds
//! (`FOR UPDATE … SKIP LOCKED`, so every worker's relay shares the outbox),
//! publish each as a [`DeliveryResult`] to the fan-out exchange
//! `<prefix>.delivery-results` (mandatory, on a confirm-mode channel), wait
//! for every confirm, then delete the rows and commit. Anything short of
//! every event acked and routed — a nack, a return because no queue is
//! bound, a lost link — rolls the round back: the rows stay, locked by no
//! one, and are published again after a backoff. Nothing is ever dropped,
//! so an event nobody is bound for waits in the outbox, which
//! `corral_worker_result_events_pending` shows. A crash between the confirm
//! and the commit publishes an event twice, with the same id.
//!
//! The write path pokes [`Wake`] after a commit that stored events, so
//! events leave within milliseconds; a poll every second picks up the rows
//! of other workers and of crashed ones.

use std::{future::pending, sync::Arc, time::Duration};

use corral_shared::{
    amqp::{self, AmqpError, Refused, Topology},
    config::AmqpSettings,
    envelope::Kind,
    error_chain,
    results::{self, DeliveryResult},
    retry,
    telemetry::metrics,
};
use deadpool_postgres::Pool;
use lapin::{Channel, Connection, options::ConfirmSelectOptions};
use tokio::sync::Notify;
use tokio_postgres::Row;
use tokio_util::sync::CancellationToken;

const SELECT: &str = include_str!("select.sql");
const DELETE: &str = "DELETE FROM delivery_results_outbox WHERE id = ANY($1)";
/// The outbox's depth and oldest age: exact while small, PostgreSQL's
/// estimate past [`EXACT_UP_TO`] rows (every worker measures, and counting
/// a huge outbox each time would load the database when it is already
/// behind); the oldest row comes from the primary key's index.
const MEASURE: &str = "SELECT CASE WHEN c.reltuples > $1 THEN c.reltuples::bigint \
                            ELSE (SELECT count(*) FROM delivery_results_outbox) END, \
                       COALESCE(EXTRACT(EPOCH FROM now() - (SELECT created_at \
                            FROM delivery_results_outbox ORDER BY id LIMIT 1))::float8, 0) \
                       FROM pg_class c WHERE c.oid = 'delivery_results_outbox'::regclass";
const EXACT_UP_TO: f32 = 100_000.0;
/// How often the outbox is looked at without a poke.
const POLL: Duration = Duration::from_secs(1);
/// How often the outbox's depth and age are measured.
const MEASURE_EVERY: Duration = Duration::from_secs(5);

/// Wakes the relay after a commit that stored events. Cloned into the write
/// paths; a poke costs one atomic operation, and one made while the relay
/// is busy is kept for when it is done. [`Wake::default`] wakes nothing
/// (result events off).
#[derive(Debug, Clone, Default)]
pub struct Wake(Option<Arc<Notify>>);

impl Wake {
    /// A wake for a relay that runs.
    pub fn new() -> Self {
        Self(Some(Arc::new(Notify::new())))
    }

    /// Tells the relay new events are in the outbox.
    pub fn poke(&self) {
        if let Some(notify) = &self.0 {
            notify.notify_one();
        }
    }

    async fn woken(&self) {
        match &self.0 {
            Some(notify) => notify.notified().await,
            None => pending().await,
        }
    }
}

/// How the relay runs.
#[derive(Debug, Clone)]
pub struct RelaySettings {
    /// The broker result events go to (its prefix names the exchange).
    pub amqp: AmqpSettings,
    /// Events per round at most.
    pub batch_max: usize,
    /// Deadline of one round's database work, and of a measurement.
    pub timeout: Duration,
    /// Cap of the backoff after a round that did not go through.
    pub retry_max: Duration,
}

/// Relays the outbox until `shutdown` (finishing the round in hand) and
/// keeps `corral_worker_result_events_pending` / `_oldest_seconds` current.
pub async fn run(settings: RelaySettings, pool: Pool, wake: Wake, shutdown: CancellationToken) {
    tokio::join!(
        relay(&settings, &pool, &wake, &shutdown),
        measure(&settings, &pool, &shutdown),
    );
}

async fn relay(settings: &RelaySettings, pool: &Pool, wake: &Wake, shutdown: &CancellationToken) {
    let topology = Topology::new(&settings.amqp);
    let exchange = topology.delivery_results();
    loop {
        let opened = amqp::reconnect(shutdown, &settings.amqp, || open(settings, &topology)).await;
        let Some((connection, channel)) = opened else {
            return;
        };
        tracing::info!(exchange, "publishing result events");
        let end = session(settings, pool, wake, shutdown, &channel, &exchange).await;
        amqp::close(
            &connection,
            settings.amqp.connect_timeout(),
            "result events relay stopped",
        )
        .await;
        match end {
            None => {
                tracing::info!("result events relay stopped");
                return;
            }
            Some(err) => tracing::warn!(
                error = error_chain(&err),
                "lost the RabbitMQ link of the result events; reconnecting (the round's events \
                 stay in the outbox)"
            ),
        }
        retry::pause(shutdown, settings.amqp.reconnect_max()).await;
    }
}

/// Connects, opens a confirm-mode channel and declares the exchange.
async fn open(
    settings: &RelaySettings,
    topology: &Topology,
) -> Result<(Connection, Channel), AmqpError> {
    let timeout = settings.amqp.connect_timeout();
    let connection = amqp::connect(&settings.amqp, "corral-worker-results").await?;
    let setup = async {
        let channel =
            amqp::deadline("opening a channel", timeout, connection.create_channel()).await?;
        amqp::deadline(
            "confirm mode",
            timeout,
            channel.confirm_select(ConfirmSelectOptions::default()),
        )
        .await?;
        topology.declare_delivery_results(&channel, timeout).await?;
        Ok(channel)
    };
    match setup.await {
        Ok(channel) => Ok((connection, channel)),
        Err(err) => {
            amqp::close(&connection, timeout, "setup failed").await;
            Err(err)
        }
    }
}

/// Rounds on one channel until shutdown (`None`) or the link fails.
async fn session(
    settings: &RelaySettings,
    pool: &Pool,
    wake: &Wake,
    shutdown: &CancellationToken,
    channel: &Channel,
    exchange: &str,
) -> Option<AmqpError> {
    let mut delays = retry::delays(settings.retry_max);
    let mut failing = false;
    loop {
        if shutdown.is_cancelled() {
            return None;
        }
        let backoff = match round(settings, pool, channel, exchange).await {
            Ok(published) => {
                if failing {
                    tracing::info!("result events are published again");
                    failing = false;
                }
                delays = retry::delays(settings.retry_max);
                // A full round: more are probably waiting.
                if published >= settings.batch_max {
                    continue;
                }
                None
            }
            Err(RoundError::Link(err)) => return Some(err),
            Err(err) => {
                // Once per streak at warn: an exchange nobody is bound to
                // refuses every round until someone binds a queue.
                if failing {
                    tracing::debug!(error = error_chain(&err), "result events not published");
                } else {
                    tracing::warn!(
                        error = error_chain(&err),
                        "result events not published; they stay in the outbox and are retried"
                    );
                }
                failing = true;
                Some(delays.next().unwrap_or(settings.retry_max))
            }
        };
        match backoff {
            None => tokio::select! {
                () = shutdown.cancelled() => return None,
                () = wake.woken() => {}
                () = tokio::time::sleep(POLL) => {}
            },
            Some(delay) => tokio::select! {
                () = shutdown.cancelled() => return None,
                () = tokio::time::sleep(delay) => {}
            },
        }
    }
}

/// Why a round published nothing for good.
#[derive(Debug, thiserror::Error)]
enum RoundError {
    /// No pooled connection.
    #[error("no database connection: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    /// A statement or the COMMIT failed.
    #[error("the outbox round failed: {0}")]
    Database(#[from] tokio_postgres::Error),
    /// The round's database work outlived its deadline.
    #[error("no answer from the database within {0:?}")]
    Timeout(Duration),
    /// The broker answered, but did not take every event.
    #[error("RabbitMQ did not take {events} result events")]
    Refused {
        /// Events in the round.
        events: usize,
        /// The first refusal (no queue bound: returned as unroutable).
        #[source]
        why: Refused,
    },
    /// The link failed or stopped answering: reconnect.
    #[error(transparent)]
    Link(AmqpError),
}

/// One transaction: lock, publish, wait for the confirms, delete, commit.
/// Returns how many events it published.
async fn round(
    settings: &RelaySettings,
    pool: &Pool,
    channel: &Channel,
    exchange: &str,
) -> Result<usize, RoundError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let limit = i64::try_from(settings.batch_max).unwrap_or(i64::MAX);
    let rows = tokio::time::timeout(settings.timeout, tx.query(SELECT, &[&limit]))
        .await
        .map_err(|_| RoundError::Timeout(settings.timeout))??;
    if rows.is_empty() {
        return Ok(0);
    }
    let timeout = settings.amqp.connect_timeout();
    let mut ids = Vec::with_capacity(rows.len());
    let mut confirms = Vec::with_capacity(rows.len());
    for row in &rows {
        ids.push(row.get::<_, i64>("outbox_id"));
        let event = event(row);
        let body = event.body();
        let confirm = amqp::deadline(
            "publishing a result event",
            timeout,
            amqp::publish_mandatory(
                channel,
                exchange.into(),
                event.routing_key().into(),
                &body,
                event.properties(),
            ),
        )
        .await
        .map_err(RoundError::Link)?;
        confirms.push(confirm);
    }
    let mut refused = None;
    for confirm in confirms {
        let confirmation = amqp::deadline("waiting for a result event's confirm", timeout, confirm)
            .await
            .map_err(RoundError::Link)?;
        if let Err(why) = amqp::check_confirmation(confirmation) {
            refused.get_or_insert(why);
        }
    }
    if let Some(why) = refused {
        // Dropping the transaction rolls it back: every row stays.
        return Err(RoundError::Refused {
            events: ids.len(),
            why,
        });
    }
    let finish = async {
        tx.execute(DELETE, &[&ids]).await?;
        tx.commit().await
    };
    tokio::time::timeout(settings.timeout, finish)
        .await
        .map_err(|_| RoundError::Timeout(settings.timeout))??;
    metrics::worker_result_events_published(ids.len());
    Ok(ids.len())
}

/// The event of one row of `select.sql`.
fn event(row: &Row) -> DeliveryResult {
    DeliveryResult {
        version: results::VERSION,
        id: row.get("message_id"),
        event_id: row.get("event_id"),
        drop_id: row.get("drop_id"),
        foreign_id: row.get("foreign_id"),
        // The table's CHECK allows only these two.
        kind: match row.get::<_, &str>("kind") {
            "rvm" => Kind::Rvm,
            _ => Kind::Sms,
        },
        phone_number: row.get("phone_number"),
        status: row.get("status"),
        reason: row.get("reason"),
        dnc: row.get("dnc"),
        spam: row.get("spam"),
        product_cost: row.get("product_cost"),
        compliance_fee: row.get("compliance_fee"),
        tts_fee: row.get("tts_fee"),
        attempt_date: row.get("attempt_date"),
        received_at: row.get("received_at"),
        stored_at: row.get("stored_at"),
        latest: row.get("latest"),
        suppressions: row.get("suppressions"),
        new_suppressions: row.get("new_suppressions"),
        reason_code: row.get("reason_code"),
        event: row.get("event"),
        provider_event_id: row.get("provider_event_id"),
        contact_id: row.get("contact_id"),
        proof_of_delivery_url: row.get("proof_of_delivery_url"),
    }
}

/// Reads the outbox's depth and oldest age every few seconds, link or not.
async fn measure(settings: &RelaySettings, pool: &Pool, shutdown: &CancellationToken) {
    let mut tick = tokio::time::interval(MEASURE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let read = async {
            let client = pool.get().await.ok()?;
            client.query_one(MEASURE, &[&EXACT_UP_TO]).await.ok()
        };
        if let Ok(Some(row)) = tokio::time::timeout(settings.timeout, read).await {
            let pending: i64 = row.get(0);
            let oldest: f64 = row.get(1);
            metrics::worker_result_events_outbox(
                u64::try_from(pending).unwrap_or(0),
                oldest.max(0.0),
            );
        }
    }
}
