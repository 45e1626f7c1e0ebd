//! corral-worker settings: every `CORRAL_*` variable is also a `--flag`,
//! global to every command (the commands themselves: [`crate::commands`]).
//! Settings with one reader live beside it and are flattened in here:
//! [`crate::db::DbSettings`], [`crate::spool::SpoolSettings`],
//! [`crate::results::ResultsSettings`], [`crate::summary::SummarySettings`],
//! [`crate::lifecycle::LifecycleSettings`];
//! those of the consumer and its sources, and the checks that span several
//! groups, are here.

use std::time::Duration;

use clap::Args;
use corral_runtime::config::{
    AmqpSettings, BufferKind, BufferSettings, LogSettings, MessageLimits,
};

/// Settings of the worker.
#[derive(Debug, Clone, Args)]
pub struct WorkerConfig {
    /// The database: URL, TLS, pool and deadlines.
    #[command(flatten)]
    pub db: crate::db::DbSettings,

    /// Batches written at once, each on its own pooled connection (at most
    /// CORRAL_DB_POOL_SIZE); acknowledged in delivery order whatever order they commit in.
    #[arg(long, env = "CORRAL_DB_WRITERS", default_value_t = 2,
          value_parser = clap::value_parser!(u32).range(1..=64), global = true)]
    pub db_writers: u32,

    /// Address of the admin listener (/metrics, /healthz, /readyz).
    #[arg(
        long,
        env = "CORRAL_ADMIN_LISTEN",
        default_value = "0.0.0.0:9091",
        global = true
    )]
    pub admin_listen: String,

    /// Messages in hand at most (RabbitMQ: sent and not yet acknowledged;
    /// SQS: received and not yet deleted): a cap on the count that
    /// CORRAL_MAX_IN_HAND_BYTES allows, which is what bounds memory.
    #[arg(long, env = "CORRAL_PREFETCH", default_value_t = 2_000,
          value_parser = clap::value_parser!(u16).range(1..), global = true)]
    pub prefetch: u16,

    /// Bytes of messages held at most (received and not yet acknowledged):
    /// RabbitMQ's prefetch is this ÷ the largest message ingress may publish
    /// (CORRAL_PUBLISH_BATCH_MAX_BYTES, or a body of CORRAL_MAX_BODY_BYTES
    /// alone), capped by CORRAL_PREFETCH; SQS receives while the messages in
    /// hand fit. Default: a quarter of the container's memory limit, or
    /// 64 MiB without one.
    #[arg(long, env = "CORRAL_MAX_IN_HAND_BYTES",
          value_parser = clap::value_parser!(u64).range(1024 * 1024..), global = true)]
    pub max_in_hand_bytes: Option<u64>,

    /// CORRAL_MAX_BODY_BYTES and CORRAL_PUBLISH_BATCH_MAX_BYTES, as ingress
    /// reads them: they bound the largest message.
    #[command(flatten)]
    pub messages: MessageLimits,

    /// A batch is written when it holds this many webhooks (whole AMQP
    /// messages only, so one message may take it past this alone)...
    #[arg(long, env = "CORRAL_BATCH_MAX", default_value_t = 500,
          value_parser = clap::value_parser!(u32).range(1..=10_000), global = true)]
    pub batch_max: u32,

    /// ...or when its first message has waited this long, in milliseconds.
    #[arg(
        long,
        env = "CORRAL_BATCH_LINGER_MS",
        default_value_t = 50,
        global = true
    )]
    pub batch_linger_ms: u64,

    /// Longest wait at shutdown to commit and acknowledge the messages in hand, in milliseconds.
    #[arg(
        long,
        env = "CORRAL_SHUTDOWN_TIMEOUT_MS",
        default_value_t = 30_000,
        global = true
    )]
    pub shutdown_timeout_ms: u64,

    /// Longest wait of one SQS `ReceiveMessage` for a message, in seconds
    /// (long polling: fewer empty receives, each a billed request).
    #[arg(long, env = "CORRAL_SQS_WAIT_SECS", default_value_t = 20,
          value_parser = clap::value_parser!(u64).range(0..=20), global = true)]
    pub sqs_wait_secs: u64,

    /// SQS visibility timeout of a received message, in seconds: pushed back
    /// to this again and again while the worker holds the message, so only
    /// a worker that died (or lost SQS) lets it run out, and the message
    /// then comes back this long after.
    #[arg(long, env = "CORRAL_SQS_VISIBILITY_SECS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=43_200), global = true)]
    pub sqs_visibility_secs: u64,

    /// The PostgreSQL spool's drain.
    #[command(flatten)]
    pub spool: crate::spool::SpoolSettings,

    /// Result events and their broker.
    #[command(flatten)]
    pub results: crate::results::ResultsSettings,

    /// The data lifecycle: partitions and retention.
    #[command(flatten)]
    pub lifecycle: crate::lifecycle::LifecycleSettings,

    /// The hourly summary's roll-up.
    #[command(flatten)]
    pub summary: crate::summary::SummarySettings,

    #[command(flatten)]
    pub buffer: BufferSettings,

    #[command(flatten)]
    pub amqp: AmqpSettings,

    #[command(flatten)]
    pub log: LogSettings,
}

