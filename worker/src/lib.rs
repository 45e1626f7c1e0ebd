//! corral-worker: consumes corral's queue and lands each Drop Cowboy webhook
//! exactly once in PostgreSQL, typed and exact, in batches.
//!
//! # Layout
//!
//! - [`commands`]: the command line, one file per operator command (its
//!   arguments, what it runs, the report it prints).
//! - [`config`]: the settings (`CORRAL_*` / `--flags`).
//! - [`db`]: the pool (verified connections, deadlines everywhere), the
//!   COMMIT that waits for synchronous standbys, database creation and
//!   migrations (`worker/migrations/`, under an advisory lock).
//! - [`store`]: the set-based batch write, with its SQL beside it; splits a
//!   batch to quarantine the one webhook the database refuses.
//! - [`source`]: where deliveries come from and how they are acknowledged —
//!   the seam — its RabbitMQ and SQS implementations (`CORRAL_BUFFER`), and
//!   unpacking a message into its webhooks (envelope 1 or 2).
//! - [`consume`]: batches off the source, acked only after commit; reconnects.
//! - [`spool`]: draining the webhooks ingress spooled into PostgreSQL when
//!   the broker could not take them, with or without the broker.
//! - [`results`]: relaying the result-event outbox to the customer's
//!   services (`CORRAL_RESULT_EVENTS`).
//! - [`ops`]: what the operator commands do: dead letters (one
//!   [`ops::DeadLetters`] trait, RabbitMQ and SQS), quarantine, suppressions.
//! - [`summary`]: the hourly outcome and spend summary's roll-up, and
//!   `corral-worker report`.
//! - [`lifecycle`]: `delivery_events`' day partitions, made ahead and
//!   dropped past `CORRAL_RETENTION`, and the other tables pruned with them.
//! - [`periodic`]: the one runner of periodic work (name, period, backoff,
//!   shutdown, a log line naming the task when a round fails).
//! - [`Application`]: admin listener, migrations, then the worker's tasks
//!   (consumers, spool drain, summary roll-up, result-event relay, data
//!   lifecycle, SQS depth, database watchdog) until a graceful drain.

pub mod commands;
pub mod config;
pub mod consume;
pub mod db;
pub mod lifecycle;
pub mod ops;
pub mod periodic;
pub mod results;
pub mod source;
pub mod spool;
pub mod store;
pub mod summary;

use std::time::Duration;

use actix_web::dev::Server;
use anyhow::Context as _;
use corral_runtime::{
    admin::{self, Health},
    error_chain, retry,
    telemetry::{self, labels::Binary, metrics},
};
use deadpool_postgres::Pool;
use tokio_util::sync::CancellationToken;

use crate::{
    config::WorkerConfig,
    consume::ConsumerSettings,
    periodic::{Next, Task},
};

/// The worker, admin listener bound, ready to run.
pub struct Application {
    config: WorkerConfig,
    admin: Server,
    admin_port: u16,
    database: db::Target,
    pool: Pool,
    /// The buffer consumed, as `CORRAL_BUFFER` picks it.
    transport: source::Transport,
    health: Health,
    shutdown: CancellationToken,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("admin_port", &self.admin_port)
            .finish()
    }
}

impl Application {
    /// Validates `config` and binds the admin listener; no network I/O yet.
    pub fn build(config: WorkerConfig, shutdown: CancellationToken) -> anyhow::Result<Self> {
        config.validate()?;
        let transport = source::Transport::connect(&config.amqp, &config.buffer)?;
        let prometheus = telemetry::prometheus();
        metrics::register_binary(Binary::Worker);
        if transport.sqs().is_some() {
            metrics::register_sqs_worker();
        }
        if config.results.result_events {
            metrics::register_result_events();
        }
        let database = config.db.target()?;
        let pool = db::pool(&database, config.db.db_pool_size)?;
        if database.uses_tls() {
            tracing::info!("PostgreSQL over TLS, server certificate verified");
        }
        let health = Health::new(true);
        let (admin, admin_port) = admin::bind(&config.admin_listen, health.clone(), prometheus)
            .with_context(|| format!("binding the admin listener on {}", config.admin_listen))?;
        Ok(Self {
            config,
            admin,
            admin_port,
            database,
            pool,
            transport,
            health,
            shutdown,
        })
    }

    /// Port of the admin listener.
    pub fn admin_port(&self) -> u16 {
        self.admin_port
    }

    /// Applies migrations (waiting, with backoff, for a database that is not
    /// there yet), then consumes until the shutdown token is cancelled and
    /// the messages in hand are committed and acknowledged.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let Self {
            config,
            admin,
            database,
            pool,
            transport,
            health,
            shutdown,
            ..
        } = self;
        let admin_handle = admin.handle();
        let admin_serving = tokio::spawn(admin);
        // From the start, database or not: a backlog is worth seeing most
        // when the worker cannot store it.
        let oldest = source::sqs_depth::OldestReceived::default();
        let measuring = transport.sqs().cloned().map(|queue| {
            tokio::spawn(source::sqs_depth::measure(
                queue,
                oldest.clone(),
                shutdown.clone(),
            ))
        });
        if migrate_with_retry(&config, &database, &health, &shutdown).await {
            let running = Running {
                config: &config,
                database: &database,
                pool: &pool,
                health: &health,
                shutdown: &shutdown,
            };
            running.tasks(transport, oldest).await;
        }
        if let Some(measuring) = measuring {
            measuring.abort();
        }
        health.start_draining();
        pool.close();
        admin_handle.stop(true).await;
        admin_serving.await.context("admin server task")??;
        tracing::info!("corral-worker stopped");
        Ok(())
    }
}

