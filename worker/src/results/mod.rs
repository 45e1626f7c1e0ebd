//! Result events (`CORRAL_RESULT_EVENTS=true`): the relay from the outbox
//! to the customer's services.
//!
//! The batch that stores an event writes its outbox row in the same
//! statement (`store/insert_events.sql`), so an event is in the outbox
//! exactly when it is stored. This relay publishes the outbox, in rounds of
//! one transaction each: lock the oldest rows no other relay holds
//! (`FOR UPDATE … SKIP LOCKED`, so every worker's relay shares the outbox),
//! publish each as a [`DeliveryResult`](corral_contract::results::DeliveryResult)
//! to the fan-out exchange `<prefix>.delivery-results` (mandatory, on a
//! confirm-mode channel, all of them before waiting), wait for their
//! confirms, then delete the rows RabbitMQ acked and routed and commit. An
//! event leaves the outbox only so: one nacked (a bound queue refused it)
//! or returned (no queue bound) stays and is held back for a retry with
//! backoff ([`held`]) while newer events go on; one whose confirm never came
//! (a lost link) stays and is published again after the reconnect. Nothing
//! is ever dropped, so an event nobody is bound for waits in the outbox,
//! which `corral_worker_result_events_pending` shows. A crash between the
//! confirm and the commit, or a retry of an event a fan-out queue refused
//! (the other queues had it), publishes an event twice, with the same id.
//!
//! The write path pokes [`Wake`] after a commit that stored events, so
//! events leave within milliseconds; a poll every second picks up the rows
//! of other workers and of crashed ones.
//!
//! # Layout
//!
//! - [`round`]: one round's transaction, publishes and verdicts.
//! - [`held`]: which rows the next round takes: the refused ones' backoff.

mod held;
mod round;

use std::{future::pending, sync::Arc, time::Duration};

use corral_runtime::{
    amqp::{self, AmqpError, Topology},
    config::AmqpSettings,
    error_chain, retry,
    telemetry::metrics,
};
use deadpool_postgres::Pool;
use lapin::{Channel, Connection, options::ConfirmSelectOptions};
use tokio::{sync::Notify, time::Instant};
use tokio_util::sync::CancellationToken;

use self::{
    held::{Backlog, Change},
    round::{Round, RoundError},
};
use crate::{
    config::WorkerConfig,
    db,
    periodic::{Next, Task},
};

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
/// Events per round at most. Measured with `corral-bench relay` (100,000
/// events, one quorum queue, 2 cores): 100 per round published 11,000/s,
/// 250 14,000/s, 500 to 2,000 all 19,000–20,000/s, where RabbitMQ, not the
/// round's statements, is the limit. Twice the knee, so a faster broker
/// still finds the rounds large enough; about 1 MB of bodies in hand.
const ROUND_MAX: usize = 1_000;
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

    /// A wake for the relay when result events are on, else one that wakes nothing.
    pub fn new_if(result_events: bool) -> Self {
        if result_events {
            Self::new()
        } else {
            Self::default()
        }
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

/// Whether result events are published, and where.
#[derive(Debug, Clone, clap::Args)]
pub struct ResultsSettings {
    /// Publish a typed result event for every newly stored webhook to the
    /// fan-out exchange `<CORRAL_AMQP_PREFIX>.delivery-results` (with
    /// confirms, through an outbox written in the batch's transaction, so a
    /// crash never drops one; at least once, deduplicated by its `id`). Off
    /// by default; every worker of a deployment must agree. Needs RabbitMQ
    /// (CORRAL_RESULTS_AMQP_URL, else CORRAL_AMQP_URL) also with
    /// CORRAL_BUFFER=sqs: a deployment without RabbitMQ leaves it off.
    #[arg(long, env = "CORRAL_RESULT_EVENTS", default_value_t = false,
          action = clap::ArgAction::Set, global = true)]
    pub result_events: bool,

    /// AMQP URI of the broker result events go to, when not the one of
    /// CORRAL_AMQP_URL (which is the default); CORRAL_AMQP_CA_FILE, the
    /// prefix, heartbeat and timeouts of CORRAL_AMQP_* apply to it too.
    #[arg(
        long,
        env = "CORRAL_RESULTS_AMQP_URL",
        hide_env_values = true,
        global = true
    )]
    pub results_amqp_url: Option<String>,
}