/// A configuration that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The byte budget does not hold one of the largest messages for each
    /// consumer (each of the `CORRAL_AMQP_QUEUES` queues and the unroutable
    /// queue), with room to spare for the unroutable queue's eighth.
    #[error(
        "CORRAL_MAX_IN_HAND_BYTES ({budget}) must hold {consumers} of the largest messages \
         ingress may publish, one for each consumer (CORRAL_AMQP_QUEUES and the unroutable \
         queue; {largest} bytes each: CORRAL_PUBLISH_BATCH_MAX_BYTES, or a body of \
         CORRAL_MAX_BODY_BYTES alone)"
    )]
    InHandBelowMessages {
        /// The budget.
        budget: u64,
        /// Consumers that each need one message at least.
        consumers: u32,
        /// The largest message.
        largest: u64,
    },
    /// More writers than connections would leave writers waiting for one.
    #[error("CORRAL_DB_WRITERS ({writers}) must not exceed CORRAL_DB_POOL_SIZE ({pool})")]
    WritersAbovePool {
        /// Writers.
        writers: u32,
        /// Pool size.
        pool: u32,
    },
    /// The database URL does not parse.
    #[error("CORRAL_DATABASE_URL is not a valid PostgreSQL URL: {0}")]
    DatabaseUrl(String),
    /// An SQS setting is missing or malformed.
    #[error(transparent)]
    Sqs(#[from] corral_runtime::sqs::SettingsError),
    /// Result events are on, but their broker's settings do not work.
    #[error(
        "CORRAL_RESULT_EVENTS=true publishes to RabbitMQ ({setting}), also with \
         CORRAL_BUFFER=sqs; without RabbitMQ, leave it off"
    )]
    ResultsBroker {
        /// The URL setting in use.
        setting: &'static str,
        /// What is wrong.
        #[source]
        source: corral_runtime::amqp::AmqpError,
    },
}

impl WorkerConfig {
    /// Checks the settings can work together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let budget = self.budget();
        let shares = budget.prefetch(self.prefetch);
        if shares.is_none_or(|prefetch| prefetch.main < self.amqp.queues) {
            return Err(ConfigError::InHandBelowMessages {
                budget: budget.bytes,
                consumers: u32::from(self.amqp.queues) + 1,
                largest: budget.largest,
            });
        }
        if self.buffer.kind == BufferKind::Sqs {
            corral_runtime::sqs::check_settings(&self.buffer)?;
            corral_runtime::sqs::check_queues(&self.buffer, self.amqp.queues)?;
        }
        if self.results.result_events {
            let setting = if self.results.results_amqp_url.is_some() {
                "CORRAL_RESULTS_AMQP_URL"
            } else {
                "CORRAL_AMQP_URL"
            };
            corral_runtime::amqp::check_settings(&self.results_amqp())
                .map_err(|source| ConfigError::ResultsBroker { setting, source })?;
        }
        if self.db_writers > self.db.db_pool_size {
            return Err(ConfigError::WritersAbovePool {
                writers: self.db_writers,
                pool: self.db.db_pool_size,
            });
        }
        self.db.check().map_err(ConfigError::DatabaseUrl)?;
        Ok(())
    }

    /// The broker result events go to: CORRAL_AMQP_* with
    /// CORRAL_RESULTS_AMQP_URL, when set, as the URL.
    pub fn results_amqp(&self) -> AmqpSettings {
        let mut settings = self.amqp.clone();
        if let Some(url) = &self.results.results_amqp_url {
            settings.url.clone_from(url);
            // Another list of brokers: its own place in it.
            settings.rotation = corral_runtime::amqp::Rotation::default();
        }
        settings
    }

    /// The bytes in hand and the largest message (reads the container's
    /// memory limit when CORRAL_MAX_IN_HAND_BYTES is not set).
    pub fn budget(&self) -> crate::source::budget::Budget {
        crate::source::budget::Budget::new(self.max_in_hand_bytes, &self.messages)
    }

    /// Batch linger.
    pub fn batch_linger(&self) -> Duration {
        Duration::from_millis(self.batch_linger_ms)
    }

    /// Shutdown bound.
    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_millis(self.shutdown_timeout_ms)
    }
}