/// What every task of a running worker shares.
#[derive(Clone, Copy)]
struct Running<'a> {
    config: &'a WorkerConfig,
    database: &'a db::Target,
    pool: &'a Pool,
    health: &'a Health,
    shutdown: &'a CancellationToken,
}

impl Running<'_> {
    /// The worker's tasks once the database is migrated, each until shutdown
    /// (the watchdog until the others are done: `/readyz` stays honest
    /// while the messages in hand drain).
    async fn tasks(self, transport: source::Transport, oldest: source::sqs_depth::OldestReceived) {
        let Self {
            config,
            database,
            pool,
            health,
            shutdown,
        } = self;
        // The relay's wake is poked by both write paths.
        let wake = results::Wake::new_if(config.results.result_events);
        let drain = spool::DrainSettings::new(config, wake.clone());
        let relay = config
            .results
            .result_events
            .then(|| results::RelaySettings::new(config));
        let stop_watchdog = CancellationToken::new();
        let work = async {
            tokio::join!(
                self.consume(transport, oldest, wake.clone()),
                spool::drain(drain, pool.clone(), health.clone(), shutdown.clone()),
                summary::roll_up_every(
                    config.summary.rollup(),
                    config.db.timeout() * 3,
                    pool.clone(),
                    shutdown.clone(),
                ),
                lifecycle::maintain_every(
                    database.clone(),
                    config.lifecycle.clone(),
                    shutdown.clone(),
                ),
                async {
                    if let Some(relay) = relay {
                        results::run(relay, pool.clone(), wake, shutdown.clone()).await;
                    }
                },
            );
            stop_watchdog.cancel();
        };
        tokio::join!(work, database_watchdog(pool, health, &stop_watchdog));
    }

    /// The queue consumers: RabbitMQ's, or SQS's with `CORRAL_BUFFER=sqs`.
    async fn consume(
        self,
        transport: source::Transport,
        oldest: source::sqs_depth::OldestReceived,
        wake: results::Wake,
    ) {
        let settings = consumer_settings(self.config, &self.config.budget(), wake, oldest);
        consume::run(
            transport,
            settings,
            self.pool.clone(),
            self.health.clone(),
            self.shutdown.clone(),
        )
        .await;
    }
}

/// The consumer's settings, its prefetch derived from the byte budget.
fn consumer_settings(
    config: &WorkerConfig,
    budget: &source::budget::Budget,
    results: results::Wake,
    oldest: source::sqs_depth::OldestReceived,
) -> ConsumerSettings {
    let prefetch = budget
        .prefetch(config.prefetch)
        .expect("WorkerConfig::validate checked the budget holds two messages");
    tracing::info!(
        in_hand_bytes = budget.bytes,
        largest_message = budget.largest,
        prefetch = prefetch.main,
        queues = config.amqp.queues,
        prefetch_per_queue = prefetch.per_queue(usize::from(config.amqp.queues)),
        unroutable_prefetch = prefetch.unroutable,
        "messages in hand bounded by CORRAL_MAX_IN_HAND_BYTES"
    );
    ConsumerSettings {
        amqp: config.amqp.clone(),
        sqs: source::sqs::Settings {
            wait: Duration::from_secs(config.sqs_wait_secs),
            visibility: Duration::from_secs(config.sqs_visibility_secs),
            max_in_hand: usize::from(config.prefetch),
            max_in_hand_bytes: budget.bytes,
            retry_max: config.amqp.reconnect_max(),
            oldest,
        },
        prefetch,
        prefetch_cap: config.prefetch,
        largest_message: budget.largest,
        writers: config.db_writers as usize,
        result_events: config.results.result_events,
        results,
        batch_max: config.batch_max as usize,
        batch_max_bytes: budget.batch_bytes(),
        batch_linger: config.batch_linger(),
        db_retry_max: config.db.retry_max(),
        db_timeout: config.db.timeout(),
        shutdown_timeout: config.shutdown_timeout(),
    }
}

/// Runs migrations until they succeed or shutdown is requested; `false` on shutdown.
async fn migrate_with_retry(
    config: &WorkerConfig,
    database: &db::Target,
    health: &Health,
    shutdown: &CancellationToken,
) -> bool {
    let migrated = retry::until_cancelled(
        shutdown,
        config.db.retry_max(),
        || db::migrate(database),
        |err| {
            if err.downcast_ref::<db::NewerSchema>().is_some() {
                db::stop_on_newer_schema(&error_chain(err.as_ref()));
            }
            health.set_database(false);
            tracing::warn!(
                error = error_chain(err.as_ref()),
                "cannot migrate the database yet; retrying"
            );
        },
    )
    .await;
    if migrated.is_some() {
        health.set_database(true);
    }
    migrated.is_some()
}

/// Keeps `/readyz` honest while no batches flow: checks the database every
/// few seconds (a pool checkout runs the verification query).
async fn database_watchdog(pool: &Pool, health: &Health, stop: &CancellationToken) {
    let task = Task::measure("database watchdog", Duration::from_secs(3));
    task.run(stop, move || async move {
        let ok = match pool.get().await {
            Ok(client) => client.simple_query("SELECT 1").await.is_ok(),
            Err(_) => false,
        };
        health.set_database(ok);
        Ok::<_, std::convert::Infallible>(Next::Wait)
    })
    .await;
}