/// How the relay runs.
#[derive(Debug, Clone)]
pub struct RelaySettings {
    /// The broker result events go to (its prefix names the exchange).
    pub amqp: AmqpSettings,
    /// Deadline of one round's database work, and of a measurement.
    pub timeout: Duration,
    /// Cap of the backoff after a round that did not go through.
    pub retry_max: Duration,
}

impl RelaySettings {
    /// The relay of `config`: its broker, and the database's deadlines.
    pub fn new(config: &WorkerConfig) -> Self {
        Self {
            amqp: config.results_amqp(),
            timeout: config.db.timeout() * 3,
            retry_max: config.db.retry_max(),
        }
    }
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
    let mut backlog = Backlog::new(ROUND_MAX, settings.retry_max);
    let mut failures = retry::delays(settings.retry_max);
    let mut failing = false;
    loop {
        if shutdown.is_cancelled() {
            return None;
        }
        let slice = backlog.next(Instant::now());
        let target = round::Target {
            channel,
            exchange,
            limit: slice.limit,
            db_timeout: settings.timeout,
            amqp_timeout: settings.amqp.connect_timeout(),
        };
        let wait = match round::round(&target, pool, slice.after, slice.upto).await {
            Ok(round) => {
                if std::mem::take(&mut failing) {
                    tracing::info!("the result-event outbox is reachable again");
                }
                failures = retry::delays(settings.retry_max);
                log_change(backlog.record(slice, &round, Instant::now()), &round);
                if let Some(err) = round.lost {
                    return Some(err);
                }
                let busy = round.events >= slice.limit || backlog.retry_due(Instant::now());
                (!busy).then(|| backlog.due().unwrap_or_else(|| Instant::now() + POLL))
            }
            Err(RoundError::Link(err)) => return Some(err),
            Err(err) => {
                log_failure(&err, std::mem::replace(&mut failing, true));
                let delay = failures.next().unwrap_or(settings.retry_max);
                Some(Instant::now() + delay)
            }
        };
        if let Some(until) = wait {
            tokio::select! {
                () = shutdown.cancelled() => return None,
                () = wake.woken() => {}
                () = tokio::time::sleep_until(until.min(Instant::now() + POLL)) => {}
            }
        }
    }
}

/// Once per streak at warn: an exchange nobody is bound to refuses every
/// event until someone binds a queue.
fn log_change(change: Change, round: &Round) {
    match change {
        Change::Started => {
            let cause = round
                .refused
                .first()
                .map_or("", |(_, cause)| cause.as_str());
            tracing::warn!(
                refused = round.refused.len(),
                of = round.events,
                cause,
                "RabbitMQ refused result events; they stay in the outbox and are retried with \
                 backoff while newer events go on"
            );
        }
        Change::Ended => tracing::info!("the refused result events are published"),
        Change::Same if !round.refused.is_empty() => tracing::debug!(
            refused = round.refused.len(),
            of = round.events,
            "result events refused again"
        ),
        Change::Same => {}
    }
}

/// Once per streak at warn, like the refusals.
fn log_failure(err: &RoundError, failing: bool) {
    if failing {
        tracing::debug!(error = error_chain(err), "result events not published");
    } else {
        tracing::warn!(
            error = error_chain(err),
            "result events not published; they stay in the outbox and are retried"
        );
    }
}

/// Reads the outbox's depth and oldest age every few seconds, link or not.
async fn measure(settings: &RelaySettings, pool: &Pool, shutdown: &CancellationToken) {
    let task = Task::measure("result-event outbox depth", MEASURE_EVERY);
    task.run(shutdown, move || async move {
        let (pending, oldest) = db::backlog(pool, MEASURE, EXACT_UP_TO, settings.timeout).await?;
        metrics::worker_result_events_outbox(pending, oldest);
        Ok::<_, String>(Next::Wait)
    })
    .await;
}
