//! corral-worker settings: every `CORRAL_*` variable is also a `--flag`,
//! global to every command (the commands themselves: [`crate::commands`]).

use std::time::Duration;

use clap::Args;
use corral_shared::config::{AmqpSettings, BufferKind, BufferSettings, LogSettings, MessageLimits};

/// Settings of the worker.
#[derive(Debug, Clone, Args)]
pub struct WorkerConfig {
    /// PostgreSQL connection URL. The database is created at start if it does not exist.
    #[arg(
        long,
        env = "CORRAL_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/corral",
        hide_env_values = true,
        global = true
    )]
    pub database_url: String,

    /// PEM file of the CA certificate(s) that signed PostgreSQL's certificate, for
    /// `sslmode=require` in the URL (TLS, with certificate and host name verified);
    /// without it the system's roots are used.
    #[arg(long, env = "CORRAL_DATABASE_CA_FILE", global = true)]
    pub database_ca_file: Option<std::path::PathBuf>,

    /// Database connections in the pool.
    #[arg(long, env = "CORRAL_DB_POOL_SIZE", default_value_t = 4,
          value_parser = clap::value_parser!(u32).range(1..=256), global = true)]
    pub db_pool_size: u32,

    /// Batches written at once, each on its own pooled connection (at most
    /// CORRAL_DB_POOL_SIZE); acknowledged in delivery order whatever order they commit in.
    #[arg(long, env = "CORRAL_DB_WRITERS", default_value_t = 2,
          value_parser = clap::value_parser!(u32).range(1..=64), global = true)]
    pub db_writers: u32,

    /// Deadline for each database wait (pool checkout, connect, each statement), in milliseconds.
    #[arg(long, env = "CORRAL_DB_TIMEOUT_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(100..), global = true)]
    pub db_timeout_ms: u64,

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

    /// How often an empty PostgreSQL spool (`spooled_webhooks`, where ingress
    /// keeps webhooks RabbitMQ could not take) is looked at again, in
    /// milliseconds; a non-empty one is drained without pause. Also how often
    /// its depth and oldest age are measured (at least once a second).
    #[arg(long, env = "CORRAL_SPOOL_POLL_MS", default_value_t = 1_000,
          value_parser = clap::value_parser!(u64).range(10..), global = true)]
    pub spool_poll_ms: u64,

    /// Longest pause between retries of a batch the database refused for a
    /// transient reason, in milliseconds (starts at 100 ms, doubles, jittered).
    #[arg(long, env = "CORRAL_DB_RETRY_MAX_MS", default_value_t = 5_000,
          value_parser = clap::value_parser!(u64).range(100..), global = true)]
    pub db_retry_max_ms: u64,

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

    /// How often the worker folds the summary's changes
    /// (`delivery_summary_changes`) into `delivery_summary`, in milliseconds;
    /// one worker at a time does it.
    #[arg(long, env = "CORRAL_SUMMARY_ROLLUP_MS", default_value_t = 5_000,
          value_parser = clap::value_parser!(u64).range(100..=3_600_000), global = true)]
    pub summary_rollup_ms: u64,
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
    /// of the two consumers (the main and the unroutable queue).
    #[error(
        "CORRAL_MAX_IN_HAND_BYTES ({budget}) must hold two of the largest messages ingress may \
         publish ({largest} bytes each: CORRAL_PUBLISH_BATCH_MAX_BYTES, or a body of \
         CORRAL_MAX_BODY_BYTES alone)"
    )]
    InHandBelowMessages {
        /// The budget.
        budget: u64,
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
    Sqs(#[from] corral_shared::sqs::SettingsError),
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
        source: corral_shared::amqp::AmqpError,
    },
}

impl WorkerConfig {
    /// Checks the settings can work together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let budget = self.budget();
        if budget.prefetch(self.prefetch).is_none() {
            return Err(ConfigError::InHandBelowMessages {
                budget: budget.bytes,
                largest: budget.largest,
            });
        }
        if self.buffer.kind == BufferKind::Sqs {
            corral_shared::sqs::check_settings(&self.buffer)?;
        }
        if self.result_events {
            let setting = if self.results_amqp_url.is_some() {
                "CORRAL_RESULTS_AMQP_URL"
            } else {
                "CORRAL_AMQP_URL"
            };
            corral_shared::amqp::check_settings(&self.results_amqp())
                .map_err(|source| ConfigError::ResultsBroker { setting, source })?;
        }
        if self.db_writers > self.db_pool_size {
            return Err(ConfigError::WritersAbovePool {
                writers: self.db_writers,
                pool: self.db_pool_size,
            });
        }
        self.database_url
            .parse::<tokio_postgres::Config>()
            .map_err(|err| {
                let mut reason = err.to_string();
                if let Some(source) = std::error::Error::source(&err) {
                    reason = format!("{reason}: {source}");
                }
                // libpq's verifying modes: what `require` already does here.
                if self.database_url.contains("sslmode=verify-") {
                    reason.push_str(
                        " (use sslmode=require: corral always verifies the server's \
                         certificate and host name)",
                    );
                }
                ConfigError::DatabaseUrl(reason)
            })?;
        Ok(())
    }

    /// The database to connect to: URL, TLS and deadline (reads the CA file).
    pub fn database(&self) -> anyhow::Result<crate::db::Target> {
        crate::db::Target::new(
            &self.database_url,
            self.database_ca_file.as_deref(),
            self.db_timeout(),
        )
    }

    /// The broker result events go to: CORRAL_AMQP_* with
    /// CORRAL_RESULTS_AMQP_URL, when set, as the URL.
    pub fn results_amqp(&self) -> AmqpSettings {
        let mut settings = self.amqp.clone();
        if let Some(url) = &self.results_amqp_url {
            settings.url.clone_from(url);
        }
        settings
    }

    /// The bytes in hand and the largest message (reads the container's
    /// memory limit when CORRAL_MAX_IN_HAND_BYTES is not set).
    pub fn budget(&self) -> crate::source::budget::Budget {
        crate::source::budget::Budget::new(self.max_in_hand_bytes, &self.messages)
    }

    /// Per-wait database deadline.
    pub fn db_timeout(&self) -> Duration {
        Duration::from_millis(self.db_timeout_ms)
    }

    /// Batch linger.
    pub fn batch_linger(&self) -> Duration {
        Duration::from_millis(self.batch_linger_ms)
    }

    /// Summary roll-up interval.
    pub fn summary_rollup(&self) -> Duration {
        Duration::from_millis(self.summary_rollup_ms)
    }

    /// Shutdown bound.
    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_millis(self.shutdown_timeout_ms)
    }
}
